"""A watch target that names its gateway's process (`processes`): a restart of that process
between two runs shows on the target's timeline, where the lab gateway's greeting, the same
after a restart, shows nothing. The lab gateway runs under its own process name, as in
tests/diagnosis/test_restarts_e2e.py, and detached from this process: the probe never takes
its own children for the gateway, and this watch runs inside the test."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from probe.ledger import Ledger
from probe.monitor.config import Target, WatchConfig
from probe.monitor.metrics import Metrics
from probe.monitor.watch import Judged, Watcher
from probe.records import Endpoint
from tests.monitor.test_watch import target
from tests.ports import unused_port
from tests.test_cli import ENV
from tests.waits import until

pytestmark = pytest.mark.real  # real processes and sockets on loopback

# The process name `processes` looks for (at most 15 characters); not test_restarts_e2e's, whose
# gateways may run at the same time in another worker and would look like restarts here.
GATEWAY_NAME = "labgw-watch"


@pytest.fixture
def renamed_python(tmp_path: Path) -> Path:
    """The interpreter under the gateway's name: the kernel names a process after it."""
    link = tmp_path / GATEWAY_NAME
    os.symlink(sys.executable, link)
    return link


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@contextmanager
def detached_gateway(python: Path, port: int, sink_port: int, log: Path) -> Iterator[int]:
    """A first-only lab gateway on `port`, started through a shell that exits at once, so it
    is nobody's child here (as a service is); its pid."""
    argv = [str(python), "-m", "probe", "lab", "gateway", "--listen", f"127.0.0.1:{port}"]
    argv += ["--relay", f"127.0.0.1:{sink_port}", "--mode", "first-only"]
    started = subprocess.run(
        ["sh", "-c", f'"$@" >/dev/null 2>"{log}" & echo $!', "sh", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        # The renamed interpreter is outside the virtual environment: hand it our import path.
        env={**ENV, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
    )
    pid = int(started.stdout)
    try:
        until(lambda: "listening on" in log.read_text(), "the lab gateway listens")
        yield pid
    finally:
        os.kill(pid, signal.SIGTERM)
        until(lambda: gone(pid), "the lab gateway exits")


async def test_a_restart_of_the_named_gateway_process_shows_on_the_next_runs_timeline(
    tmp_path, renamed_python
):
    sink_port, port = unused_port(), unused_port()
    watched = replace(
        target("gw", Endpoint("127.0.0.1", port), burst_interval_s=0.2),
        processes=(GATEWAY_NAME,),
    )

    def start(n: int) -> AbstractContextManager[int]:
        return detached_gateway(renamed_python, port, sink_port, tmp_path / f"gateway-{n}.log")

    running = [start(1)]
    running[0].__enter__()
    seen: list[Judged] = []
    stop = asyncio.Event()
    try:
        with Ledger(tmp_path / "l.db") as ledger:
            cfg = WatchConfig(targets=(watched,), sink=Endpoint("127.0.0.1", sink_port))
            watcher = Watcher(cfg, ledger, Metrics())
            after_run = watcher.after_run

            async def counted(t: Target, judged: Judged) -> None:
                await after_run(t, judged)
                seen.append(judged)
                if len(seen) == 1:  # the gateway restarts between the first two runs
                    running[0].__exit__(None, None, None)
                    running[0] = start(2)
                    running[0].__enter__()
                if len(seen) == 3:
                    stop.set()

            watcher.after_run = counted  # type: ignore[method-assign, assignment]
            await asyncio.wait_for(watcher.run(stop), 60)
    finally:
        running[0].__exit__(None, None, None)
    first, after_restart, without = (j.story for j in seen)
    assert first.restart is None
    assert after_restart.restart is not None
    assert after_restart.restart.how.startswith(f"{GATEWAY_NAME} (pid ")
    assert any("gateway restart seen before this run" in line for line in after_restart.timeline())
    assert without.restart is None
