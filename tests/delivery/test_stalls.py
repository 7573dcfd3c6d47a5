"""Gateways that stop answering, and gateways that refuse, written here (not the lab's code).

A stall is named by the SMTP phase the gateway fell silent in and judged `gateway_stalled`,
never a refusal; the circuit breaker leaves the rest of the burst unattempted, so a hung gateway
is judged in about two step timeouts instead of twenty; 4xx and 5xx refusals are named apart.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from probe.correlation import recipient_for
from probe.delivery.breaker import CircuitBreaker
from probe.delivery.burst import Sender, compose
from probe.delivery.run import ProbeOutcome, ProbeSettings, run_probe
from probe.delivery.settings import BurstSettings
from probe.ledger import SCHEMA, Ledger
from probe.records import Endpoint, ErrorKind, SmtpPhase, SmtpReply, Submission
from probe.verdict import Pattern, Severity
from tests.conftest import TEST_KEY
from tests.known import submitted
from tests.ports import unused_port
from tests.test_cli import burst

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
DOMAIN = "probe.invalid"
_SILENT_VERB = {
    SmtpPhase.EHLO: b"EHLO",
    SmtpPhase.MAIL: b"MAIL",
    SmtpPhase.RCPT: b"RCPT",
    SmtpPhase.DATA: b"DATA",
}
_REPLIES = {
    b"EHLO": b"250-hangs-later\r\n250 OK\r\n",
    b"DATA": b"354 go on\r\n",
    b"QUIT": b"221 bye\r\n",
}


def silent_at(phase: SmtpPhase, went_silent: asyncio.Event | None = None) -> Handler:
    """A raw SMTP server that answers like a plain MTA until `phase`, then says nothing more
    (it keeps the connection open and reads whatever comes, until the client gives up).
    `went_silent` is set once it holds a client at `phase`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if phase is not SmtpPhase.GREETING:
                writer.write(b"220 hangs-later ESMTP\r\n")
                in_data = False
                while line := await reader.readline():
                    if in_data:
                        if line != b".\r\n":
                            continue
                        if phase is SmtpPhase.END_OF_DATA:
                            break  # the whole message is in: never confirm it
                        in_data = False
                        writer.write(b"250 2.0.0 queued\r\n")
                    else:
                        verb = line[:4].upper()
                        if verb == _SILENT_VERB.get(phase):
                            break
                        in_data = verb == b"DATA"
                        writer.write(_REPLIES.get(verb, b"250 OK\r\n"))
                    await writer.drain()
                else:
                    return  # the client left before `phase`
            if went_silent is not None:
                went_silent.set()
            while await reader.read(4096):
                pass
        except ConnectionError:
            pass
        finally:
            writer.close()

    return handle


class Refuses:
    """An aiosmtpd handler that answers every message with one refusal."""

    def __init__(self, reply: str):
        self.reply = reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return self.reply


@asynccontextmanager
async def raw_gateway(handler: Handler) -> AsyncIterator[Endpoint]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield Endpoint("127.0.0.1", server.sockets[0].getsockname()[1])
    finally:
        server.close()


