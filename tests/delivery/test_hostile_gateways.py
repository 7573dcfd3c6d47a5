"""Gateways that speak a dialect the lab never scripted, probed as a user would run the probe.

A working gateway localised in Windows-1252 is healthy. Every hostile one ends within the step
timeouts, in bounded memory, with exit 2 and one verdict line that names the cause; nothing it
sent reaches the terminal raw (no control byte, no byte that is not UTF-8).
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.conftest import with_test_key
from tests.hostile_gateways import (
    Handler,
    closes_during_data,
    control_bytes,
    cp1252_relay,
    endless_continuation,
    garbage_after_starttls,
    greeting_421,
    hangs_up_at_data,
    huge_line,
    resets_at_connect,
    serving,
)
from tests.ports import unused_port

pytestmark = pytest.mark.real

STEP_TIMEOUT_S = 2.0
RUN_TIMEOUT_S = 60.0
RAW = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")
MAX_RSS_MIB = 300


def burst(port: int, sink_port: int, db: Path, *extra: str) -> subprocess.CompletedProcess[bytes]:
    command = [
        sys.executable,
        "-m",
        "probe",
        "burst",
        "--gateway",
        f"127.0.0.1:{port}",
        "--sink",
        f"127.0.0.1:{sink_port}",
        "--count",
        "5",
        "--step-timeout",
        str(STEP_TIMEOUT_S),
        "--timeout",
        "5",
        "--db",
        str(db),
        *extra,
    ]
    return subprocess.run(command, capture_output=True, timeout=RUN_TIMEOUT_S, check=False)


def verdict_line(result: subprocess.CompletedProcess[bytes]) -> str:
    out = result.stdout + result.stderr
    assert not RAW.search(out), f"raw gateway bytes on the terminal: {out!r}"
    text = out.decode("utf-8")  # strict: every byte shown is UTF-8 text
    lines = [
        line.strip()
        for line in text.splitlines()
        if re.match(
            r"\s+(CRITICAL|WARNING|OK|"
            r"UNKNOWN)\s",
            line,
        )
    ]
    assert len(lines) == 1, text
    return lines[0]


def test_a_working_gateway_that_speaks_cp1252_is_healthy(tmp_path: Path) -> None:
    sink_port = unused_port()
    with serving(cp1252_relay(sink_port)) as port:
        result = burst(port, sink_port, with_test_key(tmp_path / "l.db"))
    line = verdict_line(result)
    assert result.returncode == 0 and line.startswith("OK  healthy"), line


@pytest.mark.parametrize(
    ("handler", "extra", "cause"),
    [
        (
            endless_continuation,
            (),
            r"protocol_error\b.* at EHLO with a reply that is not SMTP .*(Response too long|over "
            r"the cap)",
        ),
        (huge_line, (), r"protocol_error\b.* at CONNECT with a reply that is not SMTP"),
        (
            control_bytes,
            (),
            r"all_refused\b.*refused all 5 notifications permanently \(RCPT 554 5\.7\.1 "
            r"\\x1b\[2J\\x00\\x07\\xff not for you\)",
        ),
        (greeting_421, (), r"refused all 5 notifications temporarily \(CONNECT 421 4\.3\.2"),
        (
            closes_during_data,
            (),
            r"gateway_hung_up\b.*hung up on all \d notifications after the final dot, before its "
            r"final reply \(data reset: .*\): it refused none",
        ),
        (
            hangs_up_at_data,
            (),
            r"gateway_hung_up\b.*hung up on all \d notifications at DATA, before its 354 \(data "
            r"reset",
        ),
        (
            resets_at_connect,
            (),
            r"gateway_hung_up\b.*hung up on all \d notifications at connect, before its greeting "
            r"\(connect reset",
        ),
        (garbage_after_starttls, ("--tls", "starttls", "--insecure"), r"\(tls: "),
    ],
    ids=[
        "endless-continuation",
        "huge-line",
        "control-bytes",
        "421-greeting",
        "closed-during-data",
        "hangs-up-at-data",
        "resets-at-connect",
        "garbage-after-starttls",
    ],
)
def test_a_hostile_gateway_ends_critical_in_one_line_naming_the_cause(
    tmp_path: Path, handler: Handler, extra: tuple[str, ...], cause: str
) -> None:
    with serving(handler) as port:
        result = burst(port, unused_port(), with_test_key(tmp_path / "l.db"), *extra)
    line = verdict_line(result)
    assert result.returncode == 2, line
    assert line.startswith("CRITICAL") and re.search(cause, line), line
    # the burst process (a child of this one) stayed in bounded memory: KiB on Linux
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < MAX_RSS_MIB * 1024
    assert "inconclusive" not in line and "internal error" not in result.stderr.decode()


def test_a_reply_over_the_cap_is_named_a_protocol_error_in_the_json(tmp_path: Path) -> None:
    with serving(endless_continuation) as port:
        result = burst(port, unused_port(), with_test_key(tmp_path / "l.db"), "--json", "-")
    assert result.returncode == 2
    assert b'"pattern": "protocol_error"' in result.stdout
    assert b'"cause": "protocol"' in result.stdout
    assert b'"kind": "protocol"' in result.stdout
    evidence = json.loads(result.stdout)["verdict"]["evidence"]
    assert any("in a row got a reply that is not SMTP (last: ehlo protocol" in e for e in evidence)
    assert not any("got no SMTP answer" in e for e in evidence)


@pytest.mark.parametrize("handler", [closes_during_data, hangs_up_at_data, resets_at_connect])
def test_a_hang_up_is_named_in_the_json_never_a_refusal_nor_unreachable(
    tmp_path: Path, handler: Handler
) -> None:
    with serving(handler) as port:
        result = burst(port, unused_port(), with_test_key(tmp_path / "l.db"), "--json", "-")
    assert result.returncode == 2
    verdict = json.loads(result.stdout)["verdict"]
    assert (verdict["pattern"], verdict["severity"], verdict["cause"]) == (
        "gateway_hung_up",
        "critical",
        "reset",
    )
    assert b'"kind": "reset"' in result.stdout
    assert any(
        "circuit breaker: seq 1-2 in a row were hung up on (" in e for e in verdict["evidence"]
    )
    assert "refused" not in verdict["summary"].replace("refused none", "")


def test_a_hang_up_reads_the_same_in_the_nagios_line_and_the_html_report(tmp_path: Path) -> None:
    db = with_test_key(tmp_path / "l.db")
    with serving(hangs_up_at_data) as port:
        result = burst(port, unused_port(), db, "--format", "nagios", "--json", str(tmp_path / "r"))
    assert result.returncode == 2
    line = result.stdout.decode().splitlines()[0]
    assert line.startswith(
        "NOTIFYPROBE CRITICAL - gateway_hung_up: the gateway hung up on all 2 notifications at "
        "DATA, before its 354 (data reset: "
    ), line
    run_id = json.loads((tmp_path / "r").read_text())["run_id"]
    out = tmp_path / "case.zip"
    bundled = run_cli("evidence", run_id, "--db", str(db), "--out", str(out))
    assert bundled.returncode == 0, bundled.stderr
    with zipfile.ZipFile(out) as archive:
        page = archive.read("report.html").decode()
    assert '<span class="pattern">gateway_hung_up</span>' in page
    assert "hung up on all 2 notifications at DATA, before its 354" in page
    assert "docs/patterns.md#gateway_hung_up" in page
