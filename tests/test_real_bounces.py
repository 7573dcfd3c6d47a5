"""Bounces from a real Postfix gateway: a bounce is evidence about a notification, not delivery.

A private Postfix (tests/private_postfix.py) is the gateway under test. Its next hop is a small
scripted SMTP server (tests/next_hop.py) that refuses the notifications with 550 5.7.1, delivers
only the first to the probe's sink, or defers them all with 450 4.7.1. Postfix then does what a
production gateway does: it returns an RFC 3464 report to the envelope sender, which is in the
probe domain (probe-bounce+…@DOMAIN, today's per-run sender and the per-notification VERP one
alike), and its transport table routes that address to the probe's sink. `notifyprobe burst`
runs against it as a real subprocess with default options, as a user runs it.

Each scenario runs one burst (a module fixture). Two kinds of tests read it:

- `test_harness_*`: the gateway really sent one report per notification back to the sink and
  the sink answered 250 (Postfix's own log says so), fast. They hold on any branch.
- the end-to-end ones: what the verdict makes of those reports (exit code, pattern, the status
  a report gave each notification). They need the sink, ledger and verdict to treat a bounce
  as evidence; the JSON field names they read are in the helpers right below.

Skips like tests/test_real_mta.py: NOTIFYPROBE_REQUIRE_POSTFIX=1 turns a skip into a failure.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fixtures.make_bounces import notification, submit
from tests.next_hop import Capture, Mode, NextHop
from tests.ports import unused_port
from tests.private_postfix import (
    DOMAIN,
    PrivatePostfix,
    bounce_routes,
    private_postfix,
)

pytestmark = pytest.mark.real

# --- What the JSON report says about a bounce: the names are the lead's to settle. ---------


def bounce_of(notification: dict[str, Any]) -> tuple[str, str] | None:
    """(action, status) of the delivery report that came back for a notification in the JSON
    report (`--json`), e.g. ("delayed", "4.7.1"); None when it shows none."""
    report = notification.get("bounce")
    if not isinstance(report, dict):
        return None
    return str(report.get("action")), str(report.get("status"))


def lost(report: dict[str, Any]) -> int:
    """How many notifications the verdict counts as lost."""
    verdict = report["verdict"]
    return int(verdict.get("lost_accepted", 0)) + int(verdict.get("lost_refused", 0))


# ---------------------------------------------------------------------------------------------

COUNT = 10
VERDICT_WITHIN_S = 20.0  # the "Done when": a critical verdict within 20 s of wall time
BURST_TIMEOUT_S = 60.0
BOUNCES_WITHIN_S = 5.0  # from the burst's start to the last report logged as sent to the sink
LOG_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Scenario:
    postfix: PrivatePostfix
    hop: NextHop
    result: subprocess.CompletedProcess[str]
    report: dict[str, Any]
    started: float  # time.time() just before the burst
    wall_s: float

    @property
    def context(self) -> str:
        return f"stdout:\n{self.result.stdout}\nstderr:\n{self.result.stderr}\n" + (
            f"Postfix log:\n{self.postfix.log_tail(40)}"
        )


@contextlib.contextmanager
def bouncing_gateway(mode: Mode) -> Iterator[tuple[PrivatePostfix, NextHop]]:
    """Postfix relaying notifications to a next hop in `mode`, bounces to the sink port."""
    with contextlib.ExitStack() as stack:
        sink_port = unused_port()
        hop = stack.enter_context(NextHop(mode, forward_to=("127.0.0.1", sink_port)))
        extra, tables = bounce_routes(sink_port, hop.port)
        gateway = contextlib.contextmanager(private_postfix)
        postfix = stack.enter_context(gateway(extra, tables, sink_port=sink_port))
        yield postfix, hop


def run_burst(postfix: PrivatePostfix, hop: NextHop, tmp: Path) -> Scenario:
    """`notifyprobe burst` through the gateway with default options; its sink listens where
    Postfix sends the bounces (and where the next hop forwards what it accepts)."""
    json_path = tmp / "report.json"
    command = [
        sys.executable,
        "-m",
        "probe",
        "burst",
        "--gateway",
        f"127.0.0.1:{postfix.smtpd_port}",
        "--sink",
        f"127.0.0.1:{postfix.sink_port}",
        "--domain",
        DOMAIN,
        "--count",
        str(COUNT),
        "--db",
        str(tmp / "ledger.sqlite3"),
        "--json",
        str(json_path),
    ]
    started, clock = time.time(), time.monotonic()
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=BURST_TIMEOUT_S, check=False
    )
    wall_s = time.monotonic() - clock
    assert json_path.exists(), f"no JSON report; stderr:\n{result.stderr}\n{postfix.log_tail()}"
    report = json.loads(json_path.read_text())
    return Scenario(postfix, hop, result, report, started, wall_s)


def scenario(mode: Mode, tmp: Path) -> Iterator[Scenario]:
    with bouncing_gateway(mode) as (postfix, hop):
        yield run_burst(postfix, hop, tmp)


@pytest.fixture(scope="module")
def refused(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """The next hop refuses every notification: 550 5.7.1 at RCPT."""
    yield from scenario("refuse", tmp_path_factory.mktemp("refused"))


@pytest.fixture(scope="module")
def first_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """The next hop delivers the first notification to the sink and refuses the rest."""
    yield from scenario("first", tmp_path_factory.mktemp("first_only"))


@pytest.fixture(scope="module")
def deferred(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """The next hop answers 450 4.7.1 to every notification; Postfix warns after 1 s."""
    yield from scenario("tempfail", tmp_path_factory.mktemp("deferred"))


def _count(
    postfix: PrivatePostfix, pattern: re.Pattern[str], expected: int, *, retried: bool = False
) -> list[str]:
    """The Postfix log lines matching `pattern` once there are `expected` (bounded wait); with
    `retried`, at least `expected` (Postfix logs every retry of a deferred message)."""
    deadline = time.monotonic() + LOG_TIMEOUT_S
    while True:
        text = postfix.maillog.read_text(errors="replace") if postfix.maillog.exists() else ""
        lines = [line for line in text.splitlines() if pattern.search(line)]
        if len(lines) >= expected or time.monotonic() > deadline:
            enough = len(lines) >= expected if retried else len(lines) == expected
            assert enough, f"{pattern.pattern}: {len(lines)}\n{postfix.log_tail()}"
            return lines


def _logged_at(line: str) -> float:
    """The time of a maillog line ("Dec  4 17:35:02 ...": local time, whole seconds)."""
    year = time.localtime().tm_year
    return time.mktime(time.strptime(f"{year} {line[:15]}", "%Y %b %d %H:%M:%S"))


def assert_reports_reached_sink(s: Scenario, notice: str, expected: int) -> None:
    """Postfix wrote `expected` reports of kind `notice` and delivered each one to the sink,
    which answered 250, within BOUNCES_WITHIN_S of the burst's start."""
    postfix = s.postfix
    # other tests of the module send through the same gateway: its log is shared, the run's own
    # reports are the ones addressed to its notifications' senders
    notices = re.compile(rf"sender {notice} notification: [0-9A-F]+")
    _count(postfix, notices, expected, retried=True)
    run = re.escape(s.report["run_id"])
    to_sink = re.compile(
        rf"to=<probe-bounce\+np-{run}-[^>]+@{re.escape(DOMAIN)}>, "
        rf"relay=127\.0\.0\.1\[127\.0\.0\.1\]:{postfix.sink_port},.*status=sent \(250 "
    )
    sent = _count(postfix, to_sink, expected)
    last_s = max(_logged_at(line) for line in sent) - int(s.started)  # both in whole seconds
    print(f"{notice}: {expected} report(s) at the sink within {last_s:.0f} s of the burst")
    assert last_s < BOUNCES_WITHIN_S, s.context


