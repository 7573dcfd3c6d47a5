"""The default probe domain is named when it matters: a run with `probe.invalid` through a gateway
that is not a lab gateway says in its header that the domain routes nowhere, and a verdict of mail
that never came names the domain as the first thing to check, in text, JSON, HTML, the nagios
long output and `verdict RUN`. Through the lab gateway the default domain is routed: nothing said.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from probe.cli import main
from probe.domain import LAB_BANNER, is_lab_run
from probe.records import Notification, Run, RunOptions, RunRecord, SmtpReply, Step, Submission
from probe.reporting.text import UNROUTED_DOMAIN_PATTERNS
from tests.ports import unused_port
from tests.test_cli import lab_gateway

ROUTES_NOWHERE = "the probe domain probe.invalid is the default and routes nowhere"
FIRST_CHECK = "First check the probe domain: probe.invalid is the default and routes nowhere"


class Blackhole:
    """A mail server that accepts every notification and delivers none, as a real gateway's
    relay does with a domain it cannot route (a bounce goes to the probe's sender, not here)."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 2.0.0 Ok: queued"


@contextmanager
def blackhole() -> Iterator[int]:
    port = unused_port()
    controller = Controller(Blackhole(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def burst(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["burst", "--count", "3", "--settle", "0.3", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.real
def test_a_real_gateway_with_the_default_domain_is_told_first(tmp_path, capsys):
    db, sink, bundle = tmp_path / "l.db", unused_port(), tmp_path / "case.zip"
    with blackhole() as gateway:
        where = [
            "--gateway",
            f"127.0.0.1:{gateway}",
            "--sink",
            f"127.0.0.1:{sink}",
            "--db",
            str(db),
        ]
        code, text, _ = burst(capsys, *where, "--evidence", str(bundle))
        assert code == 2
        nagios_code, nagios, _ = burst(capsys, *where, "--format", "nagios")
    # text: the header says it before the verdict, the advice says it first
    header, _, verdict = text.partition("CRITICAL  none_delivered")
    assert f"  WARNING: {ROUTES_NOWHERE}" in header
    assert f"  What to do:    {FIRST_CHECK}" in verdict
    assert "(docs/real-mail-setup.md). Then: Check that the probe domain is routed" in verdict

    assert nagios_code == 2
    status, first, *_ = nagios.splitlines()
    assert status.startswith("NOTIFYPROBE CRITICAL - none_delivered")
    assert first.startswith(f"what to do: {FIRST_CHECK}")

    with zipfile.ZipFile(bundle) as archive:
        page = archive.read("report.html").decode("utf-8")
        kept = json.loads(archive.read("report.json"))
    assert 'id="domain-warning"' in page and ROUTES_NOWHERE in page
    assert f"<b>What to do:</b> {FIRST_CHECK}" in page
    assert kept["domain_warning"].startswith(ROUTES_NOWHERE)

    # verdict RUN on the stored run, in text and JSON
    assert main(["verdict", kept["run_id"], "--db", str(db)]) == 2
    again = capsys.readouterr().out
    assert f"  WARNING: {ROUTES_NOWHERE}" in again and f"  What to do:    {FIRST_CHECK}" in again
    assert main(["verdict", kept["run_id"], "--db", str(db), "--json", "-"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["domain_warning"].startswith(ROUTES_NOWHERE)
    assert report["what_to_do"].startswith(FIRST_CHECK)


@pytest.mark.real
def test_a_gateway_off_loopback_is_told_at_the_start(tmp_path, capsys):
    code, out, err = burst(
        capsys,
        "--gateway",
        "nowhere.invalid:25",
        "--sink",
        f"127.0.0.1:{unused_port()}",
        "--db",
        str(tmp_path / "l.db"),
        "--json",
        "-",
    )
    assert code == 2
    assert (
        err.splitlines()[0] == f"notifyprobe: WARNING: {ROUTES_NOWHERE}: a real gateway's "
        "mail server bounces or drops every notification; give --domain (watch: domain) a "
        "domain routed to the sink (docs/real-mail-setup.md)"
    )
    report = json.loads(out)
    assert report["verdict"]["pattern"] == "gateway_unreachable"
    assert report["domain_warning"].startswith(ROUTES_NOWHERE)
    assert not report["what_to_do"].startswith("First check")  # the name did not resolve


@pytest.mark.real
def test_a_routed_domain_is_not_mentioned(tmp_path, capsys):
    with blackhole() as gateway:
        code, out, err = burst(
            capsys,
            "--gateway",
            f"127.0.0.1:{gateway}",
            "--sink",
            f"127.0.0.1:{unused_port()}",
            "--domain",
            "probe.example.org",
            "--db",
            str(tmp_path / "l.db"),
            "--json",
            "-",
        )
    report = json.loads(out)
    assert code == 2 and report["verdict"]["pattern"] == "none_delivered"
    assert report["domain_warning"] is None and "First check" not in report["what_to_do"]
    assert "routes nowhere" not in err


@pytest.mark.real
def test_the_lab_gateway_routes_the_default_domain(tmp_path, capsys):
    sink = unused_port()
    with lab_gateway(sink, "drop-after-k:0") as gateway:
        code, out, err = burst(
            capsys,
            "--gateway",
            f"127.0.0.1:{gateway}",
            "--sink",
            f"127.0.0.1:{sink}",
            "--db",
            str(tmp_path / "l.db"),
        )
    assert code == 2 and "CRITICAL  none_delivered" in out
    assert "routes nowhere" not in out + err and "First check" not in out


def record(gateway: str, banner: str, lab: bool = False) -> RunRecord:
    greeting = Step(at=1.0, command="connect", reply=SmtpReply(220, banner))
    submission = Submission(1.0, 1.1, "data", SmtpReply(250, "2.0.0 ok"), steps=(greeting,))
    run = Run("abcdef0123", gateway, "probe.invalid", 1, 1.0, options=RunOptions(lab=lab))
    return RunRecord(run, (Notification(run.run_id, 1, "t", submission),))


def test_only_proof_makes_a_lab_run() -> None:
    assert is_lab_run(record("127.0.0.1:2526", LAB_BANNER))
    assert is_lab_run(record("localhost:2526", LAB_BANNER))
    assert is_lab_run(record("gw.example.org:25", "gw ESMTP", lab=True))  # the demo
    assert not is_lab_run(record("127.0.0.1:25", "localhost ESMTP Postfix"))
    assert not is_lab_run(record("gw.example.org:25", LAB_BANNER))  # off loopback: a real one
    assert not is_lab_run(record("192.0.2.7:2526", LAB_BANNER))


def test_the_patterns_told_of_the_domain_are_values_in_one_place() -> None:
    assert {"none_delivered", "all_bounced"} <= UNROUTED_DOMAIN_PATTERNS
