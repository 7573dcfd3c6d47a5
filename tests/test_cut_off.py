"""A run cut short is not judged on what happened to finish: a real burst process, interrupted
by a real SIGTERM or SIGINT part-way, says `inconclusive` with the count it reached, exits 3,
names its run and the exact command that judges it again; `verdict` and JSON say the same.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
from pathlib import Path

import pytest

from tests.cli import PIPE, start_cli
from tests.ports import unused_port
from tests.test_cli import ENV, lab_gateway, probe, wait_for_submissions

pytestmark = pytest.mark.real


def interrupted_burst(
    tmp_path: Path, sig: signal.Signals, *fmt: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """50 notifications a tenth of a second apart through a healthy gateway, `sig` after 16."""
    db, sink = tmp_path / "l.db", unused_port()
    with lab_gateway(sink, "healthy") as gateway:
        proc = start_cli(
            "burst",
            "--gateway",
            f"127.0.0.1:{gateway}",
            "--sink",
            f"127.0.0.1:{sink}",
            "--db",
            str(db),
            "--count",
            "50",
            "--interval",
            "0.1",
            *fmt,
            stdout=PIPE,
            stderr=PIPE,
            env=ENV,
        )
        try:
            assert wait_for_submissions(db, at_least=16, timeout_s=20)
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), db


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_burst_is_inconclusive_and_says_how_to_judge_it_again(tmp_path, sig):
    result, db = interrupted_burst(tmp_path, sig)
    assert result.returncode == 3, result.stderr
    reached = re.search(
        r"cut off after (\d+) of 50 notifications; judge nothing from it", result.stdout
    )
    assert reached, result.stdout
    assert 16 <= int(reached.group(1)) < 50
    assert "UNKNOWN  inconclusive" in result.stdout
    assert "Traceback" not in result.stderr
    told = re.search(
        rf"interrupted by {sig.name}: run (\w+) is kept as interrupted .*; judge it again with: "
        r"(notifyprobe verdict .*)$",
        result.stderr,
        re.M,
    )
    assert told, result.stderr
    run_id, command = told.groups()
    assert shlex.split(command) == ["notifyprobe", "verdict", run_id, "--db", str(db)]
    again = probe(*shlex.split(command)[1:], "--json", "-")  # run as printed
    assert again.returncode == 3, again.stderr
    report = json.loads(again.stdout)
    assert (report["run_id"], report["status"]) == (run_id, "interrupted")
    assert report["verdict"]["pattern"] == "inconclusive"
    assert report["verdict"]["cause"] == "cut_off"
    assert report["verdict"]["summary"] == reached.group(0)


def test_interrupted_burst_in_json_and_nagios_is_inconclusive_too(tmp_path):
    result, _ = interrupted_burst(tmp_path / "json", signal.SIGTERM, "--json", "-")
    assert result.returncode == 3
    report = json.loads(result.stdout)
    assert report["verdict"]["pattern"] == "inconclusive" and report["status"] == "interrupted"
    assert report["sent"] < 50 and report["verdict"]["summary"].startswith("cut off after")

    result, _ = interrupted_burst(tmp_path / "nagios", signal.SIGINT, "--format", "nagios")
    assert result.returncode == 3
    assert result.stdout.startswith("NOTIFYPROBE UNKNOWN - inconclusive: cut off after ")
    assert len(result.stdout.splitlines()) == 1
