"""End to end: a burst through a lab gateway while a helper process holds a stale DLL.

First-only gateway + stale MPNotifyPerf.dll → the 000 signature and its remediation; healthy
gateway → no diagnosis. Everything runs as real processes on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.hold_module import upgraded_while_loaded
from tests.cli import run_cli
from tests.ports import unused_port
from tests.test_cli import lab_gateway, lab_process

pytestmark = [pytest.mark.real, pytest.mark.linux_only]

ROOT = Path(__file__).resolve().parents[2]
NAME = "MPNotifyPerf.dll"


def burst(port: int, sink_port: int, db: Path, *extra: str) -> tuple[int, str]:
    proc = run_cli(
        "burst",
        "--gateway",
        f"127.0.0.1:{port}",
        "--sink",
        f"127.0.0.1:{sink_port}",
        "--count",
        "4",
        "--timeout",
        "5",
        "--settle",
        "0.3",
        "--db",
        str(db),
        *extra,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode in (0, 1, 2), proc.stderr
    return proc.returncode, proc.stdout


@pytest.fixture
def stale_dll(tmp_path: Path) -> Iterator[Path]:
    """MPNotifyPerf.dll 1.x held by a process, then upgraded on disk to 2.x."""
    with upgraded_while_loaded(tmp_path / NAME) as dll:
        yield dll


def test_first_only_gateway_with_stale_module_is_diagnosed_000(
    stale_dll: Path, tmp_path: Path
) -> None:
    sink_port = unused_port()
    with lab_gateway(sink_port, "first-only") as port:
        code, out = burst(
            port,
            sink_port,
            tmp_path / "l.sqlite3",
            "--module",
            NAME,
            "--installed",
            str(stale_dll),
            "--json",
            "-",
        )
    report = json.loads(out)
    assert code == 2
    assert report["verdict"]["pattern"] == "first_only"
    diagnosis = report["diagnosis"]
    assert diagnosis["signature"] == "000"
    assert diagnosis["confidence"] == "high"
    assert any("1.0.0.9" in line and "2.0.0.4" in line for line in diagnosis["because"])
    assert any("sink" in line for line in diagnosis["because"])
    assert any("templates" in step for step in diagnosis["remediation"])
    assert any("Reboot" in step for step in diagnosis["remediation"])
    assert any(h["state"] == "stale" for h in report["modules"]["hits"])


def test_first_only_diagnosis_is_shown_in_the_terminal_report(
    stale_dll: Path, tmp_path: Path
) -> None:
    sink_port = unused_port()
    with lab_gateway(sink_port, "first-only") as port:
        _, out = burst(
            port, sink_port, tmp_path / "l.sqlite3", "--module", NAME, "--installed", str(stale_dll)
        )
    assert "Diagnosis [000]" in out
    assert "confidence high" in out
    assert "what to do:" in out and "1. Back up the notification templates." in out


def test_healthy_gateway_gets_no_diagnosis(stale_dll: Path, tmp_path: Path) -> None:
    sink_port = unused_port()
    with lab_process(sink_port, "healthy") as gateway:
        port, gateway_pid = gateway.port, gateway.pid
        code, out = burst(
            port,
            sink_port,
            tmp_path / "l.sqlite3",
            "--module",
            NAME,
            "--installed",
            str(stale_dll),
            "--process",
            "python*",
            "--json",
            "-",
        )
    report = json.loads(out)
    assert code == 0
    assert report["verdict"]["pattern"] == "healthy"
    assert report["diagnosis"] is None
    assert gateway_pid in {p["pid"] for p in report["gateway_processes"]}


def test_first_only_without_module_inventory_is_only_a_possible_000(tmp_path: Path) -> None:
    sink_port = unused_port()
    with lab_gateway(sink_port, "first-only") as port:
        _, out = burst(port, sink_port, tmp_path / "l.sqlite3", "--json", "-")
    report = json.loads(out)
    assert report["diagnosis"] is None  # no cause, no remediation: no evidence points there
    (possible,) = report["possible_known_issues"]
    assert (possible["signature"], possible["confidence"]) == ("000", "low")
    assert "--module MPNotifyPerf.dll --installed PATH" in possible["to_confirm"]


def test_first_only_of_bounces_from_a_next_hop_offers_no_000_and_says_where_it_was_refused(
    tmp_path: Path,
) -> None:
    """The lab gateway relays the first and returns every later one as a bounce from its next
    hop (550 5.7.1): the gateway lost nothing, so a stale module inside it is not offered."""
    sink_port, kept = unused_port(), tmp_path / "report.json"
    with lab_gateway(sink_port, "first-only:bounce") as port:
        code, out = burst(port, sink_port, tmp_path / "l.sqlite3", "--json", str(kept))
    report = json.loads(kept.read_text(encoding="utf-8"))
    assert code == 2 and report["verdict"]["pattern"] == "first_only"
    assert report["diagnosis"] is None and report["possible_known_issues"] == []
    assert "MPNotifyPerf" not in report["meaning"] + report["what_to_do"]
    refused = report["refused_beyond_gateway"]
    assert (refused["lost"], refused["refused"], refused["all_lost"]) == (3, 3, True)
    assert (refused["status"], refused["remote_mta"]) == ("5.7.1", "next-hop.lab-gateway.invalid")
    assert "[000]" not in out and "MPNotifyPerf" not in out.split("Diagnosis:")[1]
    assert (
        "Refused beyond the gateway: every lost notification (3) was accepted by the gateway and "
        "refused further on, by next-hop.lab-gateway.invalid (5.7.1: smtp; 550 5.7.1" in out
    )


def test_a_stale_module_stays_diagnosed_when_the_losses_were_bounced_and_both_are_said(
    stale_dll: Path, tmp_path: Path
) -> None:
    sink_port = unused_port()
    with lab_gateway(sink_port, "first-only:bounce") as port:
        _, out = burst(
            port,
            sink_port,
            tmp_path / "l.sqlite3",
            "--module",
            NAME,
            "--installed",
            str(stale_dll),
            "--json",
            "-",
        )
    report = json.loads(out)
    assert (report["diagnosis"]["signature"], report["diagnosis"]["confidence"]) == ("000", "high")
    assert any("evidence of its own" in line for line in report["diagnosis"]["because"])
    assert report["refused_beyond_gateway"]["all_lost"] is True
