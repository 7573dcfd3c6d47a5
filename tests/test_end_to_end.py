"""Every verdict pattern, end to end: real sockets through the lab gateway to the probe's sink."""

from __future__ import annotations

import random

import pytest

from probe.delivery.settle import Patience
from probe.lab.gateway import Action, FaultMode, decide
from probe.records import SmtpPhase
from probe.verdict import Pattern, Severity, Thresholds
from tests.conftest import probe_lab
from tests.known import submitted


@pytest.mark.real
async def test_healthy_gateway_delivers_every_notification_once(ledger):
    outcome = await probe_lab(ledger, "healthy", count=20, concurrency=4)
    assert outcome.verdict.pattern is Pattern.HEALTHY
    assert (outcome.verdict.sent, outcome.verdict.delivered) == (20, 20)
    assert outcome.verdict.sink_verified is True
    assert {d.found_in for n in outcome.record.burst for d in n.deliveries} == {"envelope"}


@pytest.mark.real
@pytest.mark.parametrize("per_session", [1, 5, 20])
async def test_first_only_gateway_is_judged_first_only_within_seconds(ledger, per_session):
    outcome = await probe_lab(ledger, "first-only", count=20, per_session=per_session)
    assert outcome.verdict.pattern is Pattern.FIRST_ONLY
    assert outcome.verdict.delivered == 1
    # the settle window ended the wait, not the hard timeout after the burst
    assert outcome.elapsed_s < outcome.record.run.options.timeout_s


@pytest.mark.real
@pytest.mark.parametrize(("refusal", "code"), [("4xx", "451"), ("5xx", "554")])
async def test_first_only_with_refusals_says_later_ones_were_refused(ledger, refusal, code):
    outcome = await probe_lab(ledger, f"first-only:{refusal}", count=5)
    assert outcome.verdict.pattern is Pattern.FIRST_ONLY
    assert "refused at submission" in outcome.verdict.summary
    assert any(f"DATA {code}" in line for line in outcome.verdict.evidence)


@pytest.mark.real
async def test_drop_after_three_is_degraded_after_k(ledger):
    outcome = await probe_lab(ledger, "drop-after-k:3", count=10)
    assert outcome.verdict.pattern is Pattern.DEGRADED_AFTER_K
    assert outcome.verdict.details["k"] == 3


@pytest.mark.real
async def test_seeded_random_loss_is_intermittent(ledger):
    outcome = await probe_lab(ledger, "intermittent:0.4", count=20, seed=3)
    assert outcome.verdict.pattern is Pattern.INTERMITTENT
    assert 0 < outcome.verdict.delivered < 20


@pytest.mark.real
async def test_gateway_that_loses_everything_is_none_delivered(ledger):
    outcome = await probe_lab(ledger, "drop-after-k:0", count=5, patience=Patience(timeout_s=1.0))
    assert outcome.verdict.pattern is Pattern.NONE_DELIVERED
    assert outcome.verdict.accepted == 5


@pytest.mark.real
async def test_gateway_that_is_down_is_unreachable(ledger):
    outcome = await probe_lab(ledger, "down", count=3)
    assert outcome.verdict.pattern is Pattern.GATEWAY_UNREACHABLE
    assert outcome.verdict.severity is Severity.CRITICAL


@pytest.mark.real
@pytest.mark.parametrize("phase", ["greeting", "ehlo", "mail", "rcpt", "data", "end_of_data"])
async def test_lab_gateway_stalling_at_a_phase_is_gateway_stalled_there(ledger, phase):
    outcome = await probe_lab(ledger, f"stall:{phase}", count=6, step_timeout_s=0.3)
    assert outcome.verdict.pattern is Pattern.GATEWAY_STALLED
    assert (outcome.verdict.sent, outcome.verdict.not_attempted) == (2, 4)
    stalled = {n.submission.stalled_at for n in outcome.record.burst if n.submission}
    assert stalled == {SmtpPhase(phase)}


HUNG_UP_AT = {
    "greeting": "at connect, before its greeting",
    "ehlo": "after the greeting, at EHLO",
    "mail": "after the greeting, at MAIL",
    "rcpt": "after the greeting, at RCPT",
    "data": "at DATA, before its 354",
    "end_of_data": "after the final dot, before its final reply",
}


