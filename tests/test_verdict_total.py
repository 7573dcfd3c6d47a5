"""The verdict is total: every mix of what can become of a notification gets one, and every
notification that did not arrive is named in exactly one group of its evidence; a gateway that
answered what is not SMTP, or hung up, is never called refusing unless it did refuse."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from probe.records import (
    Bounce,
    Delivery,
    ErrorKind,
    Notification,
    Run,
    RunRecord,
    SmtpPhase,
    SmtpReply,
    Stage,
    Submission,
)
from probe.verdict import Cause, Pattern, Severity, classify
from tests.conftest import TEST_KEY

RUN = "abcdef0123"
STAGES: tuple[Stage, ...] = ("connect", "ehlo", "starttls", "auth", "mail", "rcpt", "data")
REPLIES = (
    SmtpReply(250, "2.0.0 Queued", "2.0.0"),
    SmtpReply(451, "4.3.0 Queue full", "4.3.0"),
    SmtpReply(550, "5.7.1 Relaying denied", "5.7.1"),
    SmtpReply(450, "4.7.1 Error: too much mail from 127.0.0.1", "4.7.1"),
    SmtpReply(421, "4.7.0 gw Error: too many connections from 127.0.0.1", "4.7.0"),
    SmtpReply(554, "5.7.1 rate limit exceeded", "5.7.1"),
    SmtpReply(-1, "Response too long"),  # what older runs kept for a reply over the cap
    SmtpReply(354, "go ahead"),
    SmtpReply(221, "bye"),
)
ERRORS = (
    (ErrorKind.CONNECTION_REFUSED, None),
    (ErrorKind.RESET, None),
    (ErrorKind.PROTOCOL, None),
    (ErrorKind.TLS, None),
    (ErrorKind.DNS, None),
    (ErrorKind.INTERRUPTED, None),
    *((ErrorKind.TIMEOUT, phase) for phase in SmtpPhase),
)

# What can become of one notification: a reply at a stage, an error (a stall names its phase),
# never attempted (cut) or left out by the breaker; then copies delivered and reports back.
_submitted = st.one_of(
    st.tuples(st.just("reply"), st.sampled_from(REPLIES), st.sampled_from(STAGES)),
    st.tuples(st.just("error"), st.sampled_from(ERRORS), st.sampled_from(STAGES)),
    st.tuples(st.sampled_from(["cut", "skipped"]), st.none(), st.none()),
)
_fate = st.tuples(
    _submitted,
    st.integers(0, 2),  # copies delivered
    st.sampled_from([None, "failed", "delayed", "delivered"]),  # a report that came back
    st.integers(1, 3),  # session
)


def notification(seq: int, fate: tuple[Any, ...]) -> Notification:
    (how, what, stage), copies, report, session = fate
    t = 1000.0 + seq
    submission = None
    if how == "reply":
        submission = Submission(t, t + 0.1, stage, reply=what, session=session, position=seq)
    elif how == "error":
        kind, phase = what
        submission = Submission(
            t,
            t + 0.1,
            stage,
            error="x",
            error_kind=kind,
            stalled_at=phase,
            session=session,
            position=seq,
        )
    deliveries = tuple(Delivery(RUN, seq, t + 0.2 + i, "envelope") for i in range(copies))
    bounces = (Bounce(RUN, seq, t + 0.3, report, status="5.7.1"),) if report else ()
    return Notification(
        RUN,
        seq,
        TEST_KEY.token(RUN, seq),
        submission,
        deliveries if submission else (),
        "circuit breaker" if how == "skipped" else None,
        bounces if submission else (),
    )


def named_seqs(lines: tuple[str, ...]) -> list[int]:
    """Every sequence number the evidence names in a group: "seq 2-5, 7: …" or "(seq 3-4)"."""
    seqs: list[int] = []
    for line in lines:
        match = re.match(r"seq ([\d, -]+):", line) or re.search(r"\(seq ([\d, -]+)\)", line)
        if match is None or "not attempted" in line:
            continue
        for part in match.group(1).split(","):
            low, _, high = part.strip().partition("-")
            seqs += range(int(low), int(high or low) + 1)
    return seqs


@settings(max_examples=400)
@given(
    st.lists(_fate, min_size=1, max_size=20),
    st.sampled_from([None, 0, 1]),  # control message: none sent, sent and lost, arrived
    st.sampled_from(["done", "interrupted"]),
)
def test_every_mix_of_submission_states_gets_a_verdict_naming_each_loss_once(
    fates, control, status
):
    burst = tuple(notification(seq, fate) for seq, fate in enumerate(fates, start=1))
    control_note = (
        ()
        if control is None
        else (
            Notification(
                RUN,
                0,
                TEST_KEY.token(RUN, 0),
                Submission(999.0, 999.1, "data", reply=REPLIES[0]),
                (Delivery(RUN, 0, 999.2, "envelope"),) if control else (),
            ),
        )
    )
    run = Run(RUN, "gw:25", "probe.invalid", len(burst), 999.0, status=status)
    verdict = classify(RunRecord(run, control_note + burst))

    assert verdict.pattern in Pattern and verdict.summary
    sent = [n for n in burst if n.submission and not n.submission.interrupted]
    assert verdict.sent == len(sent)
    assert verdict.not_attempted == sum(1 for n in burst if n.not_attempted)
    if verdict.severity is Severity.OK:
        assert verdict.delivered == verdict.sent > 0
    answers = [n.submission for n in sent if n.submission]
    if verdict.pattern is Pattern.ALL_REFUSED and any(s.not_smtp for s in answers):
        assert any(s.refused for s in answers), verdict.summary  # "refused": one was, at least
    if verdict.pattern is Pattern.PROTOCOL_ERROR:
        assert any(s.not_smtp for s in answers) and not any(s.accepted for s in answers)
        assert (verdict.severity, verdict.cause) == (Severity.CRITICAL, Cause.PROTOCOL)
    if verdict.pattern is Pattern.ALL_REFUSED and any(s.hung_up for s in answers):
        assert any(s.refused for s in answers), verdict.summary
        assert " hung up on (" in verdict.summary  # named apart, never "got no SMTP answer"
    if verdict.pattern is Pattern.GATEWAY_HUNG_UP:
        assert any(s.hung_up for s in answers) and not any(s.accepted for s in answers)
        assert (verdict.severity, verdict.cause) == (Severity.CRITICAL, Cause.RESET)
        assert "hung up" in verdict.summary and "refused all" not in verdict.summary
    if verdict.pattern is Pattern.GATEWAY_UNREACHABLE:
        assert not any(s.hung_up for s in answers)  # something took the connection
    if verdict.pattern in (Pattern.INCONCLUSIVE, Pattern.GATEWAY_UNREACHABLE):
        return  # judged as a whole: no notification of it proves anything on its own
    missing = [n.seq for n in sent if not n.copies]
    named = named_seqs(verdict.evidence)
    for seq in missing:
        assert named.count(seq) == 1, (seq, verdict.pattern, verdict.evidence)
