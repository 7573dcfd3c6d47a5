"""End to end through a real MTA: a private Postfix instance is the gateway under test.

The issue asks that the probe work "through real MTAs, which add headers and may rewrite
everything but the envelope". The lab gateway cannot prove that: it is our own code. Here a
throw-away Postfix (its own config, queue and data directories under a temp dir, its own smtpd
port, logging to a file through postlogd) relays the probe domain to the probe's sink, and
`notifyprobe burst` runs against it as a real subprocess, exactly as a user would run it.

The system Postfix is never touched: nothing is read from or written to /etc/postfix and the
system service is never started. Without Postfix or root the tests skip with the reason; set
NOTIFYPROBE_REQUIRE_POSTFIX=1 to turn such a skip into a failure (for CI that installs it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from probe.correlation import recipient_for
from probe.delivery.burst import compose

POSTFIX = Path("/usr/sbin/postfix")
POSTCONF = Path("/usr/sbin/postconf")
DOMAIN = "probe.invalid"
COUNT = 10
FIXED_RECIPIENT = f"notifications@{DOMAIN}"
START_TIMEOUT_S = 15.0  # first start creates the queue tree: about 3 s here
LISTEN_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
LOG_TIMEOUT_S = 5.0
BURST_TIMEOUT_S = 60.0

# Every service the master may need to relay mail and log to a file, none chrooted (the queue
# lives in a temp dir, not in a prepared chroot). smtpd is added per instance on its own port.
MASTER_CF_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _require_or_skip(reason: str) -> None:
    """Skip, unless the environment says Postfix must be there (then a skip would hide a bug)."""
    if os.environ.get("NOTIFYPROBE_REQUIRE_POSTFIX") == "1":
        pytest.fail(f"NOTIFYPROBE_REQUIRE_POSTFIX=1 but {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    """A loopback port nobody listens on now (the kernel picks it, we release it at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostfix:
    """One Postfix instance that lives entirely in `root` and relays DOMAIN to the sink port.

    `postfix -c CONFDIR` makes every Postfix program (and, through MAIL_CONFIG, every daemon the
    master spawns) read this instance's main.cf, so it coexists with any system instance.
    """

    def __init__(
        self,
        root: Path,
        sink_port: int,
        extra: dict[str, str] | None = None,
        tables: dict[str, str] | None = None,
    ):
        self.root = root
        self.conf = root / "conf"
        self.queue = root / "queue"
        self.data = root / "data"
        self.maillog = root / "maillog"
        self.sink_port = sink_port
        self.smtpd_port = _free_port()
        self.extra = extra or {}  # main.cf overrides; "{conf}" stands for the config directory
        self.tables = tables or {}  # lookup table files to write into the config directory

    def main_cf(self) -> dict[str, str]:
        settings = {
            "compatibility_level": "3.6",
            "config_directory": str(self.conf),
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            # A fixed FQDN: a container's short hostname would make Postfix complain.
            "myhostname": "gateway.notifyprobe-lab.invalid",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            # Never deliver locally, relay only the probe domain, only for loopback clients.
            "mydestination": "",
            "relay_domains": DOMAIN,
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "transport_maps": f"inline:{{ {DOMAIN}=smtp:[127.0.0.1]:{self.sink_port} }}",
            # No syslog in a container: postlogd writes this instance's log to a file.
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            # Loopback only, no DNS, and retry fast should the sink not be up yet.
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "in_flow_delay": "0",
        }
        settings.update({key: value.format(conf=self.conf) for key, value in self.extra.items()})
        return settings

    def write_config(self) -> None:
        self.conf.mkdir(parents=True)
        self.queue.mkdir()
        self.data.mkdir()
        shutil.chown(self.data, user="postfix")
        lines = [f"{key} = {value}" for key, value in self.main_cf().items()]
        (self.conf / "main.cf").write_text("\n".join(lines) + "\n", encoding="ascii")
        smtpd = f"127.0.0.1:{self.smtpd_port} inet n - n - - smtpd\n"
        (self.conf / "master.cf").write_text(smtpd + MASTER_CF_SERVICES, encoding="ascii")
        for name, text in self.tables.items():
            (self.conf / name).write_text(text, encoding="ascii")

    def postfix(self, *args: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(POSTFIX), "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def running(self) -> bool:
        return self.postfix("status", timeout=STOP_TIMEOUT_S).returncode == 0

    def start(self) -> None:
        """Start the master and wait (bounded) until smtpd answers with a 220 banner."""
        self.write_config()
        result = self.postfix("start")
        if result.returncode != 0:
            raise RuntimeError(f"postfix start failed: {(result.stderr or result.stdout).strip()}")
        self.wait_for_banner()

    def wait_for_banner(self) -> None:
        deadline = time.monotonic() + LISTEN_TIMEOUT_S
        last = "no attempt"
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.smtpd_port), timeout=1.0) as s:
                    s.settimeout(2.0)
                    banner = s.recv(512).decode("ascii", "replace")
                    if banner.startswith("220"):
                        s.sendall(b"QUIT\r\n")
                        return
                    last = f"unexpected banner {banner.strip()!r}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.05)
        raise RuntimeError(
            f"Postfix smtpd on 127.0.0.1:{self.smtpd_port} not ready after "
            f"{LISTEN_TIMEOUT_S:.0f} s ({last}); maillog:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the master and wait (bounded) for it to be gone; abort if it lingers."""
        if not (self.queue / "pid" / "master.pid").exists():
            return
        self.postfix("stop", timeout=STOP_TIMEOUT_S)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self.running():
            if time.monotonic() > deadline:
                self.postfix("abort", timeout=STOP_TIMEOUT_S)
                break
            time.sleep(0.1)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.maillog.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no maillog)"

    def wait_for_log(self, patterns: list[re.Pattern[str]]) -> str:
        """The maillog once every pattern matches in it (postlogd writes asynchronously)."""
        deadline = time.monotonic() + LOG_TIMEOUT_S
        while True:
            text = self.maillog.read_text(errors="replace") if self.maillog.exists() else ""
            missing = [p.pattern for p in patterns if not p.search(text)]
            if not missing or time.monotonic() > deadline:
                assert not missing, f"not in the Postfix log: {missing}\n{self.log_tail()}"
                return text
            time.sleep(0.1)