@pytest.mark.real
@pytest.mark.parametrize("phase", list(HUNG_UP_AT))
async def test_lab_gateway_hanging_up_at_a_phase_is_gateway_hung_up_there(ledger, phase):
    outcome = await probe_lab(ledger, f"hang-up:{phase}", count=6, step_timeout_s=5.0)
    verdict = outcome.verdict
    assert (verdict.pattern, verdict.severity) == (Pattern.GATEWAY_HUNG_UP, Severity.CRITICAL)
    assert (verdict.sent, verdict.accepted, verdict.not_attempted) == (2, 0, 4)  # the breaker
    assert f"hung up on all 2 notifications {HUNG_UP_AT[phase]}" in verdict.summary
    assert all(n.submission and n.submission.stalled_at is None for n in outcome.record.burst[:2])


@pytest.mark.real
async def test_gateway_that_refuses_everything_is_all_refused(ledger):
    outcome = await probe_lab(ledger, "reject", count=4, concurrency=2)
    assert outcome.verdict.pattern is Pattern.ALL_REFUSED
    assert any("550 5.7.1" in line for line in outcome.verdict.evidence)


@pytest.mark.real
async def test_gateway_that_holds_mail_back_is_slow(ledger):
    outcome = await probe_lab(ledger, "slow:0.3", count=3, thresholds=Thresholds(slow_after_s=0.2))
    assert outcome.verdict.pattern is Pattern.SLOW
    assert all((n.latency_s or 0) >= 0.3 for n in outcome.record.burst)


@pytest.mark.real
async def test_gateway_that_relays_twice_is_duplicated(ledger):
    outcome = await probe_lab(ledger, "duplicate", count=4)
    assert outcome.verdict.pattern is Pattern.DUPLICATED
    assert all(n.copies == 2 for n in outcome.record.burst)


@pytest.mark.real
async def test_token_survives_a_gateway_that_rebuilds_every_message(ledger):
    outcome = await probe_lab(ledger, "healthy", count=5, rewrite=True)
    assert outcome.verdict.pattern is Pattern.HEALTHY
    assert {d.found_in for n in outcome.record.burst for d in n.deliveries} == {"subject"}


@pytest.mark.real
async def test_paced_burst_spaces_submissions_by_the_interval(ledger):
    outcome = await probe_lab(ledger, "healthy", count=3, notification_gap_s=0.1)
    starts = [n.submission.started_at for n in outcome.record.burst if n.submission]
    assert starts[2] - starts[0] >= 0.19


@pytest.mark.real
async def test_every_submission_keeps_its_transcript(ledger):
    outcome = await probe_lab(ledger, "first-only:5xx", count=2, per_session=1)
    first, second = outcome.record.burst
    assert [s.command.split()[0] for s in submitted(first).steps] == [
        "connect",
        "EHLO",
        "MAIL",
        "RCPT",
        "DATA",
        "message",  # DATA's 354, then the message
    ]
    reply = submitted(second).steps[-1].reply
    assert reply is not None and reply.code == 554


def test_lab_fault_model_is_deterministic_for_a_seed():
    mode = FaultMode.parse("intermittent:0.5")
    runs = [[decide(mode, n, random.Random(7)).copies for n in range(1, 50)] for _ in range(2)]
    assert runs[0] == runs[1]


def test_lab_first_only_relays_exactly_the_first_message():
    mode = FaultMode.parse("first-only")
    rng = random.Random(0)
    assert decide(mode, 1, rng) == Action(copies=1)
    assert decide(mode, 2, rng) == Action(copies=0)


def test_lab_queue_per_session_holds_every_message_after_the_kth_of_a_session():
    mode = FaultMode.parse("queue-per-session:10:20")
    rng = random.Random(0)
    assert (mode.k, mode.delay_s) == (10, 20.0)
    assert decide(mode, 25, rng, in_session=10) == Action()
    assert decide(mode, 11, rng, in_session=11) == Action(hold=True)
    assert FaultMode.parse("queue-per-session:3").delay_s == 20.0  # a queue run every 20 s


BAD_MODES = [
    "",
    "sometimes",
    "slow:-1",
    "intermittent:2",
    "first-only:6xx",
    "queue-per-session:0",
    "queue-per-session:5:0",
    "stall",
    "stall:connect",
    "stall:later",
    "hang-up",
    "hang-up:later",
]


@pytest.mark.parametrize("bad", BAD_MODES)
def test_bad_lab_mode_is_a_usage_error(bad):
    from probe.errors import UsageError

    with pytest.raises(UsageError):
        FaultMode.parse(bad)
