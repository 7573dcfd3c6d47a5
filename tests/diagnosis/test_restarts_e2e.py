"""Document 000's tell-tale across real restarts: each restart of the gateway brings back exactly
one notification, a run without a restart gets none. The lab gateway runs under its own process
name so `burst --process` can follow its restarts like an operator follows the real service."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.ports import unused_port
from tests.test_cli import ENV, probe

pytestmark = pytest.mark.real

GATEWAY_NAME = "labgw-np"  # the process name `--process` looks for (at most 15 characters)


@pytest.fixture
def gateway_python(tmp_path: Path) -> Path:
    """The interpreter under another name: the kernel names a process after what it executed."""
    link = tmp_path / GATEWAY_NAME
    os.symlink(sys.executable, link)
    return link


@contextmanager
def gateway(python: Path, port: int, sink_port: int) -> Iterator[int]:
    """The lab gateway on `port`: a restarted service comes back on the same address."""
    proc = subprocess.Popen(
        [
            str(python),
            "-m",
            "probe",
            "lab",
            "gateway",
            "--listen",
            f"127.0.0.1:{port}",
            "--relay",
            f"127.0.0.1:{sink_port}",
            "--mode",
            "first-only",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        # The renamed interpreter is outside the virtual environment: hand it our import path.
        env={**ENV, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
    )
    assert proc.stderr is not None  # a pipe
    try:
        match = re.search(r"listening on [\d.]+:(\d+)", proc.stderr.readline())
        assert match, "the lab gateway did not start"
        yield int(match.group(1))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def burst(port: int, sink: int, db: Path) -> dict[str, Any]:
    result = probe(
        "burst",
        "--gateway",
        f"127.0.0.1:{port}",
        "--sink",
        f"127.0.0.1:{sink}",
        "--db",
        str(db),
        "--count",
        "4",
        "--settle",
        "0.3",
        "--timeout",
        "1",
        "--process",
        GATEWAY_NAME,
        "--json",
        "-",
    )
    assert result.returncode == 2, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.mark.linux_only
def test_each_gateway_restart_brings_back_exactly_one_notification(gateway_python, tmp_path):
    db, sink, address = tmp_path / "ledger.sqlite3", unused_port(), unused_port()
    with gateway(gateway_python, address, sink) as port:
        first = burst(port, sink, db)
        second = burst(port, sink, db)  # same gateway process: nothing at all
    with gateway(gateway_python, address, sink) as port:  # restarted: one more gets through
        third = burst(port, sink, db)
    # the second run delivered nothing and saw no restart: the same outage, told as first_only
    assert [r["verdict"]["pattern"] for r in (first, second, third)] == ["first_only"] * 3
    outage = second["story"]["outage"]
    assert (outage["since_run"], outage["this_run_pattern"]) == (first["run_id"], "none_delivered")
    assert third["story"]["outage"] is None  # after a restart: a story of its own
    assert third["gateway_processes"] and third["gateway_processes"][0]["name"] == GATEWAY_NAME
    because = " ".join(third["diagnosis"]["because"])
    assert "each of 1 gateway restart(s) brought back exactly one delivery" in because
    assert "1 run(s) without a restart delivered nothing" in because
    assert third["diagnosis"]["signature"] == "000"