def _postfix_unavailable() -> str | None:
    if not POSTFIX.exists() or not POSTCONF.exists():
        return f"Postfix is not installed ({POSTFIX} missing; .ci/system-packages installs it)"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "a private Postfix instance needs root (its master runs as root)"
    import grp  # POSIX only, like the rest of this module's subject
    import pwd

    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError as exc:
        return f"Postfix's postfix user or postdrop group is missing: {exc}"
    return None


def _private_postfix(
    extra: dict[str, str] | None = None, tables: dict[str, str] | None = None
) -> Iterator[PrivatePostfix]:
    reason = _postfix_unavailable()
    if reason is not None:
        _require_or_skip(reason)
    # Not pytest's tmp_path: its parent is mode 0700 and the daemons run as the postfix user,
    # so they could not reach their own queue directory.
    root = Path(tempfile.mkdtemp(prefix="notifyprobe-postfix-"))
    root.chmod(0o755)
    instance = PrivatePostfix(root, sink_port=_free_port(), extra=extra, tables=tables)
    try:
        try:
            instance.start()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            _require_or_skip(f"the private Postfix instance could not start: {exc}")
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def relaying_postfix() -> Iterator[PrivatePostfix]:
    """Postfix that relays the probe domain to the sink unchanged, apart from its headers."""
    yield from _private_postfix()


@pytest.fixture(scope="module")
def rewriting_postfix() -> Iterator[PrivatePostfix]:
    """Postfix that rewrites every probe+<token> recipient to one fixed address."""
    rule = rf"/^probe\+.*@{re.escape(DOMAIN)}$/ {FIXED_RECIPIENT}" + "\n"
    yield from _private_postfix(
        extra={"recipient_canonical_maps": "regexp:{conf}/recipient_canonical"},
        tables={"recipient_canonical": rule},
    )


