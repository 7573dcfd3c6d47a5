"""End to end through a real Exim with its stock per-connection limit, as in issue 16.

Exim delivers the first 10 messages of one SMTP connection at once and leaves every later one
for the next queue run (`smtp_accept_queue_per_connection`, default 10). Here Debian's Exim 4.96,
unpacked by .ci/exim-local into build/exim4 (it cannot be installed beside postfix), runs a
private config: its own spool in a temp dir, a daemon on a free loopback port relaying only the
probe domain to a `notifyprobe sink`, a queue runner, every limit left at its default.

The binary wants its compiled-in user "Debian-exim": libnss_wrapper gives it one from a private
passwd file, so nothing on the system changes. Without the unpacked Exim the test skips; set
NOTIFYPROBE_REQUIRE_EXIM=1 to turn that skip into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ports import unused_port
from tests.test_cli import probe, service
from tests.test_session_shape import rejudged

pytestmark = pytest.mark.real

UNPACKED = Path(__file__).resolve().parents[1] / "build" / "exim4"
LIBS = ("libidn.so.12", "libnss_wrapper.so")
QUEUE_RUN_S = 12  # the relay ran one every 20 s; shorter keeps `make test` short
START_TIMEOUT_S = 10.0

CONFIG = """\
exim_path = {root}/exim
keep_environment =
primary_hostname = exim-relay.invalid
spool_directory = {root}/spool
log_file_path = {root}/log/%slog
local_interfaces = 127.0.0.1
tls_advertise_hosts =
domainlist relay_to_domains = probe.invalid
acl_smtp_rcpt = acl_check_rcpt

begin acl
acl_check_rcpt:
  accept domains = +relay_to_domains
  deny message = relay not permitted

begin routers
to_sink:
  driver = manualroute
  domains = +relay_to_domains
  transport = to_sink_smtp
  route_list = * 127.0.0.1
  self = send

begin transports
to_sink_smtp:
  driver = smtp
  port = {sink_port}
  allow_localhost
  hosts_avoid_tls = *

begin retry
* * F,1h,10s
"""


def _skip(reason: str) -> None:
    if os.environ.get("NOTIFYPROBE_REQUIRE_EXIM") == "1":
        pytest.fail(f"NOTIFYPROBE_REQUIRE_EXIM=1 but {reason}")
    pytest.skip(reason)


def _private_exim(
    root: Path, sink_port: int, config_text: str = CONFIG, **values: object
) -> list[str]:
    """Lay out one Exim instance in `root`; returns the command that starts its daemon.

    `config_text` is its configuration (default: relay the probe domain to the sink), formatted
    with root, sink_port and `values`. Every file is copied in, so the daemon's unprivileged
    children need nothing outside it. `exim` is a wrapper that sets the library path and the
    private user table on every re-exec (Exim purges its environment, and re-executes itself
    for deliveries and queue runs).
    """
    libdir = UNPACKED / "usr/lib/x86_64-linux-gnu"
    lib = root / "lib"
    lib.mkdir()
    for name in LIBS:
        shutil.copy(libdir / name, lib / name)
    binary = root / "exim4.bin"
    shutil.copy(UNPACKED / "usr/sbin/exim4", binary)
    binary.chmod(0o755)
    uid, gid = (os.getuid(), os.getgid()) if os.getuid() else (65534, 65534)
    (root / "passwd").write_text(
        Path("/etc/passwd").read_text() + f"Debian-exim:x:{uid}:{gid}::/nonexistent:/bin/false\n"
    )
    (root / "group").write_text(Path("/etc/group").read_text() + f"Debian-exim:x:{gid}:\n")
    wrapper = root / "exim"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"export LD_LIBRARY_PATH={lib} LD_PRELOAD={lib}/libnss_wrapper.so "
        f"NSS_WRAPPER_PASSWD={root}/passwd NSS_WRAPPER_GROUP={root}/group\n"
        f'exec {binary} "$@"\n'
    )
    wrapper.chmod(0o755)
    for folder in ("spool", "log"):
        (root / folder).mkdir()
        os.chown(root / folder, uid, gid)
    config = root / "exim.conf"
    config.write_text(config_text.format(root=root, sink_port=sink_port, **values))
    return [str(wrapper), "-C", str(config), "-bdf", "-oX", str(unused_port()), f"-q{QUEUE_RUN_S}s"]


def _wait_for_listen(port: int, daemon: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and daemon.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    daemon.terminate()
    said = daemon.communicate(timeout=10)[1].strip()
    _skip(f"the private Exim did not listen on {port}: {said or 'no message'}")


@pytest.fixture
def exim_and_sink(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    """(Exim's port, the sink's port, the ledger) with both running."""
    if not (UNPACKED / "usr/sbin/exim4").is_file():
        _skip(f"no unpacked Exim in {UNPACKED} (run .ci/exim-local)")
    if not all((UNPACKED / "usr/lib/x86_64-linux-gnu" / name).is_file() for name in LIBS):
        _skip(f"{', '.join(LIBS)} missing from {UNPACKED} (run .ci/exim-local)")
    db = tmp_path / "ledger.sqlite3"
    with service("sink", "--listen", "127.0.0.1:0", "--db", str(db)) as sink_port:
        root = Path(tempfile.mkdtemp(prefix="notifyprobe-exim-"))
        root.chmod(0o755)  # Exim's children run as its own user
        command = _private_exim(root, sink_port)
        daemon = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        try:
            exim_port = int(command[command.index("-oX") + 1])
            _wait_for_listen(exim_port, daemon)
            yield exim_port, sink_port, db
        finally:
            daemon.terminate()
            daemon.wait(timeout=10)
            if daemon.stderr:
                daemon.stderr.close()
            shutil.rmtree(root, ignore_errors=True)


def _burst(exim: int, sink: int, db: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = probe(
        "burst",
        "--gateway",
        f"127.0.0.1:{exim}",
        "--sink",
        f"127.0.0.1:{sink}",
        "--no-sink",
        "--db",
        str(db),
        "--count",
        "20",
        "--json",
        "-",
        *extra,
    )
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_stock_exim_default_options_are_healthy_and_long_sessions_a_warning_until_queue_run(
    exim_and_sink,
):
    exim, sink, db = exim_and_sink
    code, report = _burst(exim, sink, db)
    assert (code, report["verdict"]["pattern"], report["delivered"]) == (0, "healthy", 20), report
    # A stock queue runner wakes every 15-30 min, long after the settle window; this one wakes
    # every QUEUE_RUN_S, so the window is set below it to judge the run before the queue run.
    code, report = _burst(exim, sink, db, "--per-session", "20", "--settle", "1")
    verdict = report["verdict"]
    assert (code, verdict["pattern"], verdict["k"]) == (1, "queued_per_session", 10), verdict
    assert report["delivered"] == 10
    code, again = rejudged(["verdict", "--last", "--db", str(db)], 20, wait_s=2.5 * QUEUE_RUN_S)
    assert again["run_id"] == report["run_id"]
    assert again["verdict"]["pattern"] in ("healthy", "slow"), again["verdict"]
    assert (again["delivered"], code) in ((20, 0), (20, 1))
