"""The command line as an operator uses it: real processes, real sockets, exit codes, JSON.

Its processes are forked from tests.cli's forkserver (its docstring says why and what stays a
real spawn); `PROBE` is the real `python -m probe` command line."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from probe.ledger import Ledger
from tests.cli import DEVNULL, PIPE, run_cli, start_cli
from tests.ports import unused_port

PROBE = [sys.executable, "-m", "probe"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


@dataclass(frozen=True)
class Listening:
    """A long-running notifyprobe command that said it listens: where, and its process."""

    port: int
    pid: int


@contextmanager
def listening(*args: str, env: Mapping[str, str] = ENV) -> Iterator[Listening]:
    """Start a long-running notifyprobe command; yield once it says it listens; stop it with
    SIGTERM, which it must obey with exit 0."""
    proc = start_cli(*args, stderr=PIPE, stdout=DEVNULL, env=env)
    assert proc.stderr is not None  # a pipe
    try:
        line = proc.stderr.readline()  # the command announces itself once it listens
        match = re.search(r"listening on [\d.]+:(\d+)", line)
        assert match, f"no listening line from {args}: {line!r}"
        yield Listening(int(match.group(1)), proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


@contextmanager
def service(*args: str) -> Iterator[int]:
    """`listening`, for a test that needs only the port."""
    with listening(*args) as started:
        yield started.port


def lab_process(
    sink: int, mode: str, *extra: str, env: Mapping[str, str] = ENV
) -> AbstractContextManager[Listening]:
    """A `notifyprobe lab gateway` process in `mode` relaying to the sink on port `sink`."""
    relay = f"127.0.0.1:{sink}"
    argv = ("lab", "gateway", "--listen", "127.0.0.1:0", "--relay", relay, "--mode", mode)
    return listening(*argv, *extra, env=env)


@contextmanager
def lab_gateway(sink: int, mode: str, *extra: str, env: Mapping[str, str] = ENV) -> Iterator[int]:
    """`lab_process`, for a test that needs only the port it listens on."""
    with lab_process(sink, mode, *extra, env=env) as started:
        yield started.port


def probe(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=timeout, env=ENV)


def burst(gateway: int, sink: int, db: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return probe(
        "burst",
        "--gateway",
        f"127.0.0.1:{gateway}",
        "--sink",
        f"127.0.0.1:{sink}",
        "--db",
        str(db),
        *extra,
    )


@pytest.mark.real
def test_first_only_gateway_exits_critical_with_first_only_json(tmp_path):
    sink = unused_port()
    with lab_gateway(sink, "first-only") as gateway:
        result = burst(
            gateway, sink, tmp_path / "l.db", "--count", "20", "--settle", "1", "--json", "-"
        )
    assert result.returncode == 2, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"]["pattern"] == "first_only"
    assert (report["sent"], report["accepted"], report["delivered"]) == (20, 20, 1)
    assert (report["settle"]["seconds"], report["settle"]["source"]) == (1.0, "option")
    assert report["finished_at"] - report["started_at"] < 3.0  # the window, not the timeout
    first = [n for n in report["notifications"] if n["copies"]]
    assert [n["seq"] for n in first] == [1]
    assert first[0]["submit"]["code"] == 250 and first[0]["latency_s"] > 0


@pytest.mark.real
def test_healthy_gateway_exits_ok_with_every_notification_delivered(tmp_path):
    sink = unused_port()
    with lab_gateway(sink, "healthy") as gateway:
        result = burst(gateway, sink, tmp_path / "l.db", "--count", "20", "--json", "-")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"]["pattern"] == "healthy"
    assert (report["sent"], report["delivered"]) == (20, 20)
    for n in report["notifications"]:
        assert set(n) >= {"seq", "token", "submit", "delivered_at", "latency_s", "copies"}
        assert re.fullmatch(rf"np-{report['run_id']}-{n['seq']}-[a-z2-7]{{8}}", n["token"])


@pytest.mark.real
def test_terminal_summary_names_the_pattern_and_what_to_do(tmp_path):
    sink = unused_port()
    with lab_gateway(sink, "first-only:5xx") as gateway:
        result = burst(gateway, sink, tmp_path / "l.db", "--count", "5")
    assert result.returncode == 2
    assert "CRITICAL  first_only" in result.stdout
    assert "What to do:" in result.stdout
    assert "554 5.3.0" in result.stdout


@pytest.mark.real
def test_standalone_sink_and_burst_without_sink_share_the_ledger(tmp_path):
    db = tmp_path / "shared.db"
    with service("sink", "--listen", "127.0.0.1:0", "--db", str(db), "--domain", "probe.test") as s:
        with lab_gateway(s, "healthy") as gateway:
            result = burst(gateway, s, db, "--no-sink", "--domain", "probe.test", "--json", "-")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"]["pattern"] == "healthy"
    assert report["verdict"]["sink_verified"] is True


@pytest.mark.real
def test_killed_run_is_judged_later_from_the_ledger(tmp_path):
    db = tmp_path / "l.db"
    sink = unused_port()
    with lab_gateway(sink, "first-only") as gateway:
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
            stdout=DEVNULL,
            stderr=DEVNULL,
            env=ENV,
        )
        try:
            assert wait_for_submissions(db, at_least=5, timeout_s=20)
        finally:
            proc.kill()
            proc.wait(timeout=10)
    result = probe("verdict", "--last", "--db", str(db), "--json", "-")
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "running"  # killed: nobody could mark it finished
    assert report["verdict"]["pattern"] == "inconclusive"  # not first_only: judge nothing
    assert re.fullmatch(
        r"cut off after \d+ of 50 notifications; judge nothing from it",
        report["verdict"]["summary"],
    )
    assert any("run cut off" in line for line in report["verdict"]["evidence"])
    again = probe("verdict", report["run_id"], "--db", str(db))
    assert again.returncode == 3 and "inconclusive: cut off after" in again.stdout


def wait_for_submissions(db: Path, at_least: int, timeout_s: float) -> bool:
    """Poll the ledger (bounded) until the burst in another process has sent enough."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    (n,) = conn.execute(
                        "SELECT COUNT(*) FROM notifications WHERE started_at IS NOT NULL"
                    ).fetchone()
                if n >= at_least:
                    return True
            except sqlite3.OperationalError:
                pass
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(
    "args",
    [
        ["burst", "--gateway", "nonsense"],
        ["burst", "--gateway", "127.0.0.1:25", "--count", "abc"],
        ["burst", "--gateway", "127.0.0.1:25", "--count", "100000"],
        ["burst", "--gateway", "127.0.0.1:25", "--domain", "not a domain"],
        ["lab", "gateway", "--mode", "sometimes"],
        ["burst", "--gateway", "127.0.0.1:25", "--module", " "],
        ["demo", "--count", "0"],
        ["burst", "--gateway", "127.0.0.1:25", "--per-session", "0"],
        ["verdict"],
        ["frobnicate"],
        [],
    ],
)
@pytest.mark.real
def test_bad_arguments_give_one_line_and_exit_3(args):
    result = probe(*args)
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("notifyprobe: error:")


