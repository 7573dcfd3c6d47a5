"""The evidence bundle: from a real first-only lab run with a stale module held, to a zip whose
manifest verifies, whose HTML renders in a real headless browser, and which holds no secret and
none of the names it redacted. Also: an old run bundled later, determinism, hostile replies.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.hold_module import upgraded_while_loaded
from probe.diagnosis.gather import Explanation
from probe.diagnosis.rules import Confidence, Diagnosis, RestartFacts
from probe.host.facts import collect_facts
from probe.host.inventory import Inventory
from probe.ledger import Ledger
from probe.records import Notification, ProcessStart, Run, RunRecord, SmtpReply, Step, Submission
from probe.reporting.artifacts import (
    COMMAND_LINE,
    KNOWN,
    LOG,
    RunEvidence,
    RunReport,
    StoredExplanation,
    keep_artifacts,
)
from probe.reporting.bundle import make_bundle
from probe.reporting.html import render
from probe.reporting.redact import secret_forms
from probe.verdict import classify
from tests.cli import run_cli
from tests.conftest import probe_lab
from tests.known import submitted
from tests.ports import unused_port
from tests.test_cli import lab_gateway

ROOT = Path(__file__).resolve().parents[2]
NAME = "MPNotifyPerf.dll"
DOMAIN = "notify.corp-example.net"
SECRET = "Tr0ub4dor&3-s3cr3t"
AUTH_PLAIN = base64.b64encode(f"\0ops\0{SECRET}".encode()).decode()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
linux_only = pytest.mark.linux_only


def notifyprobe(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=ROOT, env=env, timeout=60)


@pytest.fixture
def stale_dll(tmp_path: Path) -> Iterator[Path]:
    """MPNotifyPerf.dll 1.0.0.9 held by a process, then upgraded on disk to 2.0.0.4."""
    with upgraded_while_loaded(tmp_path / NAME) as dll:
        yield dll


def leak_secret_into_ledger(db: Path) -> None:
    """What sos report once did: the password in a log and a command line, plus an AUTH dialogue
    in the transcript. The bundle must remove all of it even when the ledger holds it."""
    with Ledger(db) as ledger:
        run_id = ledger.run_ids(limit=1)[0]
        events = json.loads(ledger.artifacts(run_id)[LOG])
        events.append({"event": "smtp_login", "detail": f"logging in as ops with {SECRET}"})
        ledger.put_artifact(run_id, LOG, json.dumps(events))
        argv = ["burst", f"--smtp-password={SECRET}", f"smtp://ops:{SECRET}@relay.{DOMAIN}"]
        ledger.put_artifact(run_id, COMMAND_LINE, json.dumps(argv))
    auth = [
        {"at": 0.0, "command": f"AUTH PLAIN {AUTH_PLAIN}", "reply": {"code": 235, "text": "ok"}},
        {"at": 0.0, "command": "AUTH LOGIN", "reply": {"code": 334, "text": "VXNlcm5hbWU6"}},
        {"at": 0.0, "command": "b3Bz", "reply": {"code": 334, "text": "UGFzc3dvcmQ6"}},
        {
            "at": 0.0,
            "command": base64.b64encode(SECRET.encode()).decode(),
            "reply": {"code": 235, "text": "2.7.0 Authentication successful"},
        },
    ]
    conn = sqlite3.connect(db)
    with conn:
        (steps,) = conn.execute("SELECT transcript FROM notifications WHERE seq = 1").fetchone()
        steps = json.loads(steps)
        conn.execute(
            "UPDATE notifications SET transcript = ? WHERE seq = 1",
            (json.dumps(steps[:2] + auth + steps[2:]),),
        )
    conn.close()


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def read_bundle(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def appears(original: str, data: bytes) -> bool:
    """As a whole token, case-insensitive: the way the redactor replaces it."""
    pattern = rb"(?<![\w-])" + re.escape(original.encode()) + rb"(?![\w-])"
    return re.search(pattern, data, re.I) is not None


@pytest.mark.real
@linux_only
def test_first_only_run_with_stale_module_gives_a_verified_redacted_bundle(
    stale_dll: Path, tmp_path: Path
) -> None:
    env = os.environ | {"NOTIFYPROBE_SMTP_PASSWORD": SECRET}
    db, out = tmp_path / "ledger.sqlite3", tmp_path / "case" / "evidence.zip"
    sink_port = unused_port()
    auth = ("--auth-user", "ops", "--auth-password-env", "NOTIFYPROBE_SMTP_PASSWORD")
    with lab_gateway(sink_port, "first-only", *auth, env=env) as port:
        burst = notifyprobe(
            "burst",
            "--gateway",
            f"127.0.0.1:{port}",
            "--sink",
            f"127.0.0.1:{sink_port}",
            "--domain",
            DOMAIN,
            "--count",
            "4",
            "--timeout",
            "5",
            "--settle",
            "0.3",
            "--db",
            str(db),
            "--user",
            "ops",
            "--password-env",
            "NOTIFYPROBE_SMTP_PASSWORD",
            "--module",
            NAME,
            "--installed",
            str(stale_dll),
            env=env,
        )
    assert burst.returncode == 2, burst.stderr
    assert SECRET not in burst.stdout + burst.stderr
    with Ledger(db) as ledger:  # the gateway demanded AUTH and the probe logged in for real
        submission = submitted(ledger.load(ledger.run_ids(limit=1)[0]).burst[0])
    assert any(
        s.command.startswith("AUTH") and s.reply and s.reply.code == 235 for s in submission.steps
    )
    leak_secret_into_ledger(db)

    made = notifyprobe(
        "evidence",
        "--last",
        "--db",
        str(db),
        "--out",
        str(out),
        "--redact",
        "hosts",
        "emails",
        "ips",
        env=env,
    )
    assert made.returncode == 0, made.stderr
    files = read_bundle(out)

    # The manifest lists every other file with a SHA-256 and size that verify.
    manifest = json.loads(files["manifest.json"])
    listed = {f["name"]: f for f in manifest["files"]}
    assert set(listed) == set(files) - {"manifest.json"}
    for name, entry in listed.items():
        assert entry["sha256"] == hashlib.sha256(files[name]).hexdigest(), name
        assert entry["size"] == len(files[name]), name
    digest, zip_name = out.with_name("evidence.zip.sha256").read_text().split()
    assert (digest, zip_name) == (hashlib.sha256(out.read_bytes()).hexdigest(), "evidence.zip")
    assert manifest["command_line"][:2] == ["evidence", "--last"]
    for expected in (
        "report.html",
        "report.json",
        "modules.json",
        "host.json",
        "log.jsonl",
        "ledger/deliveries.json",
        "transcripts/seq-0001.txt",
    ):
        assert expected in files

    # The run, verdict and diagnosis are in the report.
    report = json.loads(files["report.json"])
    assert report["verdict"]["pattern"] == "first_only"
    assert (report["settle"]["seconds"], report["settle"]["source"]) == (0.3, "option")
    assert (report["diagnosis"]["signature"], report["diagnosis"]["confidence"]) == ("000", "high")
    assert any(h["state"] == "stale" for h in report["modules"]["hits"])
    first = files["transcripts/seq-0001.txt"].decode()
    assert "client side" in first and "sink side" in first and "HELO host-" in first
    assert "AUTH PLAIN [redacted]" in first and "[redacted AUTH response]" in first
    assert "nothing received" in files["transcripts/seq-0002.txt"].decode()

    # Redaction: no secret in any form, no original name, the mapping beside and not inside.
    mapping_path = out.with_name("evidence.zip.redaction-map.json")
    mapping = json.loads(mapping_path.read_text())
    assert not any("redaction-map" in name for name in files)
    assert DOMAIN in mapping["hosts"] and "lab-gateway" in mapping["hosts"]
    assert any(DOMAIN in address for address in mapping["emails"])
    originals = [*mapping["hosts"], *mapping["emails"], *mapping["ips"]]
    forms = secret_forms(SECRET) | {AUTH_PLAIN, "ops:" + SECRET}
    for name, data in files.items():
        for form in forms:
            assert form.encode() not in data, f"secret form {form!r} in {name}"
        for original in originals:
            assert not appears(original, data), f"{original!r} in {name}"
        assert mapping["note"].encode() not in data
    assert mapping["secrets_removed"] > 0

    # The HTML renders in a real browser: verdict, timeline, diagnosis, no console errors.
    html_text = files["report.html"].decode()
    assert not re.search(
        r"<script|<link|<img|<iframe|url\(|https?://(?!www\.w3\.org/2000/svg)", html_text
    )
    # The window the run used, said in the verdict and drawn on the timeline before the verdict.
    assert "settle window 0.3 s, set by the settle option (--settle)" in html_text
    assert "settle window 0.3 s (option): silence" in html_text and ">verdict</text>" in html_text
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (.ci/system-packages installs it)")
    page = tmp_path / "report.html"
    page.write_bytes(files["report.html"])
    dom = chromium(tmp_path / "profile-dom", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "first_only" in dom.stdout and "<svg" in dom.stdout
    assert "[000]" in dom.stdout and "Back up the notification templates." in dom.stdout
    assert "lost (accepted, never delivered)" in dom.stdout
    assert console_lines(dom.stderr) == []
    shot = tmp_path / "report.png"
    snap = chromium(
        tmp_path / "profile-shot",
        f"--screenshot={shot}",
        "--window-size=1200,1600",
        "--hide-scrollbars",
        page.as_uri(),
    )
    assert snap.returncode == 0, snap.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    assert console_lines(snap.stderr) == []
    print(f"screenshot: {shot}")


@pytest.mark.real
def test_burst_with_evidence_writes_the_bundle_right_after_the_run(tmp_path: Path) -> None:
    out, sink_port = tmp_path / "run.zip", unused_port()
    with lab_gateway(sink_port, "healthy") as port:
        burst = notifyprobe(
            "burst",
            "--gateway",
            f"127.0.0.1:{port}",
            "--sink",
            f"127.0.0.1:{sink_port}",
            "--count",
            "2",
            "--timeout",
            "5",
            "--settle",
            "0.3",
            "--db",
            str(tmp_path / "l.sqlite3"),
            "--evidence",
            str(out),
            "--redact",
            "all",
            "--format",
            "json",
            env=dict(os.environ),
        )
    assert burst.returncode == 0, burst.stderr
    run_id = json.loads(burst.stdout)["run_id"]  # stdout stays clean JSON
    files = read_bundle(out)
    assert json.loads(files["report.json"])["verdict"]["pattern"] == "healthy"
    assert json.loads(files["manifest.json"])["run_id"] == run_id
    assert out.with_name("run.zip.sha256").exists()
    assert out.with_name("run.zip.redaction-map.json").exists()
    assert f"evidence: {out}" in burst.stderr


@pytest.mark.real
def test_postflight_checks_of_a_run_are_in_its_bundle(tmp_path: Path) -> None:
    db, sink_port = tmp_path / "l.sqlite3", unused_port()
    with lab_gateway(sink_port, "healthy") as port:
        post = notifyprobe(
            "postflight",
            "--profile",
            "exchange-sp4",
            "--root",
            str(tmp_path),
            "--gateway",
            f"127.0.0.1:{port}",
            "--sink",
            f"127.0.0.1:{sink_port}",
            "--count",
            "2",
            "--db",
            str(db),
            env=dict(os.environ),
        )
    assert post.returncode in (0, 1, 2), post.stderr
    made = notifyprobe(
        "evidence",
        "--last",
        "--db",
        str(db),
        "--out",
        str(tmp_path / "p.zip"),
        env=dict(os.environ),
    )
    assert made.returncode == 0, made.stderr
    files = read_bundle(tmp_path / "p.zip")
    checks = json.loads(files["postflight.json"])
    assert checks["command"] == "postflight"
    assert any(c["name"] == "burst" and c["status"] == "pass" for c in checks["checks"])
    page = files["report.html"].decode()  # and a person sees them in the report
    assert "Upgrade checks: postflight" in page
    assert '<td class="state-pass">pass</td><td>burst</td>' in page


@pytest.mark.real
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_console_error_detection_works_on_a_page_that_has_one(tmp_path: Path) -> None:
    """The check above would be empty if this chromium logged no console lines at all."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>console.error('boom'); nosuch();</script></body></html>")
    run = chromium(tmp_path / "profile", "--dump-dom", page.as_uri())
    assert any("boom" in line for line in console_lines(run.stderr))


