"""A private, throw-away Postfix instance on loopback, for the tests that need a real MTA.

Everything lives under a temp dir: its own main.cf and master.cf, queue and data directories, an
smtpd on a free loopback port, logging to a file through postlogd. Nothing is read from or
written to /etc/postfix and the system service is never started. Without Postfix or root the
tests skip with the reason; NOTIFYPROBE_REQUIRE_POSTFIX=1 turns such a skip into a failure.
Used by tests/test_real_mta.py, tests/test_real_bounces.py and fixtures/make_bounces.py.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import unused_port

POSTFIX = Path("/usr/sbin/postfix")
POSTCONF = Path("/usr/sbin/postconf")
DOMAIN = "probe.invalid"
START_TIMEOUT_S = 15.0  # first start creates the queue tree: about 3 s here
LISTEN_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
LOG_TIMEOUT_S = 5.0

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


def require_or_skip(reason: str) -> None:
    """Skip, unless the environment says Postfix must be there (then a skip would hide a bug)."""
    if os.environ.get("NOTIFYPROBE_REQUIRE_POSTFIX") == "1":
        pytest.fail(f"NOTIFYPROBE_REQUIRE_POSTFIX=1 but {reason}")
    pytest.skip(reason)


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
        self.smtpd_port = unused_port()
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

    def postfix(
        self, *args: str, timeout: float = START_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
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


def postfix_unavailable() -> str | None:
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


def private_postfix(
    extra: dict[str, str] | None = None,
    tables: dict[str, str] | None = None,
    sink_port: int | None = None,
) -> Iterator[PrivatePostfix]:
    """A started instance (skip, or fail under NOTIFYPROBE_REQUIRE_POSTFIX=1, if it cannot
    be), stopped and removed afterwards. `sink_port`: where it relays (default: a free port)."""
    reason = postfix_unavailable()
    if reason is not None:
        require_or_skip(reason)
    # Not pytest's tmp_path: its parent is mode 0700 and the daemons run as the postfix user,
    # so they could not reach their own queue directory.
    root = Path(tempfile.mkdtemp(prefix="notifyprobe-postfix-"))
    root.chmod(0o755)
    port = sink_port if sink_port is not None else unused_port()
    instance = PrivatePostfix(root, sink_port=port, extra=extra, tables=tables)
    try:
        try:
            instance.start()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            require_or_skip(f"the private Postfix instance could not start: {exc}")
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(root, ignore_errors=True)


# A gateway that bounces fast: every retry, queue scan and delay warning as soon as Postfix
# allows (its smallest unit is a second; 0 means "never" for delay_warning_time).
FAST_BOUNCES = {
    "queue_run_delay": "1s",
    "minimal_backoff_time": "1s",
    "maximal_backoff_time": "1s",
    "delay_warning_time": "1s",
    "recipient_delimiter": "+",
}


def bounce_routes(sink_port: int, next_hop_port: int) -> tuple[dict[str, str], dict[str, str]]:
    """(main.cf settings, tables) of a gateway that relays notifications (probe+...@DOMAIN) to
    a next hop and the probe's bounce address (probe-bounce+<anything>@DOMAIN, the run id of
    today's sender or the token of a VERP one) to the probe's sink. With recipient_delimiter,
    Postfix looks up probe-bounce+x@DOMAIN, then probe-bounce@DOMAIN, then DOMAIN."""
    transport = (
        f"probe-bounce@{DOMAIN} smtp:[127.0.0.1]:{sink_port}\n"
        f"{DOMAIN} smtp:[127.0.0.1]:{next_hop_port}\n"
    )
    extra = {**FAST_BOUNCES, "transport_maps": "texthash:{conf}/transport"}
    return extra, {"transport": transport}
