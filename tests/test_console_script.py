"""Every subcommand family once through the installed console script, `.venv/bin/notifyprobe`, as
a real process: interpreter start, the entry point, and only the imports that subcommand makes.

The rest of the suite runs the CLI forked from a forkserver that imported every subcommand module
up front (tests/cli.py), which would not notice a subcommand that cannot start on its own (an
import it lacks, an error at import time, an entry point that no longer names `main`).
tests/test_docs.py runs the docs' commands through this script too; this file does not depend on
what the pages happen to show.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.cli import ROOT
from tests.monitor.test_watch import write_config
from tests.upgrade.test_drift_and_fix import bin_pair
from tests.upgrade.test_profile_upgrades import NEW, meetingplace_install, pending_reboot

NOTIFYPROBE = Path(sys.executable).with_name("notifyprobe")

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(not NOTIFYPROBE.exists(), reason="needs the installed notifyprobe command"),
]


def notifyprobe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(NOTIFYPROBE), *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


@contextmanager
def service(*args: str) -> Iterator[int]:
    """A long-running command; yields the port its first line says it listens on."""
    proc = subprocess.Popen(
        [str(NOTIFYPROBE), *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    assert proc.stderr is not None  # a pipe
    try:
        line = proc.stderr.readline()
        match = re.search(r"listening on [\d.]+:(\d+)", line)
        assert match, line
        yield int(match.group(1))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_sink_lab_gateway_burst_verdict_runs_and_evidence(tmp_path):
    db = tmp_path / "l.db"
    with service("sink", "--listen", "127.0.0.1:0", "--db", str(db), "--domain", "probe.test") as s:
        relay = f"127.0.0.1:{s}"
        with service("lab", "gateway", "--listen", "127.0.0.1:0", "--relay", relay) as gateway:
            burst = notifyprobe(
                "burst",
                "--gateway",
                f"127.0.0.1:{gateway}",
                "--sink",
                relay,
                "--no-sink",
                "--domain",
                "probe.test",
                "--db",
                str(db),
                "--count",
                "5",
                "--json",
                "-",
            )
    assert burst.returncode == 0, burst.stderr
    report = json.loads(burst.stdout)
    assert report["verdict"]["pattern"] == "healthy" and report["delivered"] == 5
    verdict = notifyprobe("verdict", "--last", "--db", str(db))
    assert verdict.returncode == 0 and "OK  healthy" in verdict.stdout, verdict.stderr
    runs = notifyprobe("runs", "--db", str(db))
    assert runs.returncode == 0 and report["run_id"] in runs.stdout, runs.stderr
    out = tmp_path / "evidence.zip"
    evidence = notifyprobe("evidence", "--last", "--db", str(db), "--out", str(out))
    assert evidence.returncode == 0, evidence.stderr
    assert "manifest.json" in zipfile.ZipFile(out).namelist()


def test_demo(tmp_path):
    demo = notifyprobe("demo", "--db", str(tmp_path / "demo.db"))
    assert demo.returncode == 0, demo.stderr
    assert "CRITICAL  first_only" in demo.stdout and "OK  healthy" in demo.stdout


def test_watch_checks_a_config(tmp_path):
    config = write_config(tmp_path / "watch.toml", 2525, tmp_path / "l.db", {"gw": 2526})
    check = notifyprobe("watch", "--config", str(config), "--check")
    assert check.returncode == 0 and "is valid" in check.stdout, check.stderr


def test_modules_names_no_hit_for_a_module_nobody_loads():
    modules = notifyprobe("modules", "--name", "NoSuchModule.dll", "--json", "-")
    # 1 or 3: a process this user cannot read (a parallel test's, a sandbox's init)
    assert modules.returncode in (0, 1, 3), modules.stderr
    assert json.loads(modules.stdout)["hits"] == []


def test_preflight_and_postflight(tmp_path):
    meetingplace_install(tmp_path)
    pre = notifyprobe("preflight", "--profile", "meetingplace", "--root", str(tmp_path))
    assert pre.returncode in (0, 1, 2), pre.stderr
    assert pre.stdout.startswith("notifyprobe preflight meetingplace: ")
    pending_reboot(tmp_path)
    post = notifyprobe(
        "postflight", "--profile", "meetingplace", "--root", str(tmp_path), "--expect-version", NEW
    )
    assert post.returncode == 2, post.stderr
    assert post.stdout.startswith("notifyprobe postflight meetingplace: FAIL")


def test_drift_and_fix(tmp_path):
    default, relocated = bin_pair(tmp_path)
    drift = notifyprobe("drift", "--default", str(default), "--relocated", str(relocated))
    assert drift.returncode == 2 and "msmi.exe" in drift.stdout, drift.stderr
    fix = notifyprobe(
        "fix", "sync-relocated", "--default", str(default), "--relocated", str(relocated)
    )
    assert fix.returncode == 0 and "dry run" in fix.stdout, fix.stderr