def test_harness_every_refused_notification_comes_back_to_the_sink_as_a_failed_report(
    refused: Scenario,
) -> None:
    hop = refused.hop.handler
    # every notification of this run refused (a real MTA may try one again: count recipients,
    # not tries; other tests of this module send through the same gateway)
    ours = [(rcpt, answer) for rcpt, answer in hop.answers if refused.report["run_id"] in rcpt]
    assert len({rcpt for rcpt, _ in ours}) == COUNT, hop.answers
    assert all(" 5.7.1 " in answer for _, answer in ours), hop.answers
    run = re.escape(refused.report["run_id"])
    _count(refused.postfix, re.compile(rf"to=<probe\+np-{run}-.*status=bounced \(host"), COUNT)
    assert_reports_reached_sink(refused, "non-delivery", COUNT)


def test_harness_routes_the_per_notification_verp_sender_to_the_sink_too(
    refused: Scenario,
) -> None:
    # The burst used today's per-run sender; the VERP one names the token, and must route alike.
    sender, rcpt, _ = notification()
    with Capture(port=refused.postfix.sink_port) as sink:
        submit(refused.postfix.smtpd_port)
        deadline = time.monotonic() + LOG_TIMEOUT_S
        while not sink.messages and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [(m.mail_from, m.rcpts) for m in sink.messages] == [("<>", (sender,))], rcpt
    assert b"report-type=delivery-status" in sink.messages[0].content