@pytest.fixture(scope="module")
def rate_delayed_postfix() -> Iterator[PrivatePostfix]:
    """Postfix that spaces deliveries to the sink one second apart, as MTAs that throttle a
    destination do: the first notification arrives at once, the next ones later."""
    yield from _private_postfix(extra={"default_destination_rate_delay": "1s"})


def run_burst(
    postfix: PrivatePostfix, db: Path, count: int = COUNT, *extra: str
) -> tuple[subprocess.CompletedProcess, dict]:
    """`notifyprobe burst` through the instance, as a user runs it (default settle window
    unless `extra` says otherwise); it starts its own sink on the port Postfix relays to."""
    command = [
        sys.executable,
        "-m",
        "probe",
        "burst",
        "--gateway",
        f"127.0.0.1:{postfix.smtpd_port}",
        "--sink",
        f"127.0.0.1:{postfix.sink_port}",
        "--domain",
        DOMAIN,
        "--count",
        str(count),
        "--concurrency",
        "2",
        "--json",
        "-",
        "--db",
        str(db),
        *extra,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=BURST_TIMEOUT_S, check=False
    )
    assert result.stdout.strip(), f"no JSON; stderr:\n{result.stderr}\n{postfix.log_tail()}"
    return result, json.loads(result.stdout)


