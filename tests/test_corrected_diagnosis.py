"""A verdict corrected by late mail recomputes its known-issue hints: a first_only run whose mail
arrives late is not an old MPNotifyPerf.dll, in `verdict RUN` (text and JSON) and in the
evidence bundle (report.txt, report.json, report.html). What the original verdict was told stays,
labelled as such. Real processes: a sink that keeps running, a lab gateway whose queue runner
delivers after the settle window, the CLI."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from probe.ledger import Ledger
from tests.test_cli import lab_gateway, probe, service

pytestmark = pytest.mark.real


def signatures(report: dict[str, Any]) -> set[str]:
    """Every known issue a report points to, firm or possible."""
    found = {p["signature"] for p in report["possible_known_issues"]}
    return found | ({report["diagnosis"]["signature"]} if report["diagnosis"] else set())


def wait_for_deliveries(db: Path, run_id: str, count: int, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with Ledger(db) as ledger:
            if ledger.delivery_count(run_id) >= count:
                return
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} deliveries for {run_id}")


def test_a_first_only_run_corrected_to_slow_no_longer_suggests_an_old_dll(tmp_path: Path) -> None:
    db, burst_json, bundle = tmp_path / "l.db", tmp_path / "burst.json", tmp_path / "case.zip"
    with service("sink", "--listen", "127.0.0.1:0", "--db", str(db)) as sink:
        # A queue runner: the first notification at once, the others 2 s later, long after the
        # 0.3 s settle window gave up on them.
        with lab_gateway(sink, "batch:2") as gateway:
            burst = probe(
                "burst",
                "--gateway",
                f"127.0.0.1:{gateway}",
                "--sink",
                f"127.0.0.1:{sink}",
                "--no-sink",
                "--count",
                "4",
                "--settle",
                "0.3",
                "--slow-after",
                "1",
                "--module",
                "MPNotifyPerf.dll",
                "--db",
                str(db),
                "--json",
                str(burst_json),
            )
            assert burst.returncode == 2, burst.stdout + burst.stderr
            said = json.loads(burst_json.read_text())
            assert said["verdict"]["pattern"] == "first_only"
            assert "000" in signatures(said)  # the old DLL, as the symptom suggests
            wait_for_deliveries(db, said["run_id"], 5)  # the control message and all four
    run_id = said["run_id"]

    text = probe("verdict", run_id, "--db", str(db))
    assert text.returncode == 1, text.stdout + text.stderr
    assert "WARNING  slow" in text.stdout and "(first_only → slow)" in text.stdout
    current, _, earlier = text.stdout.partition("  Said with the original verdict")
    assert "[000]" not in current and "MPNotifyPerf" not in current.split("  Diagnosis")[1]
    assert "Diagnosis: none" in current
    assert earlier.startswith(" (first_only), before late mail corrected it to slow:")
    assert "[000]" in earlier  # what was said at the time, labelled

    as_json = probe("verdict", run_id, "--db", str(db), "--json", "-")
    report = json.loads(as_json.stdout)
    assert report["verdict"]["pattern"] == "slow" and report["revision"]["changed"] is True
    assert signatures(report) == set()
    assert report["modules"] == said["modules"]  # the inventory kept, not a new scan
    at_verdict = report["diagnosis_at_verdict"]
    assert at_verdict["verdict"] == "first_only"
    assert signatures(at_verdict) == signatures(said)

    assert probe("evidence", run_id, "--db", str(db), "--out", str(bundle)).returncode == 0
    with zipfile.ZipFile(bundle) as archive:
        files = {n: archive.read(n).decode("utf-8") for n in archive.namelist()}
    assert files["report.txt"] == text.stdout
    in_bundle = json.loads(files["report.json"])
    assert signatures(in_bundle) == set() and in_bundle["diagnosis_at_verdict"] == at_verdict
    page = files["report.html"]
    current_page, _, earlier_page = page.partition('id="diagnosis-at-verdict"')
    assert "[000]" not in current_page and "[000]" in earlier_page.split("</ul>")[0]