def test_harness_first_notification_is_delivered_and_the_rest_come_back_as_failed(
    first_only: Scenario,
) -> None:
    hop = first_only.hop.handler
    ours = {rcpt for rcpt, _ in hop.answers if first_only.report["run_id"] in rcpt}
    assert len(ours) == COUNT and len(hop.forwarded) == 1, hop.answers
    accepted = [rcpt for rcpt, reply in hop.answers if reply.startswith("250")]
    assert len(accepted) == 1 and f"-{first_only.report['run_id']}-1-" in accepted[0], hop.answers
    assert_reports_reached_sink(first_only, "non-delivery", COUNT - 1)


def test_harness_every_deferred_notification_comes_back_as_a_delay_report(
    deferred: Scenario,
) -> None:
    hop = deferred.hop.handler
    assert {a for _, a in hop.answers} == {"450 4.7.1 try again later"}, hop.answers
    deferral = re.compile(r"to=<probe\+np-.*status=deferred \(host")
    _count(deferred.postfix, deferral, COUNT, retried=True)
    assert_reports_reached_sink(deferred, "delay", COUNT)


# --- End to end: needs bounces read as evidence (sink, ledger, verdict). ----------------------


def test_refused_by_the_next_hop_is_critical_within_20_s_and_names_the_status(
    refused: Scenario,
) -> None:
    assert refused.result.returncode == 2, refused.context
    assert refused.wall_s < VERDICT_WITHIN_S, f"{refused.wall_s:.1f} s\n{refused.context}"
    assert "5.7.1" in refused.result.stdout, refused.context
    assert refused.report["delivered"] == 0, refused.context
    assert [bounce_of(n) for n in refused.report["notifications"]] == [
        ("failed", "5.7.1")
    ] * COUNT, refused.context


def test_next_hop_delivering_only_the_first_is_first_only(first_only: Scenario) -> None:
    report = first_only.report
    assert report["verdict"]["pattern"] == "first_only", first_only.context
    assert first_only.result.returncode == 2, first_only.context
    assert first_only.wall_s < VERDICT_WITHIN_S, f"{first_only.wall_s:.1f} s"
    assert report["delivered"] == 1, first_only.context
    bounces = [bounce_of(n) for n in report["notifications"]]
    assert bounces == [None] + [("failed", "5.7.1")] * (COUNT - 1), first_only.context


def test_next_hop_refusals_offer_no_stale_module_and_name_the_server_that_refused(
    first_only: Scenario,
) -> None:
    """Postfix relayed every lost notification: its next hop refused them, the gateway did not
    lose them, so the stale-module hint [000] is not offered; the report names the next hop."""
    report = first_only.report
    assert report["possible_known_issues"] == [], first_only.context
    refused = report["refused_beyond_gateway"]
    assert refused is not None and refused["all_lost"], first_only.context
    assert (refused["refused"], refused["status"]) == (COUNT - 1, "5.7.1"), first_only.context
    assert "[000]" not in first_only.result.stdout, first_only.context
    assert "Refused beyond the gateway: every lost notification" in first_only.result.stdout


def test_a_delay_report_is_not_a_loss(deferred: Scenario) -> None:
    report = deferred.report
    assert report["delivered"] == 0, deferred.context
    assert [bounce_of(n) for n in report["notifications"]] == [("delayed", "4.7.1")] * COUNT, (
        deferred.context
    )
    assert lost(report) == 0, deferred.context
    assert deferred.result.returncode != 2, deferred.context
