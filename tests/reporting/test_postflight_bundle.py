"""The bundle of a postflight's burst: a failed upgrade through a healthy gateway opens with the
failure in report.txt, report.json and report.html (its title too), carries the module
inventory postflight took and the runbook text itself, counts its files the way its manifest
does, and with `--redact all` holds no AUTH user name."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from fixtures.make_pe import write_dll
from tests.ports import unused_port
from tests.reporting.test_evidence import notifyprobe, read_bundle
from tests.test_cli import lab_gateway

pytestmark = pytest.mark.real  # real processes and sockets on loopback

USER = "svc-notify"
PASSWORD = "Gr33n-Lantern-9"
SHARED = "Latitude/Shared Components/MeetingPlace Notification Gateway"


def test_a_failed_upgrade_through_a_healthy_gateway_opens_every_bundle_view_with_the_failure(
    tmp_path: Path,
) -> None:
    (tmp_path / SHARED).mkdir(parents=True)
    write_dll(tmp_path / SHARED / "MPNotifyPerf.dll", "4.3.0.12")  # the old DLL left behind
    env = dict(os.environ, NP_PW=PASSWORD)
    db, sink_port = tmp_path / "l.sqlite3", unused_port()
    with lab_gateway(
        sink_port, "healthy", "--auth-user", USER, "--auth-password-env", "NP_PW", env=env
    ) as port:
        post = notifyprobe(
            "postflight",
            "--profile",
            "meetingplace",
            "--root",
            str(tmp_path),
            "--expect-version",
            "5.0.0.41",
            "--gateway",
            f"127.0.0.1:{port}",
            "--sink",
            f"127.0.0.1:{sink_port}",
            "--count",
            "2",
            "--user",
            USER,
            "--password-env",
            "NP_PW",
            "--db",
            str(db),
            env=env,
        )
    assert post.returncode == 2, post.stdout + post.stderr
    assert post.stdout.startswith("notifyprobe postflight meetingplace: FAIL")
    out = tmp_path / "case.zip"
    made = notifyprobe(
        "evidence", "--last", "--db", str(db), "--out", str(out), "--redact", "all", env=env
    )
    assert made.returncode == 0, made.stderr
    files = read_bundle(out)

    text = files["report.txt"].decode()
    assert text.startswith("notifyprobe postflight meetingplace: FAIL · delivery pass")
    report = json.loads(files["report.json"])
    assert next(iter(report)) == "overall" and report["overall"]["status"] == "fail"
    assert report["overall"]["parts"]["leftovers"] == "fail"
    page = files["report.html"].decode()
    title = re.search(r"<title>(.*?)</title>", page)
    assert title is not None and "postflight meetingplace: FAIL" in title.group(1)
    assert "healthy" not in title.group(1)
    assert page.index('id="overall"') < page.index('id="verdict"')
    # What to do comes from the failed checks, before the healthy delivery's "nothing to do".
    assert report["overall"]["what_to_do"][0].startswith("FAIL leftover: ")
    assert text.index("What to do (the upgrade checks below)") < text.index("Delivery verdict")
    assert page.index("FAIL leftover: ") < page.index('id="verdict"')

    # The inventory postflight took, in every view.
    assert json.loads(files["modules.json"])["names"] == ["MPNotifyPerf.dll"]
    assert "no module inventory was taken" not in text
    assert "No module inventory was taken" not in page

    # The runbook itself, not a path a vendor cannot open.
    runbook = files["runbook-000.txt"].decode()
    assert "Uninstall" in runbook and "Reboot" in runbook
    assert "Back up the notification templates." in page

    # One count of files everywhere.
    manifest = json.loads(files["manifest.json"])
    assert len(manifest["files"]) == len(files) - 1
    for entry in manifest["files"]:
        assert hashlib.sha256(files[entry["name"]]).hexdigest() == entry["sha256"]
    assert f"the {len(manifest['files'])} files it lists" in made.stderr

    # --redact all: the AUTH user name is gone from every file, the password always.
    for name, data in files.items():
        assert USER.encode() not in data.lower(), name
        assert PASSWORD.encode() not in data, name
    mapping = json.loads(out.with_name("case.zip.redaction-map.json").read_text())
    assert mapping["users"] == {USER: "account-1"}