def _deliveries(db: Path, run_id: str) -> list[dict[str, Any]]:
    """What the sink recorded for the burst (not the control): recipient seen, size."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT seq, rcpts, size FROM deliveries WHERE run_id = ? AND seq > 0 ORDER BY seq",
            (run_id,),
        ).fetchall()
    return [dict(row) for row in rows]


def _assert_healthy(
    result: subprocess.CompletedProcess, report: dict, postfix: PrivatePostfix, count: int = COUNT
) -> None:
    context = f"stderr:\n{result.stderr}\nPostfix log:\n{postfix.log_tail()}"
    assert report["verdict"]["pattern"] == "healthy", f"{report['verdict']}\n{context}"
    assert (report["sent"], report["delivered"]) == (count, count), context
    assert result.returncode == 0, context
    assert all(n["copies"] == 1 for n in report["notifications"])


def test_burst_through_postfix_is_healthy_and_every_notification_crosses_it(
    relaying_postfix: PrivatePostfix, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.sqlite3"
    result, report = run_burst(relaying_postfix, db)

    _assert_healthy(result, report, relaying_postfix)
    assert [n["found_in"] for n in report["notifications"]] == [["envelope"]] * COUNT
    # Each notification left Postfix's queue for the sink: the smtp client logged it as sent.
    sink = rf"relay=127\.0\.0\.1\[127\.0\.0\.1\]:{relaying_postfix.sink_port},"
    relayed_to_sink = [
        re.compile(rf"to=<{re.escape(recipient_for(n['token'], DOMAIN))}>, {sink}.*status=sent")
        for n in report["notifications"]
    ]
    relaying_postfix.wait_for_log(relayed_to_sink)
    # And the sink got more than was submitted: the headers Postfix added (Received: at least).
    date = formatdate(localtime=True)
    for row in _deliveries(db, report["run_id"]):
        token = next(n["token"] for n in report["notifications"] if n["seq"] == row["seq"])
        submitted = len(compose(token, report["run_id"], row["seq"], COUNT, DOMAIN, date))
        assert row["size"] > submitted + len("Received: from"), row


def test_token_survives_in_header_when_postfix_rewrites_the_envelope_recipient(
    rewriting_postfix: PrivatePostfix, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.sqlite3"
    result, report = run_burst(rewriting_postfix, db)

    _assert_healthy(result, report, rewriting_postfix)
    # The sink saw only the fixed recipient, so the token came from the X-Probe-Token header.
    assert {row["rcpts"] for row in _deliveries(db, report["run_id"])} == {FIXED_RECIPIENT}
    assert [n["found_in"] for n in report["notifications"]] == [["header"]] * COUNT
    rewritten = [
        re.compile(
            rf"to=<{re.escape(FIXED_RECIPIENT)}>, "
            rf"orig_to=<{re.escape(recipient_for(n['token'], DOMAIN))}>, .*status=sent"
        )
        for n in report["notifications"]
    ]
    rewriting_postfix.wait_for_log(rewritten)


def test_postfix_spacing_deliveries_a_second_apart_is_not_mistaken_for_first_only(
    rate_delayed_postfix: PrivatePostfix, tmp_path: Path
) -> None:
    # The first notification arrives in milliseconds, the second only after the rate delay:
    # the settle window must outlast that gap, or the run reads as the stale-module signature.
    # The default window does, with no option.
    count = 3
    db = tmp_path / "ledger.sqlite3"
    result, report = run_burst(rate_delayed_postfix, db, count)

    _assert_healthy(result, report, rate_delayed_postfix, count=count)
    latencies = sorted(n["latency_s"] for n in report["notifications"])
    assert latencies[-1] - latencies[0] >= 1.5, f"Postfix did not space deliveries: {latencies}"


@pytest.fixture(scope="module")
def message_rate_limited_postfix() -> Iterator[PrivatePostfix]:
    """Postfix whose anvil allows a client 5 messages a minute: the 6th gets `450 4.7.1 Error:
    too much mail from 127.0.0.1`. Loopback is exempt by default: the exemption is emptied."""
    yield from _private_postfix(
        extra={
            "smtpd_client_message_rate_limit": "5",
            "smtpd_client_event_limit_exceptions": "",
            "anvil_rate_time_unit": "60s",
        }
    )


@pytest.fixture(scope="module")
def connection_rate_limited_postfix() -> Iterator[PrivatePostfix]:
    """Postfix whose anvil allows a client 2 connections a minute: the 3rd session gets `421
    4.7.0 … Error: too many connections from 127.0.0.1`."""
    yield from _private_postfix(
        extra={
            "smtpd_client_connection_rate_limit": "2",
            "smtpd_client_event_limit_exceptions": "",
            "anvil_rate_time_unit": "60s",
        }
    )


def _assert_throttled(result: subprocess.CompletedProcess, report: dict, quoted: str,
                      postfix: PrivatePostfix) -> None:  # fmt: skip
    verdict = report["verdict"]
    context = f"{verdict}\nstderr:\n{result.stderr}\nPostfix log:\n{postfix.log_tail()}"
    assert verdict["pattern"] == "throttled", context
    assert verdict["pattern"] not in ("degraded_after_k", "first_only")
    assert quoted in verdict["summary"], context
    assert result.returncode == 1, context
    assert report["possible_known_issues"] == [] and report["diagnosis"] is None


def test_a_postfix_client_message_rate_limit_is_throttled_quoting_its_reply(
    message_rate_limited_postfix: PrivatePostfix, tmp_path: Path
) -> None:
    result, report = run_burst(message_rate_limited_postfix, tmp_path / "l.db", 10,
                               "--settle", "2")  # fmt: skip
    _assert_throttled(result, report, "450 4.7.1 Error: too much mail from 127.0.0.1",
                      message_rate_limited_postfix)  # fmt: skip
    assert report["verdict"]["throttled"] == 5 and report["delivered"] == 5


def test_a_postfix_client_connection_rate_limit_is_throttled_not_the_bursts_shape(
    connection_rate_limited_postfix: PrivatePostfix, tmp_path: Path
) -> None:
    result, report = run_burst(connection_rate_limited_postfix, tmp_path / "l.db", 20,
                               "--settle", "2")  # fmt: skip
    _assert_throttled(result, report, "Error: too many connections from 127.0.0.1",
                      connection_rate_limited_postfix)  # fmt: skip
    # whole sessions of 5 got through (the harness's own banner check used one connection of
    # the limit), every later one was refused at the greeting
    assert (
        report["delivered"] % 5 == 0 and report["delivered"] + report["verdict"]["throttled"] == 20
    )
