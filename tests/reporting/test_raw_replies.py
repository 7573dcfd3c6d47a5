"""The bytes a gateway sent, when the text the report shows is not exactly them (a reply in
Windows-1252, a byte that is no text): in the JSON report beside that text, base64, so a vendor
gets the reply byte for byte; with every echoed secret removed first, in whatever encoding it
came; and in the evidence bundle, with the names asked for replaced in the bytes as in the text.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from probe.correlation import recipient_for
from probe.masking import REDACTED
from probe.records import escape_bytes
from probe.reporting.bundle import RAW_WITHHELD, redact_raw
from probe.reporting.redact import Redactor
from tests.cli import run_cli
from tests.conftest import with_test_key
from tests.hostile_gateways import CP1252_ADDRESS, CP1252_HOST, cp1252_refusing, serving
from tests.ports import unused_port
from tests.test_json_schemas import assert_valid

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Kennwort-pässlich-7f1c"  # not ASCII: a cp1252 gateway echoes it in cp1252 bytes
LEGACY_FORMS = (PASSWORD.encode("utf-8"), PASSWORD.encode("cp1252"))


def notifyprobe(*args: str) -> subprocess.CompletedProcess[bytes]:
    return run_cli(*args, cwd=ROOT, env=os.environ | {"NP_PW": PASSWORD}, text=False)


def expected_raw(rcpt: str, host: str, ip: str) -> bytes:
    """What cp1252_refusing says to RCPT (after the code), with the password removed."""
    return (
        f"5.7.1 Empfänger <{rcpt}> über {host} [{ip}]:25 abgelehnt, Kennwort {REDACTED} ÿ"
    ).encode("cp1252")


def raw_of(submit: dict[str, Any]) -> bytes:
    return base64.b64decode(submit["raw_b64"], validate=True)


@dataclass(frozen=True)
class RefusedRun:
    db: Path
    report: dict[str, Any]
    burst: subprocess.CompletedProcess[bytes]


@pytest.fixture(scope="module")
def refused_run(tmp_path_factory: pytest.TempPathFactory) -> RefusedRun:
    """Two notifications through cp1252_refusing, logged in with PASSWORD: all refused."""
    db = with_test_key(tmp_path_factory.mktemp("raw") / "l.db")
    with serving(cp1252_refusing(PASSWORD)) as port:
        burst = notifyprobe(
            "burst",
            "--gateway",
            f"127.0.0.1:{port}",
            "--sink",
            f"127.0.0.1:{unused_port()}",
            "--count",
            "2",
            "--step-timeout",
            "2",
            "--timeout",
            "5",
            "--user",
            "ops",
            "--password-env",
            "NP_PW",
            "--db",
            str(db),
            "--json",
            "-",
        )
    assert burst.returncode == 2, burst.stderr.decode()
    return RefusedRun(db, json.loads(burst.stdout), burst)


def bundle_report(run: RefusedRun, name: str, *redact: str) -> tuple[dict[str, Any], Path]:
    out = run.db.with_name(name)
    made = notifyprobe("evidence", "--last", "--db", str(run.db), "--out", str(out), *redact)
    assert made.returncode == 0, made.stderr.decode()
    with zipfile.ZipFile(out) as archive:
        return json.loads(archive.read("report.json")), out


@pytest.mark.real
def test_a_reply_that_is_not_clean_utf8_is_in_the_json_byte_for_byte_beside_its_text(
    refused_run: RefusedRun,
) -> None:
    report = refused_run.report
    assert_valid("run-report", report)
    assert report["verdict"]["pattern"] == "all_refused"
    for n in report["notifications"]:
        submit = n["submit"]
        assert (submit["stage"], submit["code"]) == ("rcpt", 550)
        assert "Empf\\xe4nger" in submit["text"] and REDACTED in submit["text"]
        rcpt = recipient_for(n["token"], report["domain"])
        assert raw_of(submit) == expected_raw(rcpt, CP1252_HOST, CP1252_ADDRESS)
    # a clean reply costs nothing: the sink's answer to the control message has no raw bytes
    assert report["control"]["submit"]["code"] == 250
    assert "raw_b64" not in report["control"]["submit"]


@pytest.mark.real
def test_a_password_echoed_in_cp1252_is_kept_in_no_encoding(refused_run: RefusedRun) -> None:
    shown = refused_run.burst.stdout + refused_run.burst.stderr
    for form in LEGACY_FORMS:
        assert form not in shown and base64.b64encode(form) not in shown
    kept = b"".join(p.read_bytes() for p in refused_run.db.parent.glob("l.db*"))
    for form in LEGACY_FORMS:
        assert form not in kept and escape_bytes(form).encode() not in kept


@pytest.mark.real
def test_the_bundle_keeps_the_raw_bytes_and_a_redacted_one_replaces_the_names_in_them(
    refused_run: RefusedRun,
) -> None:
    plain, _ = bundle_report(refused_run, "plain.zip")
    assert [n["submit"]["raw_b64"] for n in plain["notifications"]] == [
        n["submit"]["raw_b64"] for n in refused_run.report["notifications"]
    ]

    redacted, out = bundle_report(refused_run, "redacted.zip", "--redact", "hosts", "emails", "ips")
    assert_valid("run-report", redacted)
    mapping = json.loads(out.with_name(out.name + ".redaction-map.json").read_text())
    pairs = zip(redacted["notifications"], refused_run.report["notifications"], strict=True)
    for n, original in pairs:
        rcpt = recipient_for(original["token"], refused_run.report["domain"])
        raw = raw_of(n["submit"])
        assert raw == expected_raw(
            mapping["emails"][rcpt.lower()],
            mapping["hosts"][CP1252_HOST],
            mapping["ips"][CP1252_ADDRESS],
        )
        for name in (CP1252_HOST, CP1252_ADDRESS, rcpt):
            assert name.encode() not in raw and name not in n["submit"]["text"]


def test_raw_bytes_a_replaced_name_could_still_be_read_in_are_withheld_with_a_note() -> None:
    """The redactor replaces a name only as a whole word; glued to a letter it stays. The text
    beside it is as it is, but the bytes are not handed on."""
    redactor = Redactor(kinds=["hosts"])
    redactor.add_host(CP1252_HOST)
    glued = f"550 relay {CP1252_HOST}ä denied".encode()
    clean = f"550 relay {CP1252_HOST} d\xe9nied".encode("cp1252")
    report = {
        "control": None,
        "notifications": [
            {"submit": {"raw_b64": base64.b64encode(glued).decode()}},
            {"submit": {"raw_b64": base64.b64encode(clean).decode()}},
        ],
    }
    first, second = (n["submit"] for n in redact_raw(report, redactor)["notifications"])
    assert first == {"raw_withheld": RAW_WITHHELD}
    assert raw_of(second) == b"550 relay host-1 d\xe9nied"