@pytest.mark.real
async def test_bundle_of_an_old_run_is_made_from_the_ledger_alone(
    ledger: Ledger, tmp_path: Path
) -> None:
    old = await probe_lab(ledger, "healthy", count=3)
    old_id = old.record.run.run_id
    inventory = Inventory((NAME,), (), "linux", (), scanned=9, denied=0, vanished=0)
    explanation = Explanation(
        inventory=inventory,
        diagnosis=None,
        restarts=RestartFacts(starts=(ProcessStart("process", "gw", 42, 1.0),)),
    )
    keep_artifacts(
        ledger,
        old_id,
        explanation=explanation,
        log_events=[{"event": "run_started", "run_id": old_id}],
        argv=["burst", "--count", "3"],
        host=collect_facts(),
    )
    await probe_lab(ledger, "first-only", count=3)
    assert ledger.run_ids(limit=1)[0] != old_id

    result = make_bundle(ledger, old_id, tmp_path / "old.zip")
    files = read_bundle(result.path)
    report = json.loads(files["report.json"])
    assert (report["run_id"], report["verdict"]["pattern"]) == (old_id, "healthy")
    assert json.loads(files["modules.json"]) == inventory.to_dict()
    assert json.loads(files["host.json"])["gateway_processes"][0]["pid"] == 42
    assert json.loads(files["manifest.json"])["run_command_line"] == ["burst", "--count", "3"]
    assert json.loads(files["log.jsonl"].splitlines()[0])["run_id"] == old_id
    rows = json.loads(files["ledger/notifications.json"])
    assert {r["run_id"] for r in rows} == {old_id} and len(rows) == 4
    assert result.mapping_path is None and not (tmp_path / "old.zip.redaction-map.json").exists()

    again = read_bundle(make_bundle(ledger, old_id, tmp_path / "again.zip").path)
    assert {n: d for n, d in again.items() if n != "manifest.json"} == {
        n: d for n, d in files.items() if n != "manifest.json"
    }
    with zipfile.ZipFile(result.path) as archive:
        assert len({info.date_time for info in archive.infolist()}) == 1