@pytest.mark.real
def test_sink_port_in_use_is_unknown_not_a_traceback(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = burst(unused_port(), port, tmp_path / "l.db")
    assert result.returncode == 3
    assert "sink cannot listen on 127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.real
def test_unknown_run_id_is_a_clear_error(tmp_path):
    Ledger(tmp_path / "l.db").close()
    result = probe("verdict", "0000000000", "--db", str(tmp_path / "l.db"))
    assert result.returncode == 3
    assert "no run '0000000000'" in result.stderr


@pytest.mark.real
def test_reading_a_mistyped_ledger_path_creates_nothing(tmp_path):
    missing = tmp_path / "no-such-dir" / "ledger.db"
    for command in (["verdict", "--last"], ["evidence", "--last", "--out", "x.zip"]):
        result = probe(*command, "--db", str(missing))
        assert result.returncode == 3 and "no ledger at" in result.stderr
    assert not missing.parent.exists()


@pytest.mark.real
def test_missing_ca_file_stops_the_burst_before_anything_is_sent(tmp_path):
    db = tmp_path / "l.db"
    result = probe(
        "burst",
        "--gateway",
        "127.0.0.1:1",
        "--tls",
        "starttls",
        "--ca-file",
        str(tmp_path / "nope.pem"),
        "--db",
        str(db),
    )
    assert result.returncode == 3 and "cannot load CA file" in result.stderr
    assert not db.exists()  # no run was started


@pytest.mark.real
def test_unreadable_ledger_is_a_clear_error(tmp_path):
    bad = tmp_path / "ledger.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    result = probe("verdict", "--last", "--db", str(bad))
    assert result.returncode == 3
    assert "cannot open ledger" in result.stderr


@pytest.mark.real
def test_gateway_down_exits_critical_unreachable(tmp_path):
    result = burst(unused_port(), unused_port(), tmp_path / "l.db", "--count", "3", "--json", "-")
    assert result.returncode == 2
    assert json.loads(result.stdout)["verdict"]["pattern"] == "gateway_unreachable"


@pytest.mark.real
def test_log_json_writes_json_lines_to_stderr_only(tmp_path):
    result = burst(
        unused_port(),
        unused_port(),
        tmp_path / "l.db",
        "--count",
        "1",
        "--json",
        "-",
        "--log-json",
        "--log-level",
        "info",
    )
    json.loads(result.stdout)  # stdout stays pure JSON
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert {"run_started", "run_judged"} <= {e["event"] for e in events}


@pytest.mark.real
def test_module_entry_point_reports_its_version():  # `python -m probe` itself: a real spawn
    result = subprocess.run([*PROBE, "--version"], capture_output=True, text=True, env=ENV)
    assert result.returncode == 0 and result.stdout.startswith("notifyprobe ")


@pytest.mark.real
def test_demo_names_first_only_and_the_stale_module_then_healthy(tmp_path):
    result = probe("demo", "--db", str(tmp_path / "demo.db"))
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.split("── 2/2")
    assert "CRITICAL  first_only" in first
    assert "Diagnosis [000]" in first and "confidence high" in first
    assert "loaded 4.3.0.12, installed 5.0.0.41" in first
    assert "OK  healthy" in second and "Diagnosis: none (no known issue matches" in second


def _parser(command: str) -> argparse.ArgumentParser:
    from probe.cli import build_parser

    subparsers = build_parser([command])._subparsers
    assert subparsers is not None
    return subparsers._group_actions[0].choices[command]  # type: ignore[index,no-any-return]


def _options(command: str) -> set[str]:
    return {option for action in _parser(command)._actions for option in action.option_strings}


@pytest.mark.real
def test_burst_help_groups_its_options_and_shows_every_default():
    out = run_cli("burst", "--help", env=ENV, timeout=None)
    assert out.returncode == 0
    headings = re.findall(r"^(\S[^\n]*):$", out.stdout, re.M)
    assert headings == [
        "options",
        "what to send, and where",
        "waiting and judging",
        "submission security (TLS and AUTH)",
        "sink limits and access",
        "output",
        "diagnosis",
        "evidence",
    ]
    burst = _parser("burst")
    exempt = {"-h", "--tls-key", "--password-env", "--password-file", "--reuse", "--no-reuse"}
    undocumented = [
        action.option_strings[-1]
        for action in burst._actions
        if not exempt & set(action.option_strings)
        and action.help != argparse.SUPPRESS  # an older spelling, accepted and not shown
        and "default" not in (action.help or "").lower()
        and "required" not in (action.help or "")
    ]
    assert undocumented == [], "options whose --help shows no default"


def test_postflight_takes_every_burst_option_but_those_its_page_names():
    page = (Path(__file__).parent.parent / "docs" / "postflight.md").read_text()
    not_taken = page[page.index("Not taken") : page.index("\n\n", page.index("Not taken"))]
    named = set(re.findall(r"`(--[a-z-]+)`", not_taken))
    postflight = _options("postflight")
    assert named - postflight == _options("burst") - postflight


def test_the_notification_gap_is_gap_and_its_older_spelling_interval_still_parses(capsys):
    from probe.cli import build_parser, main

    for flag in ("--gap", "--interval"):
        argv = ["burst", "--gateway", "127.0.0.1:25", flag, "0.25"]
        assert build_parser(argv).parse_args(argv).notification_gap == 0.25
    with pytest.raises(SystemExit):
        main(["burst", "--help"])
    shown = capsys.readouterr().out
    assert "--gap SECONDS" in shown and "--interval" not in shown


@pytest.mark.real
@pytest.mark.parametrize(
    "args",
    [
        ("lab", "gateway", "--listen", "127.0.0.1:0", "--relay", "127.0.0.1:9"),
        ("sink", "--listen", "127.0.0.1:0", "--domain", "probe.test", "--db"),
    ],
    ids=["lab-gateway", "sink"],
)
def test_sigterm_the_moment_a_service_says_it_listens_is_a_clean_stop(tmp_path, args):
    """A supervisor may stop a service as soon as it reads the line: the handler is in place by
    then (the line used to come first; about half of these stops were a kill by SIGTERM)."""
    for n in range(5):
        db = (str(tmp_path / f"{n}.db"),) if args[0] == "sink" else ()
        proc = start_cli(*args, *db, stderr=PIPE, stdout=DEVNULL)
        with proc:
            assert proc.stderr is not None
            assert "listening on" in proc.stderr.readline()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