@asynccontextmanager
async def refusing_gateway(reply: str) -> AsyncIterator[Endpoint]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Refuses(reply)), "127.0.0.1", 0)
    try:
        yield Endpoint("127.0.0.1", server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def probe_defaults(db: Path, gateway: Endpoint, **burst: Any) -> ProbeOutcome:
    """A burst of 20 with every other option at its default (step timeout 10 s, breaker 2)."""
    settings = ProbeSettings(
        gateway, Endpoint("127.0.0.1", unused_port()), BurstSettings(count=20, **burst)
    )
    with Ledger(db) as ledger:
        return await run_probe(ledger, settings)


@pytest.mark.real
async def test_hung_and_refusing_gateways_are_told_apart_within_30s_with_default_options(
    tmp_path,
):
    """The issue's cases with default options, run side by side to keep the suite fast. The
    30 s bound is the issue's functional limit (a monitoring check's timeout), not a speed
    figure: without the breaker the hung ones took 20 × 10 s."""
    t0 = time.monotonic()
    async with (
        raw_gateway(silent_at(SmtpPhase.GREETING)) as never_greets,
        raw_gateway(silent_at(SmtpPhase.END_OF_DATA)) as hangs_after_data,
        refusing_gateway("451 4.3.0 Queue full, try again later") as temporary,
        refusing_gateway("550 5.7.1 Notifications not accepted") as permanent,
    ):
        greeting, after_data, two_connections, refused_4xx, refused_5xx = await asyncio.gather(
            probe_defaults(tmp_path / "greeting.db", never_greets),
            probe_defaults(tmp_path / "data.db", hangs_after_data),
            probe_defaults(tmp_path / "two.db", hangs_after_data, concurrency=2),
            probe_defaults(tmp_path / "4xx.db", temporary),
            probe_defaults(tmp_path / "5xx.db", permanent),
        )
    assert time.monotonic() - t0 < 30.0

    for outcome, phase in ((greeting, SmtpPhase.GREETING), (after_data, SmtpPhase.END_OF_DATA)):
        verdict = outcome.verdict
        assert (verdict.pattern, verdict.severity) == (Pattern.GATEWAY_STALLED, Severity.CRITICAL)
        assert f"stopped answering at {phase.label}" in verdict.summary
        assert "refused" not in verdict.summary
        assert (verdict.sent, verdict.not_attempted) == (2, 18)
        attempted = [n.submission for n in outcome.record.burst if n.submission]
        assert [(s.stalled_at, s.error_kind) for s in attempted] == [(phase, ErrorKind.TIMEOUT)] * 2

    # two connections hang at about once: judged after one step timeout, nothing more started
    assert two_connections.verdict.pattern is Pattern.GATEWAY_STALLED
    assert (two_connections.verdict.sent, two_connections.verdict.not_attempted) == (2, 18)

    assert refused_4xx.verdict.pattern is Pattern.ALL_REFUSED
    assert refused_4xx.verdict.summary == (
        "the gateway refused all 20 notifications temporarily "
        "(DATA 451 4.3.0 Queue full, try again later)"
    )
    assert refused_5xx.verdict.pattern is Pattern.ALL_REFUSED
    assert "refused all 20 notifications permanently (DATA 550 5.7.1" in refused_5xx.verdict.summary
    assert refused_4xx.verdict.not_attempted == refused_5xx.verdict.not_attempted == 0


@pytest.mark.real
async def test_not_attempted_notifications_are_kept_in_the_ledger_with_the_reason(tmp_path):
    db = tmp_path / "l.db"
    async with raw_gateway(silent_at(SmtpPhase.RCPT)) as gateway:
        outcome = await probe_defaults(db, gateway, step_timeout_s=0.3)
    with Ledger(db) as ledger:
        record = ledger.load(outcome.record.run.run_id)
    skipped = [n for n in record.burst if n.not_attempted]
    assert [n.seq for n in skipped] == list(range(3, 21))
    assert all(n.submission is None and not n.copies for n in skipped)
    reason = skipped[0].not_attempted
    assert reason is not None and reason.startswith("circuit breaker: seq 1-2 in a row")
    assert "no answer at rcpt" in reason
    assert [submitted(n).stalled_at for n in record.burst[:2]] == [SmtpPhase.RCPT] * 2
    assert outcome.verdict.pattern is Pattern.GATEWAY_STALLED


@pytest.mark.real
async def test_several_connections_stalling_at_once_open_the_breaker_once(tmp_path):
    async with raw_gateway(silent_at(SmtpPhase.GREETING)) as gateway:
        outcome = await probe_defaults(
            tmp_path / "l.db", gateway, concurrency=3, step_timeout_s=0.3
        )
    sent = {n.seq for n in outcome.record.burst if n.attempted}
    # the three were in flight together; the connection freed by the first stall waited for its
    # neighbours' outcomes instead of costing one more step timeout
    assert sent == {1, 2, 3}
    assert all(
        n.submission.stalled_at is SmtpPhase.GREETING for n in outcome.record.burst if n.submission
    )
    assert outcome.verdict.pattern is Pattern.GATEWAY_STALLED
    assert outcome.verdict.not_attempted == 20 - len(sent)


@pytest.mark.parametrize(
    "phase",
    [
        SmtpPhase.GREETING,
        SmtpPhase.EHLO,
        SmtpPhase.MAIL,
        SmtpPhase.RCPT,
        SmtpPhase.DATA,
        SmtpPhase.END_OF_DATA,
    ],
)
@pytest.mark.real
async def test_a_stall_is_named_by_the_phase_the_gateway_fell_silent_in(phase):
    async with raw_gateway(silent_at(phase)) as gateway:
        sender = Sender(gateway, timeout=0.3, per_session=None, helo=None)
        token = TEST_KEY.token("abcdef0123", 1)
        message = compose(token, "abcdef0123", 1, 1, DOMAIN, "Thu, 1 Jan 2026 00:00:00 +0000")
        result = await sender.submit("a@probe.invalid", recipient_for(token, DOMAIN), message)
        await sender.close()
    assert (result.stalled_at, result.error_kind) == (phase, ErrorKind.TIMEOUT)
    assert result.stalled and not result.answered and not result.accepted
    assert result.describe().startswith(f"no answer at {phase.label}")
    assert (
        result.steps[-1].error and result.steps[-1].reply is None
    )  # the silence, in the transcript


@pytest.mark.real
async def test_connection_refused_is_unreachable_and_the_breaker_spares_the_rest(tmp_path):
    outcome = await probe_defaults(tmp_path / "l.db", Endpoint("127.0.0.1", unused_port()))
    verdict = outcome.verdict
    assert verdict.pattern is Pattern.GATEWAY_UNREACHABLE
    assert (verdict.sent, verdict.not_attempted) == (2, 18)
    assert all(n.submission.stalled_at is None for n in outcome.record.burst if n.submission)


def submission(seq: int, *, answered: bool) -> Submission:
    if answered:
        return Submission(float(seq), float(seq), "data", reply=SmtpReply(451, "4.3.0 later"))
    return Submission(
        float(seq), float(seq), "data", error_kind=ErrorKind.TIMEOUT, stalled_at=SmtpPhase.DATA
    )


def test_breaker_counts_neighbours_in_submission_order_whatever_order_outcomes_arrive():
    breaker = CircuitBreaker(2)
    breaker.record(3, submission(3, answered=False))
    breaker.record(1, submission(1, answered=False))
    assert not breaker.open  # 1 and 3 are not neighbours
    breaker.record(2, submission(2, answered=False))
    assert breaker.open and breaker.reason.startswith("circuit breaker: seq 1-3 in a row")


def failed(seq: int, kind: ErrorKind) -> Submission:
    stalled_at = SmtpPhase.DATA if kind is ErrorKind.TIMEOUT else None
    return Submission(float(seq), float(seq), "data", error_kind=kind, stalled_at=stalled_at)


@pytest.mark.parametrize(
    ("kinds", "said"),
    [
        ((ErrorKind.TIMEOUT, ErrorKind.TIMEOUT), "in a row got no SMTP answer (last: no answer"),
        ((ErrorKind.PROTOCOL,) * 2, "in a row got a reply that is not SMTP (last: data protocol"),
        ((ErrorKind.RESET,) * 2, "in a row were hung up on (last: data reset"),
        (
            (ErrorKind.PROTOCOL, ErrorKind.RESET, ErrorKind.TIMEOUT),
            "in a row got no SMTP answer to judge (1 a reply that is not SMTP, 1 hung up on, 1 no "
            "SMTP answer) (last: no answer",
        ),
    ],
    ids=["stalls", "replies-that-are-not-smtp", "hang-ups", "mixed"],
)
def test_the_breaker_says_what_the_notifications_that_opened_it_got(kinds, said):
    breaker = CircuitBreaker(len(kinds))
    for seq, kind in enumerate(kinds, start=1):
        breaker.record(seq, failed(seq, kind))
    assert breaker.reason is not None and said in breaker.reason, breaker.reason


def test_breaker_never_opens_on_refusals_or_when_disabled():
    refusing, disabled = CircuitBreaker(2), CircuitBreaker(0)
    for seq in range(1, 6):
        refusing.record(seq, submission(seq, answered=True))
        disabled.record(seq, submission(seq, answered=False))
    assert not refusing.open and not disabled.open


def test_a_ledger_from_before_stalls_opens_and_gains_the_new_columns(tmp_path):
    db = tmp_path / "old.sqlite3"
    with sqlite3.connect(db) as conn:  # schema 1 as older notifyprobe versions wrote it
        conn.executescript(SCHEMA)
        conn.execute(
            "INSERT INTO runs (run_id, started_at, gateway, domain, count)"
            " VALUES ('0123456789', 1.0, 'gw:25', 'probe.invalid', 1)"
        )
        conn.execute(
            "INSERT INTO notifications (run_id, seq, token, started_at, finished_at,"
            " stage, error, error_kind) VALUES ('0123456789', 1, 't', 1.0, 2.0,"
            " 'data', 'Timed out', 'timeout')"
        )
        conn.execute("PRAGMA user_version=1")
    with Ledger(db) as ledger:
        (old,) = ledger.load("0123456789").burst
        ledger.record_not_attempted("0123456789", 1, "circuit breaker: test")
        assert ledger.load("0123456789").burst[0].not_attempted == "circuit breaker: test"
    assert submitted(old).stalled_at is None and old.not_attempted is None
    with sqlite3.connect(db) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(notifications)")}
    assert {"stalled_at", "not_attempted"} <= columns


@pytest.mark.real
def test_unreachable_gateway_shows_a_possible_issue_line_and_no_remediation(tmp_path):
    db = tmp_path / "l.db"
    down = unused_port()
    text = burst(down, unused_port(), db, "--step-timeout", "1")
    assert text.returncode == 2, text.stderr
    assert "gateway_unreachable" in text.stdout
    assert "what to do:" not in text.stdout and "cause:" not in text.stdout
    assert "Possible known issues" in text.stdout
    (line,) = [ln for ln in text.stdout.splitlines() if "[002]" in ln]
    assert "(low confidence): run `notifyprobe drift" in line
    bundle = tmp_path / "evidence.zip"
    js = burst(down, unused_port(), db, "--json", "-", "--evidence", str(bundle))
    report = json.loads(js.stdout)
    assert report["diagnosis"] is None
    assert [p["signature"] for p in report["possible_known_issues"]] == ["002"]
    import zipfile

    with zipfile.ZipFile(bundle) as archive:
        html = archive.read(next(n for n in archive.namelist() if n.endswith("report.html")))
    page = html.decode()
    assert 'id="possible"' in page and "notifyprobe drift" in page
    assert 'id="remediation"' not in page
