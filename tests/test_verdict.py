"""The verdict on crafted ledgers: every pattern, its severity and its evidence."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TypedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probe.records import (
    BOUNCE_ACTIONS,
    Bounce,
    BounceAction,
    Delivery,
    ErrorKind,
    Notification,
    Run,
    RunRecord,
    SmtpPhase,
    SmtpReply,
    Stage,
    Step,
    Submission,
)
from probe.verdict import (
    Cause,
    NextHop,
    Pattern,
    Severity,
    Thresholds,
    classify,
    judge_recorded,
    seq_ranges,
)
from tests.conftest import TEST_KEY

RUN = "abcdef0123"
OK = SmtpReply(250, "2.0.0 Queued", "2.0.0")


def note(
    seq: int,
    *,
    delivered: int = 1,
    latency: float = 0.01,
    reply: SmtpReply | None = OK,
    stage: Stage = "data",
    error_kind: ErrorKind | None = None,
    attempted: bool = True,
    session: int | None = None,
    position: int | None = None,
    stalled_at: SmtpPhase | None = None,
    not_attempted: str | None = None,
) -> Notification:
    t = 1000.0 + seq * 0.01
    submission = (
        Submission(
            started_at=t,
            finished_at=t + 0.001,
            stage=stage,
            reply=reply,
            error=None if reply else "Connection refused",
            error_kind=error_kind,
            session=session,
            position=position,
            stalled_at=stalled_at,
        )
        if attempted and not not_attempted
        else None
    )
    deliveries = tuple(
        Delivery(RUN, seq, received_at=t + latency + i * 0.001, found_in="envelope")
        for i in range(delivered)
    )
    return Notification(RUN, seq, TEST_KEY.token(RUN, seq), submission, deliveries, not_attempted)


def record(*notes: Notification, control: bool | None = True) -> RunRecord:
    run = Run(RUN, "gw:25", "probe.invalid", count=len(notes), started_at=999.0)
    extra = () if control is None else (note(0, delivered=1 if control else 0),)
    return RunRecord(run, extra + notes)


def test_all_delivered_once_is_healthy():
    verdict = classify(record(*(note(i) for i in range(1, 11))))
    assert (verdict.pattern, verdict.severity) == (Pattern.HEALTHY, Severity.OK)
    assert (verdict.sent, verdict.accepted, verdict.delivered) == (10, 10, 10)
    assert verdict.sink_verified is True


def test_only_first_delivered_rest_accepted_is_first_only_accepted_form():
    verdict = classify(record(note(1), *(note(i, delivered=0) for i in range(2, 21))))
    assert (verdict.pattern, verdict.severity) == (Pattern.FIRST_ONLY, Severity.CRITICAL)
    assert "accepted by the gateway (2xx) and never delivered" in verdict.summary
    assert any(line.startswith("seq 2-20: accepted (250") for line in verdict.evidence)
    assert verdict.details == {"lost_accepted": 19, "lost_refused": 0}


def test_only_first_delivered_rest_refused_is_first_only_refused_form():
    refused = SmtpReply(554, "5.3.0 failed", "5.3.0")
    verdict = classify(record(note(1), *(note(i, delivered=0, reply=refused) for i in (2, 3))))
    assert verdict.pattern is Pattern.FIRST_ONLY
    assert "refused at submission" in verdict.summary
    assert "refused at submission, permanently (5xx)" in verdict.summary
    assert any(
        line.startswith("seq 2-3: refused permanently: DATA 554") for line in verdict.evidence
    )


def test_first_means_first_answered_by_the_gateway_not_lowest_seq():
    late_first = Notification(
        RUN, 1, TEST_KEY.token(RUN, 1), Submission(1000.5, 1000.6, "data", OK), ()
    )
    early_second = note(2)  # answered at 1000.02, before seq 1
    verdict = classify(record(late_first, early_second, note(3, delivered=0)))
    assert verdict.pattern is Pattern.FIRST_ONLY


def test_prefix_of_three_then_losses_is_degraded_after_k():
    notes = [note(i) for i in (1, 2, 3)] + [note(i, delivered=0) for i in range(4, 11)]
    verdict = classify(record(*notes))
    assert (verdict.pattern, verdict.details) == (Pattern.DEGRADED_AFTER_K, {"k": 3})
    assert verdict.to_dict()["k"] == 3


def test_scattered_losses_are_intermittent_and_critical_above_minor_loss():
    notes = [note(i, delivered=0 if i in (2, 5, 9) else 1) for i in range(1, 11)]
    verdict = classify(record(*notes))
    assert (verdict.pattern, verdict.severity) == (Pattern.INTERMITTENT, Severity.CRITICAL)
    assert "30% loss" in verdict.summary


def test_a_single_loss_in_twenty_is_minor_intermittent_warning():
    notes = [note(i, delivered=0 if i == 7 else 1) for i in range(1, 21)]
    verdict = classify(record(*notes))
    assert (verdict.pattern, verdict.severity) == (Pattern.INTERMITTENT, Severity.WARNING)


def test_losing_only_the_last_one_is_intermittent_not_degraded():
    notes = [note(i) for i in range(1, 10)] + [note(10, delivered=0)]
    assert classify(record(*notes)).pattern is Pattern.INTERMITTENT


def test_accepted_and_none_arrived_is_none_delivered():
    verdict = classify(record(*(note(i, delivered=0) for i in range(1, 6))))
    assert (verdict.pattern, verdict.severity) == (Pattern.NONE_DELIVERED, Severity.CRITICAL)
    assert verdict.accepted == 5


def test_connection_refused_everywhere_is_gateway_unreachable():
    notes = [
        note(i, delivered=0, reply=None, stage="connect", error_kind=ErrorKind.CONNECTION_REFUSED)
        for i in range(1, 4)
    ]
    verdict = classify(record(*notes))
    assert verdict.pattern is Pattern.GATEWAY_UNREACHABLE
    assert verdict.evidence[0] == "3× connection refused: Connection refused"


def test_every_notification_refused_is_all_refused():
    refused = SmtpReply(550, "5.7.1 Relaying denied", "5.7.1")
    notes = [note(i, delivered=0, reply=refused, stage="rcpt") for i in range(1, 4)]
    verdict = classify(record(*notes))
    assert verdict.pattern is Pattern.ALL_REFUSED
    assert verdict.summary == (
        "the gateway refused all 3 notifications permanently (RCPT 550 5.7.1 Relaying denied)"
    )
    assert (
        "seq 1-3: refused permanently: RCPT 550 5.7.1 Relaying denied (first shown)"
        in verdict.evidence
    )


def test_banner_refusal_counts_as_rejected_not_unreachable():
    banner = SmtpReply(421, "4.3.2 Service not available", "4.3.2")
    notes = [note(i, delivered=0, reply=banner, stage="connect") for i in range(1, 3)]
    assert classify(record(*notes)).pattern is Pattern.ALL_REFUSED


def test_all_delivered_but_late_is_slow_warning():
    notes = [note(i, latency=6.0 if i == 4 else 0.1) for i in range(1, 6)]
    verdict = classify(record(*notes), Thresholds(slow_after_s=5.0))
    assert (verdict.pattern, verdict.severity) == (Pattern.SLOW, Severity.WARNING)
    assert "slower than 5 s: 4" in verdict.evidence


def test_copies_beyond_one_is_duplicated_warning():
    notes = [note(i, delivered=2 if i == 3 else 1) for i in range(1, 6)]
    verdict = classify(record(*notes))
    assert (verdict.pattern, verdict.severity) == (Pattern.DUPLICATED, Severity.WARNING)
    assert verdict.evidence[0] == "delivered more than once: seq 3 ×2"


def test_missing_control_message_makes_losses_inconclusive():
    verdict = classify(record(note(1), note(2, delivered=0), control=False))
    assert (verdict.pattern, verdict.severity) == (Pattern.INCONCLUSIVE, Severity.UNKNOWN)
    assert verdict.sink_verified is False


def test_missing_control_does_not_hide_a_complete_delivery():
    verdict = classify(record(note(1), note(2), control=False))
    assert verdict.pattern is Pattern.HEALTHY


def test_run_without_control_says_the_sink_was_not_verified():
    verdict = classify(record(note(1), control=None))
    assert verdict.sink_verified is None
    assert any("sink not verified" in line for line in verdict.evidence)


def test_run_cut_off_before_sending_is_inconclusive():
    verdict = classify(record(note(1, attempted=False), note(2, attempted=False)))
    assert (verdict.pattern, verdict.cause) == (Pattern.INCONCLUSIVE, Cause.CUT_OFF)
    assert verdict.summary == "cut off after 0 of 2 notifications; judge nothing from it"


def test_run_cut_off_midway_is_inconclusive_with_the_count_it_reached():
    notes = [note(1), note(2), *(note(i, attempted=False, delivered=0) for i in range(3, 51))]
    verdict = classify(record(*notes))
    assert (verdict.pattern, verdict.severity) == (Pattern.INCONCLUSIVE, Severity.UNKNOWN)
    assert verdict.cause is Cause.CUT_OFF
    assert verdict.summary == "cut off after 2 of 50 notifications; judge nothing from it"
    assert "run cut off: 2 of 50 planned notifications were sent" in verdict.evidence


def test_run_cut_off_while_waiting_for_late_mail_is_inconclusive():
    rec = record(note(1), note(2, delivered=0), note(3, delivered=0))
    cut = replace(rec, run=replace(rec.run, status="interrupted"))
    verdict = classify(cut)
    assert (verdict.pattern, verdict.cause) == (Pattern.INCONCLUSIVE, Cause.CUT_OFF)
    assert "accepted, not delivered when cut off: 2-3" in verdict.evidence
    assert classify(rec).pattern is Pattern.FIRST_ONLY  # the same rows, judged at the end


def test_interrupted_run_that_has_everything_is_judged_on_it():
    rec = record(note(1), note(2))
    assert classify(replace(rec, run=replace(rec.run, status="interrupted"))).pattern is (
        Pattern.HEALTHY
    )


def test_control_message_refused_by_the_sink_names_the_reply():
    refused = SmtpReply(550, "5.7.1 Relaying denied: this sink accepts only @probe.test", "5.7.1")
    control = note(0, delivered=0, reply=refused, stage="rcpt")
    rec = record(note(1, delivered=0), note(2, delivered=0), control=None)
    verdict = classify(replace(rec, notifications=(control, *rec.notifications)))
    assert (verdict.pattern, verdict.cause) == (Pattern.INCONCLUSIVE, Cause.SINK_REFUSED)
    assert "RCPT 550 5.7.1 Relaying denied" in verdict.summary


@pytest.mark.parametrize(
    ("kind", "cause"),
    [
        (ErrorKind.DNS, Cause.DNS),
        (ErrorKind.CONNECTION_REFUSED, Cause.CONNECTION_REFUSED),
        (ErrorKind.TLS, Cause.TLS),
    ],
)
def test_unreachable_gateway_names_the_failure_kind(kind, cause):
    notes = [note(i, reply=None, delivered=0, error_kind=kind, stage="connect") for i in (1, 2)]
    verdict = classify(record(*notes))
    assert (verdict.pattern, verdict.cause) == (Pattern.GATEWAY_UNREACHABLE, cause)


def test_refused_credentials_are_an_auth_failure_not_a_policy_refusal():
    bad_password = SmtpReply(535, "5.7.8 Authentication credentials invalid", "5.7.8")
    notes = [note(i, reply=bad_password, delivered=0, stage="auth") for i in (1, 2)]
    verdict = classify(record(*notes))
    assert (verdict.pattern, verdict.cause) == (Pattern.ALL_REFUSED, Cause.AUTH)
    policy = [note(i, reply=SmtpReply(550, "5.7.1 no"), delivered=0, stage="rcpt") for i in (1, 2)]
    assert classify(record(*policy)).cause is None


def test_seq_ranges_compacts_runs():
    assert seq_ranges([9, 1, 2, 3, 5, 7, 8]) == "1-3, 5, 7-9"
    assert seq_ranges([]) == ""


@given(st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=30))
def test_classify_is_total_and_counts_are_consistent(shape):
    notes = [
        note(i, delivered=copies, reply=OK if accepted else SmtpReply(550, "no"))
        for i, (copies, accepted) in enumerate(shape, start=1)
    ]
    verdict = classify(record(*notes))
    assert verdict.sent == len(notes)
    assert verdict.delivered == sum(1 for copies, _ in shape if copies)
    assert verdict.summary and verdict.pattern in Pattern
    if verdict.delivered == len(notes):
        assert verdict.severity <= Severity.WARNING


_KINDS = st.sampled_from([None, *ErrorKind])


@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.booleans(), _KINDS, st.booleans(), st.floats(-5000, 60)),
        min_size=1,
        max_size=25,
    ),
    st.booleans(),
)
def test_classify_is_total_over_errors_cut_offs_and_clock_jumps(shape, control):
    """Any mix of refusals, connection errors, unsent notifications and deliveries stamped
    before their submission (a clock stepped back) gets a verdict with consistent counts."""
    notes = []
    for seq, (copies, accepted, kind, attempted, latency) in enumerate(shape, start=1):
        reply = OK if accepted and kind is None else (None if kind else SmtpReply(451, "later"))
        notes.append(
            note(
                seq,
                delivered=copies if attempted else 0,
                latency=latency,
                reply=reply,
                stage="connect" if kind else "data",
                error_kind=kind,
                attempted=attempted,
            )
        )
    verdict = classify(record(*notes, control=control))
    # an attempt the probe itself cut mid-step (a stop) is not counted as sent
    sent = [n for n in notes if n.submission and not n.submission.interrupted]
    assert verdict.sent == len(sent)
    assert verdict.delivered == sum(1 for n in sent if n.copies)
    assert 0 <= verdict.accepted <= verdict.sent
    assert verdict.pattern in Pattern and verdict.summary
    assert all(n.latency_s is None or n.latency_s >= 0 for n in notes)
    if verdict.severity is Severity.OK:
        assert verdict.delivered == verdict.sent > 0


# -- losses that follow the SMTP sessions --------------------------------------------------------


def shaped(count: int, per_session: int, delivered) -> RunRecord:
    """A burst over consecutive sessions of `per_session`; `delivered(seq, session, position)`."""
    notes = []
    for seq in range(1, count + 1):
        session, position = (seq - 1) // per_session + 1, (seq - 1) % per_session + 1
        copies = 1 if delivered(seq, session, position) else 0
        notes.append(note(seq, delivered=copies, session=session, position=position))
    return record(*notes)


def test_first_k_of_every_session_delivered_is_queued_per_session_a_warning():
    verdict = classify(shaped(20, 8, lambda seq, session, pos: pos <= 3))
    assert (verdict.pattern, verdict.severity) == (Pattern.QUEUED_PER_SESSION, Severity.WARNING)
    assert verdict.details == {"k": 3, "sessions_cut": 3}
    assert "queued after 3 messages per session" in verdict.summary
    assert "smtp_accept_queue_per_connection" in verdict.summary
    assert f"notifyprobe verdict {RUN}" in verdict.summary


def test_one_session_carrying_the_whole_burst_cut_at_k_is_queued_per_session():
    verdict = classify(shaped(20, 20, lambda seq, session, pos: pos <= 10))
    assert verdict.pattern is Pattern.QUEUED_PER_SESSION
    assert verdict.details == {"k": 10, "sessions_cut": 1}
    assert "One session carried the whole burst" in verdict.summary


def test_a_later_session_delivering_again_after_a_loss_is_per_session_even_if_one_is_cut():
    verdict = classify(shaped(30, 20, lambda seq, session, pos: pos <= 10))
    assert verdict.pattern is Pattern.QUEUED_PER_SESSION
    assert verdict.details == {"k": 10, "sessions_cut": 1}


def test_first_of_every_session_delivered_rest_missing_is_queued_after_one():
    verdict = classify(shaped(10, 2, lambda seq, session, pos: pos == 1))
    assert verdict.pattern is Pattern.QUEUED_PER_SESSION
    assert verdict.details["k"] == 1


@pytest.mark.parametrize("per_session", [1, 5, 20])
def test_only_the_very_first_delivered_is_first_only_whatever_the_sessions(per_session):
    verdict = classify(shaped(20, per_session, lambda seq, session, pos: seq == 1))
    assert verdict.pattern is Pattern.FIRST_ONLY


@pytest.mark.parametrize(("per_session", "k"), [(1, 3), (5, 3), (5, 5), (5, 7), (4, 12)])
def test_loss_after_k_overall_across_sessions_stays_degraded_after_k(per_session, k):
    verdict = classify(shaped(20, per_session, lambda seq, session, pos: seq <= k))
    assert verdict.pattern is Pattern.DEGRADED_AFTER_K
    assert verdict.details == {"k": k}


def test_sessions_cut_at_different_places_are_not_queued_per_session():
    cuts = {1: 3, 2: 4, 3: 3, 4: 3}
    verdict = classify(shaped(20, 5, lambda seq, session, pos: pos <= cuts[session]))
    assert verdict.pattern is Pattern.INTERMITTENT


def test_refusals_after_k_per_session_are_not_mail_held_in_a_queue():
    refused = SmtpReply(452, "4.5.3 Too many messages", "4.5.3")
    notes = []
    for seq in range(1, 13):
        session, position = (seq - 1) // 4 + 1, (seq - 1) % 4 + 1
        reply = OK if position <= 2 else refused
        delivered = int(position <= 2)
        notes.append(
            note(seq, delivered=delivered, reply=reply, session=session, position=position)
        )
    assert classify(record(*notes)).pattern is not Pattern.QUEUED_PER_SESSION


def test_runs_recorded_before_sessions_were_kept_are_judged_as_before():
    notes = [note(seq, delivered=int(seq <= 10)) for seq in range(1, 21)]
    assert classify(record(*notes)).pattern is Pattern.DEGRADED_AFTER_K


# -- stalls, the circuit breaker, temporary and permanent refusals ---------------------------


class NoAnswer(TypedDict):
    """`note` keywords for a notification the gateway never answered."""

    delivered: int
    reply: SmtpReply | None
    error_kind: ErrorKind | None


TIMED_OUT: NoAnswer = {"delivered": 0, "reply": None, "error_kind": ErrorKind.TIMEOUT}
BREAKER = "circuit breaker: seq 1-2 in a row got no answer from the gateway"


def test_silence_after_data_is_gateway_stalled_not_a_refusal():
    notes = [note(i, stage="data", stalled_at=SmtpPhase.END_OF_DATA, **TIMED_OUT) for i in (1, 2)]
    notes += [note(i, delivered=0, not_attempted=BREAKER) for i in range(3, 21)]
    verdict = classify(record(*notes))
    assert (verdict.pattern, verdict.severity) == (Pattern.GATEWAY_STALLED, Severity.CRITICAL)
    assert "refused" not in verdict.summary
    assert "stopped answering at end of data" in verdict.summary
    assert (verdict.sent, verdict.not_attempted) == (2, 18)
    assert verdict.evidence[0].startswith("2 stalled at end of data (seq 1-2)")
    assert any(line.startswith("18 not attempted (seq 3-20)") for line in verdict.evidence)


def test_silence_at_the_greeting_is_gateway_stalled_not_unreachable():
    notes = [note(i, stage="connect", stalled_at=SmtpPhase.GREETING, **TIMED_OUT) for i in (1, 2)]
    verdict = classify(record(*notes))
    assert verdict.pattern is Pattern.GATEWAY_STALLED
    assert "at greeting" in verdict.summary


def test_silence_at_the_tcp_handshake_is_unreachable_not_stalled():
    notes = [note(i, stage="connect", stalled_at=SmtpPhase.CONNECT, **TIMED_OUT) for i in (1, 2)]
    assert classify(record(*notes)).pattern is Pattern.GATEWAY_UNREACHABLE


def test_deliveries_then_a_hang_is_gateway_stalled_and_names_how_many_stalled():
    notes = [note(1), note(2)]
    notes += [note(i, stalled_at=SmtpPhase.RCPT, stage="rcpt", **TIMED_OUT) for i in (3, 4)]
    notes += [note(i, delivered=0, not_attempted=BREAKER) for i in range(5, 11)]
    verdict = classify(record(*notes))
    assert verdict.pattern is Pattern.GATEWAY_STALLED
    assert verdict.summary.startswith("the gateway delivered 2, then stopped answering at rcpt")
    assert "2 of 4 notifications stalled" in verdict.summary
    assert "6 not attempted" in verdict.summary


def test_a_stall_that_still_reached_the_sink_is_named_as_such():
    notes = [
        note(i, stalled_at=SmtpPhase.END_OF_DATA, **TIMED_OUT | {"delivered": 1}) for i in (1, 2)
    ]
    verdict = classify(record(*notes))
    assert verdict.pattern is Pattern.GATEWAY_STALLED
    assert any("stalled yet reached the sink" in line for line in verdict.evidence)


def test_one_stall_amid_deliveries_is_a_loss_named_stalled_not_refused():
    notes = [note(i) for i in range(1, 11) if i != 6]
    notes.append(note(6, stalled_at=SmtpPhase.END_OF_DATA, **TIMED_OUT))
    verdict = classify(record(*notes))
    assert verdict.pattern is Pattern.INTERMITTENT
    assert "stalled at end of data" in verdict.summary and "refused" not in verdict.summary
    assert any(
        line.startswith("seq 6: stalled: no answer at end of data") for line in verdict.evidence
    )


def test_refusals_all_temporary_are_named_temporary():
    later = SmtpReply(451, "4.3.0 try again later", "4.3.0")
    verdict = classify(record(*(note(i, delivered=0, reply=later) for i in range(1, 21))))
    assert verdict.pattern is Pattern.ALL_REFUSED
    assert verdict.summary == (
        "the gateway refused all 20 notifications temporarily (DATA 451 4.3.0 try again later)"
    )
    assert verdict.evidence[0].startswith("seq 1-20: refused temporarily: DATA 451")


def test_mixed_refusals_name_temporary_and_permanent_apart():
    later = SmtpReply(451, "4.3.0 later", "4.3.0")
    never = SmtpReply(554, "5.3.0 no", "5.3.0")
    notes = [note(i, delivered=0, reply=later if i % 2 else never) for i in range(1, 5)]
    verdict = classify(record(*notes))
    assert verdict.summary == (
        "the gateway refused all 4 notifications: 2 temporarily (DATA 451 4.3.0 later), "
        "2 permanently (DATA 554 5.3.0 no)"
    )


def test_refusals_then_a_hang_is_stalled_and_resets_are_not_called_refusals():
    later = SmtpReply(451, "4.3.0 later", "4.3.0")
    hang = [note(i, stalled_at=SmtpPhase.DATA, **TIMED_OUT) for i in (3, 4)]
    assert (
        classify(
            record(note(1, delivered=0, reply=later), note(2, delivered=0, reply=later), *hang)
        ).pattern
        is Pattern.GATEWAY_STALLED
    )
    resets = [note(i, delivered=0, reply=None, error_kind=ErrorKind.RESET) for i in (1, 2)]
    verdict = classify(record(*resets))
    assert verdict.pattern is Pattern.GATEWAY_HUNG_UP
    assert "refused none" in verdict.summary


def test_not_attempted_notifications_are_not_a_cut_off_run():
    refused = ErrorKind.CONNECTION_REFUSED
    notes = [note(i, reply=None, delivered=0, error_kind=refused, stage="connect") for i in (1, 2)]
    notes += [note(i, delivered=0, not_attempted=BREAKER) for i in range(3, 11)]
    verdict = classify(record(*notes))
    assert verdict.pattern is Pattern.GATEWAY_UNREACHABLE
    assert "for all 2 notifications" in verdict.summary and verdict.not_attempted == 8
    assert not any("run cut off" in line for line in verdict.evidence)


_OUTCOMES = st.sampled_from(
    ["ok", "lost", "451", "550", "refused", "reset", "skipped", *(phase for phase in SmtpPhase)]
)


@given(st.lists(st.tuples(_OUTCOMES, st.booleans()), min_size=1, max_size=25))
def test_stalls_and_not_attempted_never_read_as_refusals_or_losses(shape):
    """Any mix of answers, refusals, connection failures, stalls at any phase and notifications
    left out by the breaker: counts stay consistent, `gateway_stalled` needs a stall after the
    TCP handshake, and nothing is called refused unless the gateway sent a 4xx/5xx."""
    notes = []
    for seq, (outcome, arrived) in enumerate(shape, start=1):
        if outcome == "skipped":
            notes.append(note(seq, delivered=0, not_attempted=BREAKER))
        elif isinstance(outcome, SmtpPhase):
            notes.append(note(seq, stalled_at=outcome, **TIMED_OUT | {"delivered": int(arrived)}))
        elif outcome in ("451", "550"):
            reply = SmtpReply(int(outcome), "no")
            notes.append(note(seq, delivered=0, reply=reply))
        elif outcome in ("refused", "reset"):
            kind = ErrorKind.CONNECTION_REFUSED if outcome == "refused" else ErrorKind.RESET
            notes.append(note(seq, delivered=0, reply=None, error_kind=kind, stage="connect"))
        else:
            notes.append(note(seq, delivered=int(outcome == "ok" or arrived)))
    verdict = classify(record(*notes))
    skipped = sum(1 for outcome, _ in shape if outcome == "skipped")
    assert verdict.not_attempted == skipped
    assert verdict.sent == len(shape) - skipped
    stalls = [o for o, _ in shape if isinstance(o, SmtpPhase) and o is not SmtpPhase.CONNECT]
    if verdict.pattern is Pattern.GATEWAY_STALLED:
        assert stalls and verdict.severity is Severity.CRITICAL
    if not any(o in ("451", "550") for o, _ in shape):  # "connection refused" is no refusal
        assert not re.search(
            r"refused (all|temporarily|permanently|at submission)", verdict.summary
        )


# -- runs the probe itself cut off (a stop, a kill) --------------------------------------------


def interrupted(*notes: Notification) -> RunRecord:
    cut = record(*notes)
    return replace(cut, run=replace(cut.run, status="interrupted"))


def test_a_run_the_probe_cut_off_is_inconclusive_never_a_loss():
    looks_first_only = interrupted(note(1), *(note(s, delivered=0) for s in range(2, 6)))
    v = judge_recorded(looks_first_only)
    assert (v.pattern, v.severity, v.cause) == (
        Pattern.INCONCLUSIVE,
        Severity.UNKNOWN,
        Cause.CUT_OFF,
    )
    assert "cut off while waiting for late mail, with 4 of 5" in v.summary
    assert classify(looks_first_only) == v


def test_a_cut_run_is_inconclusive_even_when_what_it_sent_arrived():
    all_arrived = interrupted(note(1), note(2), note(3, attempted=False))
    v = judge_recorded(all_arrived)
    assert (v.pattern, v.cause) == (Pattern.INCONCLUSIVE, Cause.CUT_OFF)
    assert "cut off after 2 of 3 notifications" in v.summary


def test_the_attempt_in_flight_at_a_stop_is_neither_unreachable_nor_stalled():
    cut = note(1, reply=None, stage="connect", error_kind=ErrorKind.INTERRUPTED, delivered=0)
    assert cut.submission is not None and cut.submission.interrupted
    assert not cut.submission.unreachable and not cut.submission.stalled
    v = judge_recorded(interrupted(cut))
    assert v.pattern is Pattern.INCONCLUSIVE


# -- bounces: a notification that came back is evidence, never a delivery ----------------------

REFUSED_5_7_1 = "smtp; 550 5.7.1 <probe+x@probe.invalid>: Recipient address rejected"


def bounced(
    seq: int, action: BounceAction = "failed", status: str = "5.7.1", at: float = 1001.0, **kw
) -> Notification:
    report = Bounce(
        RUN,
        seq,
        at,
        action,
        status=status,
        diagnostic=REFUSED_5_7_1,
        remote_mta="next-hop.example",
        reporting_mta="gw.example",
    )
    return replace(note(seq, delivered=0, **kw), bounces=(report,))


def test_every_accepted_notification_bounced_is_all_bounced_and_names_the_status():
    verdict = classify(record(*(bounced(seq) for seq in range(1, 11))))
    assert verdict.pattern is Pattern.ALL_BOUNCED and verdict.severity is Severity.CRITICAL
    assert verdict.delivered == 0 and verdict.bounced == 10
    assert "5.7.1" in verdict.summary and "next-hop.example" in verdict.summary
    assert any("seq 1-10: accepted, then bounced: failed 5.7.1" in e for e in verdict.evidence)


def test_first_delivered_and_the_rest_bounced_is_first_only_whatever_the_rest_failed_of():
    verdict = classify(record(note(1), *(bounced(seq) for seq in range(2, 11))))
    assert verdict.pattern is Pattern.FIRST_ONLY
    assert "came back bounced (5.7.1)" in verdict.summary


def test_losses_refused_by_a_next_hop_are_named_with_the_server_that_refused():
    verdict = classify(record(note(1), *(bounced(seq) for seq in range(2, 11))))
    assert verdict.next_hop == NextHop(9, 9, "5.7.1", "next-hop.example", REFUSED_5_7_1)
    assert verdict.next_hop.all_lost


def test_a_silent_loss_beside_next_hop_refusals_keeps_them_apart():
    verdict = classify(record(note(1), bounced(2), note(3, delivered=0), bounced(4)))
    assert verdict.pattern is Pattern.FIRST_ONLY
    next_hop = verdict.next_hop
    assert next_hop is not None and (next_hop.lost, next_hop.refused) == (3, 2)
    assert not next_hop.all_lost


def test_a_bounce_naming_no_server_after_the_gateway_is_no_next_hop_refusal():
    """Without a Remote-MTA, or with the reporter's own name there, the server that wrote the
    report is the one that failed it: nothing shows the gateway relayed it onward."""
    own = replace(bounced(2), bounces=(Bounce(RUN, 2, 1001.0, "failed", status="5.3.0"),))
    itself = Bounce(
        RUN, 3, 1001.0, "failed", "5.7.1", remote_mta="GW.example", reporting_mta="gw.example"
    )
    verdict = classify(record(note(1), own, replace(bounced(3), bounces=(itself,))))
    assert verdict.pattern is Pattern.FIRST_ONLY and verdict.bounced == 2
    assert verdict.next_hop is None


def test_bounces_and_silent_losses_together_are_none_delivered_with_both_named():
    verdict = classify(record(bounced(1), note(2, delivered=0), bounced(3)))
    assert verdict.pattern is Pattern.NONE_DELIVERED
    assert any("bounced" in e for e in verdict.evidence)
    assert any("never delivered" in e for e in verdict.evidence)


def test_a_delayed_notification_is_not_lost_the_run_is_slow_not_critical():
    verdict = classify(record(note(1), note(2), bounced(3, "delayed", "4.4.1")))
    assert verdict.pattern is Pattern.SLOW and verdict.severity is Severity.WARNING
    assert verdict.delayed == 1 and "4.4.1" in verdict.summary
    assert any("seq 3: delayed 4.4.1" in e for e in verdict.evidence)


def test_every_notification_delayed_is_a_warning_that_waits_for_the_retries():
    verdict = classify(record(*(bounced(seq, "delayed", "4.4.7") for seq in range(1, 4))))
    assert verdict.pattern is Pattern.SLOW and verdict.severity is Severity.WARNING
    assert "none of the 3" in verdict.summary


def test_a_failure_after_a_delay_report_is_a_bounce():
    n = bounced(2, "delayed", "4.4.1", at=1001.0)
    failed = Bounce(RUN, 2, 1005.0, "failed", status="5.4.7")
    verdict = classify(record(note(1), replace(n, bounces=(*n.bounces, failed))))
    assert verdict.pattern is Pattern.FIRST_ONLY and verdict.bounced == 1
    assert verdict.delayed == 0


def test_a_success_report_is_evidence_but_not_a_delivery():
    relayed = replace(bounced(2), bounces=(Bounce(RUN, 2, 1001.0, "relayed"),))
    verdict = classify(record(note(1), relayed))
    assert verdict.delivered == 1 and verdict.pattern is not Pattern.HEALTHY


def test_bounces_are_not_mail_held_per_session():
    notes = [
        note(1, session=1, position=1),
        note(2, session=1, position=2),
        bounced(3, session=1, position=3),
        note(4, session=2, position=1),
        note(5, session=2, position=2),
        bounced(6, session=2, position=3),
    ]
    assert classify(record(*notes)).pattern is not Pattern.QUEUED_PER_SESSION


@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.booleans(), st.sampled_from([None, *BOUNCE_ACTIONS])),
        min_size=1,
        max_size=25,
    )
)
def test_every_notification_is_delivered_bounced_delayed_or_lost_never_two(shape):
    """Total over any mix of copies, refusals and reports; a bounced notification is never
    counted delivered, and nothing that bounced or is delayed reads as healthy."""
    notes = []
    for seq, (copies, accepted, action) in enumerate(shape, start=1):
        n = note(seq, delivered=copies, reply=OK if accepted else SmtpReply(550, "no"))
        if action is not None:
            n = replace(n, bounces=(Bounce(RUN, seq, 1001.0, action, status="5.1.1"),))
        notes.append(n)
    verdict = classify(record(*notes))
    assert verdict.delivered == sum(1 for n in notes if n.copies)
    assert verdict.bounced == sum(1 for n in notes if n.bounced)
    assert verdict.delayed == sum(1 for n in notes if n.delayed)
    assert not any(n.bounced and n.copies for n in notes)
    if verdict.severity is Severity.OK:
        assert verdict.bounced == verdict.delayed == 0


# -- refusals by a rate or connection limit, replies that are not SMTP, the probe's own failure --

TOO_MUCH_MAIL = SmtpReply(450, "4.7.1 Error: too much mail from 127.0.0.1", "4.7.1")
TOO_MANY_CONNECTIONS = SmtpReply(
    421, "4.7.0 gw.example Error: too many connections from 127.0.0.1", "4.7.0"
)


def test_a_message_rate_limit_after_five_is_throttled_not_degraded_after_k():
    limited = [note(i, delivered=0, reply=TOO_MUCH_MAIL, stage="mail") for i in range(6, 11)]
    verdict = classify(record(*(note(i) for i in range(1, 6)), *limited))
    assert (verdict.pattern, verdict.severity) == (Pattern.THROTTLED, Severity.WARNING)
    assert "MAIL 450 4.7.1 Error: too much mail from 127.0.0.1" in verdict.summary
    assert "--max-rate" in verdict.summary
    assert "seq 6-10: refused by a rate or connection limit: MAIL 450 4.7.1" in "\n".join(
        verdict.evidence
    )
    assert verdict.to_dict()["throttled"] == 5


def test_a_connection_limit_refusing_later_sessions_is_throttled_and_advises_fewer_sessions():
    limited = [
        note(i, delivered=0, reply=TOO_MANY_CONNECTIONS, stage="connect") for i in range(11, 21)
    ]
    verdict = classify(record(*(note(i) for i in range(1, 11)), *limited))
    assert verdict.pattern is Pattern.THROTTLED
    assert "--concurrency" in verdict.summary and "--per-session" in verdict.summary


def test_a_first_only_gateway_behind_a_rate_limit_is_still_first_only():
    limited = [note(i, delivered=0, reply=TOO_MUCH_MAIL, stage="mail") for i in range(6, 11)]
    lost = [note(i, delivered=0) for i in range(2, 6)]
    verdict = classify(record(note(1), *lost, *limited))
    assert verdict.pattern is Pattern.FIRST_ONLY
    assert any(
        line.startswith("seq 6-10: refused by a rate or connection limit")
        for line in verdict.evidence
    )


def test_a_limit_that_lets_nothing_through_stays_critical():
    verdict = classify(record(*(note(i, delivered=0, reply=TOO_MUCH_MAIL) for i in (1, 2, 3))))
    assert (verdict.pattern, verdict.severity) == (Pattern.THROTTLED, Severity.CRITICAL)
    assert "none got through" in verdict.summary


@pytest.mark.parametrize(
    "reply",
    [
        SmtpReply(554, "5.7.1 rate limit exceeded", "5.7.1"),  # permanent: policy
        SmtpReply(451, "4.3.0 Queue full, try again later", "4.3.0"),
        SmtpReply(421, "4.7.0 gw Error: too many errors", "4.7.0"),  # the probe's own errors
        SmtpReply(450, "4.7.1 Greylisted, try again in 300 seconds", "4.7.1"),
    ],
)
def test_other_refusals_keep_their_patterns(reply):
    verdict = classify(record(note(1), *(note(i, delivered=0, reply=reply) for i in (2, 3, 4))))
    assert verdict.pattern is Pattern.FIRST_ONLY


@pytest.mark.parametrize(
    "reply",
    [
        SmtpReply(
            421,
            "4.3.2 The maximum number of concurrent server connections has exceeded "
            "a limit, closing transmission channel",
            "4.3.2",
        ),  # Exchange
        SmtpReply(
            421,
            "4.4.2 Message submission rate for this client has exceeded the configured limit",
            "4.4.2",
        ),  # Exchange MessageRateLimit
        SmtpReply(
            421,
            "Too many concurrent SMTP connections from this IP address; please try again later.",
        ),  # Exim smtp_accept_max_per_host
        SmtpReply(451, "Sender rate 12.0 / 1h"),  # Exim ratelimit ACL
        SmtpReply(450, "4.7.1 Error: too many recipients from 127.0.0.1", "4.7.1"),  # Postfix
    ],
)
def test_known_limit_texts_of_exim_exchange_and_postfix_are_throttling(reply):
    assert reply.names_limit
    verdict = classify(
        record(note(1), note(2), *(note(i, delivered=0, reply=reply) for i in (3, 4)))
    )
    assert verdict.pattern is Pattern.THROTTLED


def broken(seq: int, stage: Stage = "ehlo") -> Notification:
    """A notification the gateway answered with what is not SMTP (a protocol error)."""
    return note(seq, delivered=0, reply=None, stage=stage, error_kind=ErrorKind.PROTOCOL)


RELAY_DENIED = SmtpReply(554, "5.7.1 Relay denied", "5.7.1")


def refused(seq: int, reply: SmtpReply = RELAY_DENIED) -> Notification:
    return note(seq, delivered=0, reply=reply, stage="rcpt")


def test_replies_that_are_not_smtp_are_a_protocol_error_never_a_refusal():
    verdict = classify(record(broken(1), broken(2)))
    assert (verdict.pattern, verdict.severity, verdict.cause) == (
        Pattern.PROTOCOL_ERROR,
        Severity.CRITICAL,
        Cause.PROTOCOL,
    )
    assert verdict.summary.startswith(
        "the gateway answered all 2 notifications at EHLO with a reply that is not SMTP (ehlo "
        "protocol:"
    )
    assert "refused none and accepted none" in verdict.summary
    assert not re.search(r"refused (all|temporarily|permanently)", verdict.summary)
    assert any(line.startswith("seq 1-2: protocol error: ehlo") for line in verdict.evidence)


def test_a_reply_over_the_cap_at_the_greeting_is_not_an_unreachable_gateway():
    verdict = classify(record(broken(1, "connect"), broken(2, "connect")))
    assert (verdict.pattern, verdict.cause) == (Pattern.PROTOCOL_ERROR, Cause.PROTOCOL)
    assert " at CONNECT " in verdict.summary


def test_a_reply_that_is_not_smtp_at_auth_is_not_a_refusal_of_the_credentials():
    verdict = classify(record(broken(1, "auth"), broken(2, "auth")))
    assert (verdict.pattern, verdict.cause) == (Pattern.PROTOCOL_ERROR, Cause.PROTOCOL)


def test_replies_that_are_not_smtp_beside_a_hang_up_refused_nothing():
    reset = note(2, delivered=0, reply=None, stage="data", error_kind=ErrorKind.RESET)
    verdict = classify(record(broken(1), reset, broken(3, "mail")))
    assert verdict.pattern is Pattern.PROTOCOL_ERROR
    assert verdict.summary.startswith(
        "the gateway accepted none of the 3 notifications and refused none: replies that are "
        "not SMTP at EHLO and MAIL: 2 got a reply that is not SMTP"
    )
    assert "1 hung up on (data reset" in verdict.summary


def test_a_gateway_that_ended_on_replies_that_are_not_smtp_after_refusing_is_broken():
    verdict = classify(record(refused(1), refused(2), broken(3), broken(4)))
    assert (verdict.pattern, verdict.cause) == (Pattern.PROTOCOL_ERROR, Cause.PROTOCOL)
    assert verdict.summary.startswith(
        "the gateway accepted none of the 4 notifications and ended on replies that are not "
        "SMTP at EHLO: refused 2 permanently (RCPT 554 5.7.1 Relay denied); 2 got a reply that "
        "is not SMTP"
    )


@pytest.mark.parametrize(
    "order",
    [
        pytest.param((1, 2, 3, "broken"), id="one-at-the-end"),
        pytest.param(("broken", "broken", 3, 4), id="refusing-again-after-them"),
        pytest.param((1, "broken", 3, "broken"), id="scattered"),
    ],
)
def test_a_refusing_gateway_with_stray_replies_that_are_not_smtp_is_all_refused(order):
    notes = [broken(seq) if what == "broken" else refused(seq) for seq, what in enumerate(order, 1)]
    verdict = classify(record(*notes))
    assert (verdict.pattern, verdict.cause) == (Pattern.ALL_REFUSED, None)
    assert re.search(r"refused \d permanently \(RCPT 554", verdict.summary)
    assert re.search(r"; \d got a reply that is not SMTP \(ehlo protocol", verdict.summary)


def test_a_refused_and_a_throttled_tail_of_replies_that_are_not_smtp_reads_protocol_error():
    limit = SmtpReply(450, "4.7.1 Error: too much mail from 127.0.0.1", "4.7.1")
    verdict = classify(record(refused(1, limit), broken(2), broken(3)))
    assert verdict.pattern is Pattern.PROTOCOL_ERROR
    assert any("refused by a rate or connection limit" in line for line in verdict.evidence)


@pytest.mark.parametrize(
    ("delivered", "pattern"),
    [(1, Pattern.FIRST_ONLY), (3, Pattern.DEGRADED_AFTER_K)],
)
def test_replies_that_are_not_smtp_after_deliveries_are_losses_never_refusals(delivered, pattern):
    notes = [note(i) for i in range(1, delivered + 1)]
    notes += [broken(i, "mail") for i in range(delivered + 1, 11)]
    verdict = classify(record(*notes))
    assert verdict.pattern is pattern
    assert "answered with a reply that is not SMTP" in verdict.summary
    assert "refused" not in verdict.summary


def hung_up(seq: int, phase: SmtpPhase = SmtpPhase.END_OF_DATA) -> Notification:
    """A notification the gateway hung up on in `phase`, as the burst records it: the
    transcript's last line is that phase's command, with the error."""
    n = note(seq, delivered=0, reply=None, stage=phase.stage, error_kind=ErrorKind.RESET)
    assert n.submission is not None
    hang_up = Step(at=1000.0, command=phase.command, error="Unexpected EOF received")
    submission = replace(n.submission, error="Unexpected EOF received", steps=(hang_up,))
    return replace(n, submission=submission)


def test_a_gateway_that_hung_up_on_every_notification_hung_up_it_refused_nothing():
    verdict = classify(record(hung_up(1), hung_up(2), hung_up(3)))
    assert (verdict.pattern, verdict.severity, verdict.cause) == (
        Pattern.GATEWAY_HUNG_UP,
        Severity.CRITICAL,
        Cause.RESET,
    )
    assert verdict.summary == (
        "the gateway hung up on all 3 notifications after the final dot, before its final "
        "reply (data reset: Unexpected EOF received): it refused none and accepted none"
    )
    assert not re.search(r"refused (all|\d|temporarily|permanently)", verdict.summary)
    assert any(
        line.startswith("seq 1-3: hung up after the final dot, before its final reply: data reset")
        for line in verdict.evidence
    )


@pytest.mark.parametrize(
    ("phase", "where"),
    [
        (SmtpPhase.GREETING, "at connect, before its greeting"),
        (SmtpPhase.EHLO, "after the greeting, at EHLO"),
        (SmtpPhase.RCPT, "after the greeting, at RCPT"),
        (SmtpPhase.DATA, "at DATA, before its 354"),
        (SmtpPhase.END_OF_DATA, "after the final dot, before its final reply"),
    ],
)
def test_a_hang_up_is_named_by_where_in_the_session_it_happened(phase, where):
    verdict = classify(record(hung_up(1, phase), hung_up(2, phase)))
    assert verdict.pattern is Pattern.GATEWAY_HUNG_UP
    assert f"the gateway hung up on all 2 notifications {where} (" in verdict.summary


def test_a_hang_up_after_the_tcp_handshake_is_not_an_unreachable_gateway():
    verdict = classify(record(hung_up(1, SmtpPhase.GREETING), hung_up(2, SmtpPhase.GREETING)))
    assert (verdict.pattern, verdict.cause) == (Pattern.GATEWAY_HUNG_UP, Cause.RESET)
    nobody = ErrorKind.CONNECTION_REFUSED
    refused = [note(i, reply=None, delivered=0, error_kind=nobody, stage="connect") for i in (1, 2)]
    verdict = classify(record(*refused))
    assert (verdict.pattern, verdict.cause) == (
        Pattern.GATEWAY_UNREACHABLE,
        Cause.CONNECTION_REFUSED,
    )


def test_hang_ups_beside_connection_failures_refused_nothing():
    nobody = note(
        2, reply=None, delivered=0, error_kind=ErrorKind.CONNECTION_REFUSED, stage="connect"
    )
    verdict = classify(
        record(hung_up(1, SmtpPhase.GREETING), nobody, hung_up(3, SmtpPhase.GREETING))
    )
    assert verdict.pattern is Pattern.GATEWAY_HUNG_UP
    assert verdict.summary.startswith(
        "the gateway accepted none of the 3 notifications and refused none; it hung up at "
        "connect, before its greeting: 2 hung up on (connect reset: Unexpected EOF received); "
        "1 got no SMTP answer (connect connection refused"
    )


def test_a_gateway_that_ended_by_hanging_up_after_refusing_hung_up():
    verdict = classify(record(refused(1), refused(2), hung_up(3), hung_up(4)))
    assert (verdict.pattern, verdict.cause) == (Pattern.GATEWAY_HUNG_UP, Cause.RESET)
    assert verdict.summary.startswith(
        "the gateway accepted none of the 4 notifications and ended by hanging up after the "
        "final dot, before its final reply: refused 2 permanently (RCPT 554 5.7.1 Relay "
        "denied); 2 hung up on (data reset: Unexpected EOF received)"
    )


@pytest.mark.parametrize(
    "order",
    [
        pytest.param((1, 2, 3, "hung_up"), id="one-at-the-end"),
        pytest.param(("hung_up", "hung_up", 3, 4), id="refusing-again-after-them"),
        pytest.param((1, "hung_up", 3, "hung_up"), id="scattered"),
    ],
)
def test_a_refusing_gateway_with_stray_hang_ups_is_all_refused(order):
    notes = [
        hung_up(seq) if what == "hung_up" else refused(seq) for seq, what in enumerate(order, 1)
    ]
    verdict = classify(record(*notes))
    assert (verdict.pattern, verdict.cause) == (Pattern.ALL_REFUSED, None)
    assert re.search(r"refused \d permanently \(RCPT 554", verdict.summary)
    assert re.search(r"; \d hung up on \(data reset: Unexpected EOF", verdict.summary)
    assert "got no SMTP answer" not in verdict.summary


def test_hang_ups_beside_replies_that_are_not_smtp_are_a_protocol_error():
    verdict = classify(record(broken(1), hung_up(2), hung_up(3)))
    assert (verdict.pattern, verdict.cause) == (Pattern.PROTOCOL_ERROR, Cause.PROTOCOL)
    assert "2 hung up on (data reset" in verdict.summary


def test_a_gateway_that_hung_up_then_went_silent_is_stalled_not_hung_up():
    silent = [note(i, stalled_at=SmtpPhase.DATA, **TIMED_OUT) for i in (3, 4)]
    verdict = classify(record(hung_up(1), hung_up(2), *silent))
    assert verdict.pattern is Pattern.GATEWAY_STALLED
    assert verdict.summary.endswith(
        "2 of 4 notifications stalled, and the last 4 in a row got no answer (2 of them hung up on)"
    )
    assert any(line.startswith("seq 1-2: hung up after the final dot") for line in verdict.evidence)


@pytest.mark.parametrize(
    ("delivered", "pattern"),
    [(1, Pattern.FIRST_ONLY), (3, Pattern.DEGRADED_AFTER_K)],
)
def test_hang_ups_after_deliveries_are_losses_never_refusals(delivered, pattern):
    notes = [note(i) for i in range(1, delivered + 1)]
    notes += [hung_up(i, SmtpPhase.DATA) for i in range(delivered + 1, 11)]
    verdict = classify(record(*notes))
    assert verdict.pattern is pattern
    assert "hung up on at DATA, before its 354" in verdict.summary
    assert "refused" not in verdict.summary


def test_scattered_hang_ups_are_intermittent_with_cause_reset():
    notes = [hung_up(i) if i in (4, 8) else note(i) for i in range(1, 11)]
    verdict = classify(record(*notes))
    assert (verdict.pattern, verdict.cause) == (Pattern.INTERMITTENT, Cause.RESET)


def test_old_runs_that_kept_a_library_error_as_a_reply_read_it_as_a_protocol_error():
    odd = [
        note(i, delivered=0, reply=SmtpReply(-1, "Response too long"), stage="ehlo") for i in (1, 2)
    ]
    verdict = classify(record(*odd))
    assert (verdict.pattern, verdict.cause) == (Pattern.PROTOCOL_ERROR, Cause.PROTOCOL)
    assert "reply that is not SMTP (EHLO -1 Response too long)" in verdict.summary


def test_a_ledger_write_that_failed_is_an_internal_failure_not_a_cut_off_run():
    run = Run(
        RUN,
        "gw:25",
        "probe.invalid",
        10,
        999.0,
        status="done",
        failure="cannot record the result of notification 6: disk full",
    )
    notes = (
        note(0),
        *(note(i) for i in range(1, 6)),
        *(note(i, attempted=False) for i in range(6, 11)),
    )
    verdict = classify(RunRecord(run, notes))
    assert (verdict.pattern, verdict.cause) == (Pattern.INCONCLUSIVE, Cause.INTERNAL)
    assert "disk full" in verdict.summary and "cut off" not in verdict.summary


def test_values_stored_by_older_versions_still_read():
    """`all_rejected` became `all_refused`, and a TCP refusal's kind `connection_refused`:
    one word per thing. A ledger written before still loads."""
    assert Pattern("all_rejected") is Pattern.ALL_REFUSED
    assert ErrorKind("refused") is ErrorKind.CONNECTION_REFUSED
