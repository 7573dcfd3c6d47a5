"""docs/watch.md and the systemd unit say what `watch` does: their commands and keys hold."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from probe.monitor.config import _TOP_KEYS, DEFAULT_STOP_DRAIN_S
from tests.cli import run_cli
from tests.test_cli import ENV, probe

ROOT = Path(__file__).resolve().parents[2]
WATCH_MD = (ROOT / "docs" / "watch.md").read_text()
UNIT = (ROOT / "docs" / "examples" / "notifyprobe-watch.service").read_text()
EXAMPLE = ROOT / "docs" / "examples" / "watch.toml"
STOP_MARGIN_S = 3.0  # a stop takes the drain plus at most this


def test_every_top_level_key_is_in_the_reference_table():
    documented = set(re.findall(r"^\| `(\w+)` \|", WATCH_MD, re.MULTILINE))
    tables = {"limits", "defaults", "on_change", "target"}
    assert _TOP_KEYS - tables <= documented


@pytest.mark.real
def test_the_units_commands_run_as_written_with_the_example_config():
    for key in ("ExecStartPre", "ExecStart"):
        (line,) = re.findall(rf"^{key}=(.+)$", UNIT, re.MULTILINE)
        argv = shlex.split(line)
        assert argv[0].endswith("/notifyprobe") and argv[1] == "watch"
        args = [str(EXAMPLE) if a == "/etc/notifyprobe/watch.toml" else a for a in argv[1:]]
        if "--check" not in args:  # ExecStart: the same command line, validated only
            args.append("--check")
        secrets = {"NOTIFYPROBE_LYON_PASSWORD": "from-the-environment-file"}  # EnvironmentFile=
        result = run_cli(*args, timeout=60, env={**ENV, **secrets})
        assert result.returncode == 0, result.stderr
        assert "is valid" in result.stdout


def test_the_unit_gives_a_stop_the_drain_and_its_margin():
    (timeout,) = re.findall(r"^TimeoutStopSec=(\d+)$", UNIT, re.MULTILINE)
    assert int(timeout) >= DEFAULT_STOP_DRAIN_S + STOP_MARGIN_S
    assert "stop_drain" in UNIT


@pytest.mark.real
def test_the_usage_line_and_the_log_level_default_match_watch_help():
    help_text = " ".join(probe("watch", "--help").stdout.split())
    usage = WATCH_MD.split("```", 2)[1]
    for option in re.findall(r"--[a-z-]+", usage):
        assert option in help_text, option
    assert '| `log_level` | `"info"` |' in WATCH_MD
    assert "log threshold (default: info" in help_text
