"""tests.cli's forked runs behave as the spawns they replace: each check runs one function of
tests/cli_targets.py both in a real `python -c` process and forked by tests.cli, and compares
what a process can observe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli import PIPE, ROOT, run_cli, start_cli

pytestmark = pytest.mark.real

HERE = "tests.cli_targets"


def spawned(name: str, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    code = f"from {HERE} import {name}; raise SystemExit({name}())"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        **kwargs,
    )


def forked(name: str, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=ROOT, entry=f"{HERE}:{name}", timeout=30, **kwargs)


def test_a_forked_run_sees_what_a_spawned_one_sees(monkeypatch):
    monkeypatch.setenv("CLI_HELPER_UNSET", "in the test process only")
    env = {**os.environ, "CLI_HELPER_VAR": "given"}
    del env["CLI_HELPER_UNSET"]
    real = spawned("report", "a", "b c", input="typed", env=env)
    fork = forked("report", "a", "b c", input="typed", env=env)
    assert (fork.returncode, fork.stderr) == (real.returncode, real.stderr) == (0, "")
    assert json.loads(fork.stdout) == json.loads(real.stdout)
    seen = json.loads(fork.stdout)
    assert (seen["argv"], seen["var"], seen["unset"]) == (["a", "b c"], "given", False)
    assert seen["stdin"] == "typed" and seen["threads"] == 1
    assert not seen["structlog_configured"] and seen["log_handlers"] == 0


def test_env_none_is_the_test_process_environment_and_cwd_is_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("CLI_HELPER_VAR", "inherited")
    seen = json.loads(run_cli(cwd=tmp_path, entry=f"{HERE}:report").stdout)
    assert (seen["var"], seen["cwd"]) == ("inherited", str(tmp_path))
    assert seen["fds"] == ["0", "1", "2", "3"]  # 3: the listing's own


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("returns", ("0",)),
        ("returns", ("2",)),
        ("returns", ("300",)),
        ("exits", ("3",)),
        ("exits", ("a message",)),
        ("crashes", ()),
        ("waits_for_its_thread", ()),
    ],
)
def test_exit_codes_and_outputs_are_a_spawned_ones(name, args):
    real, fork = spawned(name, *args), forked(name, *args)
    assert (fork.returncode, fork.stdout) == (real.returncode, real.stdout)
    if name == "crashes":  # the same traceback, but for the frames that start the process
        assert fork.stderr.startswith("Traceback (most recent call last):\n")
        assert fork.stderr.splitlines()[-1] == real.stderr.splitlines()[-1] == "ValueError: boom"
    else:
        assert fork.stderr == real.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_a_forked_run_as_it_ends_a_spawned_one(sig):
    code = f"from {HERE} import sleeps; raise SystemExit(sleeps())"
    real = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stderr=PIPE, stdout=PIPE, text=True
    )
    fork = start_cli(cwd=ROOT, entry=f"{HERE}:sleeps", stderr=PIPE, stdout=PIPE)
    results = []
    for proc in (real, fork):
        assert proc.stderr is not None and proc.stderr.readline() == "ready\n"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
        assert err is not None
        results.append((proc.returncode, out, err.splitlines()[-1:]))
    assert results[0] == results[1]
    assert results[1][0] == -sig


def test_a_run_past_its_timeout_is_killed(tmp_path: Path):
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as timed_out:
        run_cli(cwd=ROOT, entry=f"{HERE}:sleeps", timeout=1)
    assert time.monotonic() - started < 10
    assert timed_out.value.stderr == "ready\n"  # type: ignore[comparison-overlap]  # text