def hostile_evidence() -> RunEvidence:
    hostile = '<script>alert("x")</script>'
    steps = (Step(1.0, "connect", SmtpReply(220, f"gw {hostile}")),)
    submission = Submission(
        1.0, 1.1, "data", SmtpReply(550, f"5.7.1 {hostile}", "5.7.1"), steps=steps
    )
    run = Run("0123456789", "gw:25", "probe.invalid", 2, 1.0, sink="127.0.0.1:2525")
    rid = run.run_id
    record = RunRecord(
        run, tuple(Notification(rid, seq, f"np-{rid}-{seq}", submission) for seq in (1, 2))
    )
    diagnosis = Diagnosis(
        "000",
        "<b>title</b>",
        "<img src=x onerror=alert(1)>",
        Confidence.LOW,
        (hostile,),
        ("step <i>one</i>",),
        "ref",
        "runbook",
    )
    report = RunReport(record, classify(record), StoredExplanation(diagnosis=diagnosis))
    return RunEvidence(
        report=report,
        rows={},
        log_events=(),
        run_command_line=None,
        host=collect_facts(),
        host_from_run=False,
        other_artifacts=(),
    )


def test_hostile_reply_text_is_escaped_in_the_html() -> None:
    page = render(hostile_evidence(), lambda text: text)
    assert "<script" not in page and "<img" not in page and "<b>title" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "all_refused" in page and "<svg" in page


