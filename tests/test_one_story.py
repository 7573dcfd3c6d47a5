"""One run, one story: `burst`, `verdict RUN` and the bundle's report.txt, report.json and
report.html tell the same sections of the same run (verdict with its evidence and settle window,
modules, diagnosis, possible known issues, upgrade checks kept with the run), because they render
one model. Real processes: a first-only lab gateway, a process holding a stale module, the CLI.
"""

from __future__ import annotations

import html
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from fixtures.hold_module import upgraded_while_loaded
from tests.ports import unused_port
from tests.test_cli import lab_gateway, probe

pytestmark = [pytest.mark.real, pytest.mark.linux_only]
NAME = "MPNotifyPerf.dll"


def bundle_files(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as archive:
        return {n: archive.read(n).decode("utf-8") for n in archive.namelist()}


def assert_html_tells(page: str, report: dict[str, Any]) -> None:
    """Every section of the JSON report, said in the HTML page too."""
    verdict = report["verdict"]
    for anchor in ("verdict", "settle", "diagnosis", "modules", "evidence"):
        assert f'id="{anchor}"' in page, anchor
    assert html.escape(verdict["summary"]) in page
    assert html.escape(report["meaning"]) in page
    for line in verdict["evidence"]:
        assert html.escape(line) in page, line
    if report["diagnosis"]:
        assert html.escape(report["diagnosis"]["title"]) in page
        for step in report["diagnosis"]["remediation"]:
            assert html.escape(step) in page, step
    for possible in report["possible_known_issues"]:
        assert html.escape(possible["line"]) in page
    for hit in report["modules"]["hits"] if report["modules"] else ():
        assert f'<td class="num">{hit["pid"]}</td>' in page
        assert html.escape(hit["mapped_path"]) in page
    for kept in report["upgrade_checks"]:
        assert f'id="{kept["name"]}"' in page
        for check in kept["checks"]:
            assert html.escape(check["reason"]) in page, check


def test_burst_verdict_and_bundle_tell_the_same_first_only_run(tmp_path: Path) -> None:
    db, sink = tmp_path / "l.db", unused_port()
    bundle, burst_json = tmp_path / "case.zip", tmp_path / "burst.json"
    with upgraded_while_loaded(tmp_path / NAME) as dll, lab_gateway(sink, "first-only") as gateway:
        burst = probe(
            "burst",
            "--gateway",
            f"127.0.0.1:{gateway}",
            "--sink",
            f"127.0.0.1:{sink}",
            "--count",
            "4",
            "--settle",
            "0.3",
            "--db",
            str(db),
            "--module",
            NAME,
            "--installed",
            str(dll),
            "--json",
            str(burst_json),
            "--evidence",
            str(bundle),
        )
    assert burst.returncode == 2, burst.stderr
    from_burst = json.loads(burst_json.read_text())
    run_id = from_burst["run_id"]
    verdict_text = probe("verdict", run_id, "--db", str(db))
    verdict_json = probe("verdict", run_id, "--db", str(db), "--json", "-")
    assert verdict_text.returncode == verdict_json.returncode == 2
    files = bundle_files(bundle)

    # text: burst's report is verdict's and report.txt's, which add only what came since
    since = verdict_text.stdout.index("\n\n  Since the verdict (unchanged)")
    assert verdict_text.stdout[:since] == burst.stdout.rstrip("\n")
    assert files["report.txt"] == verdict_text.stdout
    text = burst.stdout
    assert "CRITICAL  first_only" in text and "settle window 0.3 s" in text
    # other processes on this host may map a module of that name too: at least ours is old
    assert re.search(
        r"^  Modules: MPNotifyPerf\.dll loaded in \d+ place\(s\), [1-9]\d* old", text, re.M
    )
    ours = [line for line in text.splitlines() if line.startswith("    · stale: pid ")]
    assert any(str(tmp_path / NAME) in line for line in ours), text
    assert "  Diagnosis [000]" in text and "1. Back up the notification templates." in text

    # JSON: the same fields whichever view wrote them
    from_verdict = json.loads(verdict_json.stdout)
    from_bundle = json.loads(files["report.json"])
    assert from_verdict.pop("revision")["changed"] is False
    assert from_bundle.pop("revision") is not None and from_bundle.pop("host_facts_from") == "run"
    assert from_bundle.pop("runbooks") == {"000": "runbook-000.txt"}  # files beside it
    for judged_again in (from_verdict, from_bundle):  # what the ledger keeps of both verdicts
        assert judged_again.pop("original_verdict")["pattern"] == "first_only"
        assert judged_again.pop("corrected_verdict") is None
    assert from_burst == from_verdict == from_bundle
    assert from_burst["diagnosis"]["signature"] == "000"
    hits = from_burst["modules"]["hits"]
    assert any(h["state"] == "stale" and str(tmp_path) in h["mapped_path"] for h in hits)

    assert_html_tells(files["report.html"], from_burst)


def test_upgrade_checks_kept_with_a_run_are_in_every_view(tmp_path: Path) -> None:
    db, sink = tmp_path / "l.db", unused_port()
    with lab_gateway(sink, "healthy") as gateway:
        postflight = probe(
            "postflight",
            "--profile",
            "exchange-sp4",
            "--root",
            str(tmp_path),
            "--gateway",
            f"127.0.0.1:{gateway}",
            "--sink",
            f"127.0.0.1:{sink}",
            "--count",
            "3",
            "--db",
            str(db),
            "--json",
            "-",
        )
    assert postflight.stdout, postflight.stderr
    checks = json.loads(postflight.stdout)["checks"]
    text = probe("verdict", "--last", "--db", str(db))
    report = json.loads(probe("verdict", "--last", "--db", str(db), "--json", "-").stdout)
    assert (
        probe("evidence", "--last", "--out", str(tmp_path / "c.zip"), "--db", str(db)).returncode
        == 0
    )
    files = bundle_files(tmp_path / "c.zip")

    (kept,) = report["upgrade_checks"]
    assert (kept["name"], kept["profile"]) == ("postflight", "exchange-sp4")
    assert [c["reason"] for c in kept["checks"]] == [c["reason"] for c in checks]
    assert json.loads(files["report.json"])["upgrade_checks"] == report["upgrade_checks"]
    assert f"  Upgrade checks (postflight, profile exchange-sp4): {kept['status']}" in text.stdout
    for check in checks:
        assert f"{check['name']}: {check['reason']}" in text.stdout
    assert files["report.txt"] == text.stdout
    assert_html_tells(files["report.html"], report)