def test_run_artifacts_are_stored_without_secrets(ledger: Ledger) -> None:
    ledger.create_run(Run("abcdef0123", "gw:25", "probe.invalid", 1, 1.0))
    keep_artifacts(
        ledger,
        "abcdef0123",
        explanation=Explanation(None, None, RestartFacts()),
        log_events=[{"event": "login", "detail": f"with {SECRET}"}],
        argv=["burst", "--password", SECRET, f"smtp://ops:{SECRET}@gw"],
        host=collect_facts(),
        secrets=[SECRET],
    )
    kept = ledger.artifacts("abcdef0123")
    assert set(kept) == set(KNOWN)
    for text in kept.values():
        assert all(form not in text for form in secret_forms(SECRET))
    assert json.loads(kept[COMMAND_LINE])[:3] == ["burst", "--password", "[redacted]"]


def test_a_ledger_from_before_evidence_opens_and_gains_helo_and_artifacts(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE deliveries (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, seq INTEGER NOT"
        " NULL, received_at REAL NOT NULL, found_in TEXT NOT NULL, peer TEXT NOT NULL DEFAULT '',"
        " mail_from TEXT NOT NULL DEFAULT '', rcpts TEXT NOT NULL DEFAULT '', message_id TEXT NOT"
        " NULL DEFAULT '', size INTEGER NOT NULL DEFAULT 0);"
        "INSERT INTO deliveries (run_id, seq, received_at, found_in) VALUES ('r', 1, 1.0, 'body');"
        "PRAGMA user_version=1;"
    )
    conn.close()
    with Ledger(db) as ledger:
        ledger.put_artifact("r", "x", "{}")
        assert ledger.artifacts("r") == {"x": "{}"}
    with Ledger(db):  # and again: the migration runs once
        pass
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT helo FROM deliveries").fetchall() == [("",)]
    conn.close()
