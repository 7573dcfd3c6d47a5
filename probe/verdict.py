"""The verdict: which delivery pattern a run shows, with the evidence that proves it.

`classify` is a pure function of a `RunRecord` (no clock, no I/O), so a run cut off mid-burst is
judged later exactly as it would have been live, and every pattern is unit-tested on crafted data.

Words are evidence too: a gateway that stopped answering is `gateway_stalled` at the phase it fell
silent in, one that answered what is not SMTP is a `protocol_error` at its step, and one that
hung up is `gateway_hung_up` where it did, never "refused"; a refusal says whether it was
temporary (4xx) or permanent (5xx); and the notifications the circuit breaker left out are
counted apart, neither refused nor lost.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from itertools import takewhile
from typing import Protocol

from probe.records import ErrorKind, Notification, RunRecord, SmtpPhase, Submission

MIN_STALL_RUN = 2  # notifications in a row that got no answer, ending the burst: a hung gateway


class Pattern(str, Enum):
    HEALTHY = "healthy"
    FIRST_ONLY = "first_only"
    DEGRADED_AFTER_K = "degraded_after_k"
    QUEUED_PER_SESSION = "queued_per_session"  # held after K messages of each SMTP session
    INTERMITTENT = "intermittent"
    NONE_DELIVERED = "none_delivered"
    GATEWAY_UNREACHABLE = "gateway_unreachable"
    GATEWAY_STALLED = "gateway_stalled"  # an SMTP server took the connection, then went silent
    ALL_REFUSED = "all_refused"  # the gateway answered every notification with 4xx or 5xx
    PROTOCOL_ERROR = "protocol_error"  # accepted none, answering what is not SMTP: it is broken
    GATEWAY_HUNG_UP = "gateway_hung_up"  # accepted none: took the connection, then closed it
    ALL_BOUNCED = "all_bounced"  # accepted, then every one came back: a report said why
    SLOW = "slow"
    DUPLICATED = "duplicated"
    THROTTLED = "throttled"  # refused by a rate or connection limit: the gateway's policy
    INCONCLUSIVE = "inconclusive"  # the probe could not judge: cut off, or its sink unproven

    @classmethod
    def _missing_(cls, value: object) -> Pattern | None:
        """Ledgers written when `all_refused` was called `all_rejected`."""
        return cls.ALL_REFUSED if value == "all_rejected" else None


class Cause(str, Enum):
    """What a failure was, when the pattern alone does not say what to do about it: the report
    gives each its own meaning and next step (an AUTH refusal is not a relay-policy refusal)."""

    CUT_OFF = "cut_off"  # interrupted or killed before the run could be judged
    SINK_REFUSED = "sink_refused"  # the probe's own sink refused its control message
    SINK_UNPROVEN = "sink_unproven"  # the control message was sent and never recorded
    AUTH = "auth"  # the gateway refused the probe's credentials
    TLS = "tls"  # the TLS handshake failed (certificate, name, protocol)
    DNS = "dns"  # the gateway's name did not resolve
    CONNECTION_REFUSED = "connection_refused"  # nothing listens there: no SMTP server, no route
    TIMEOUT = "timeout"  # the TCP handshake got no answer within the step timeout
    PROTOCOL = "protocol"  # the gateway's replies were not SMTP (malformed, over the cap)
    RESET = "reset"  # the gateway took the connection, then closed or reset it: it hung up
    INTERNAL = "internal"  # the probe failed to record the run in its ledger


class Severity(IntEnum):
    """Monitoring-plugin states; the value is the process exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True)
class Thresholds:
    slow_after_s: float = 5.0  # a delivery slower than this makes a complete run `slow`
    minor_loss: float = 0.1  # intermittent loss up to this fraction is a warning, not critical


@dataclass(frozen=True)
class NextHop:
    """The losses a mail server after the gateway refused: the gateway accepted them and relayed
    them onward, and the delivery report names the remote MTA that refused, a server other than
    the one that wrote the report. The gateway did not lose those: the cause is further on."""

    lost: int  # every notification the run lost (bounced, refused, never delivered, ...)
    refused: int  # of them, refused by a next hop
    status: str  # the most common such report's RFC 3463 status ("" when it gave none)
    remote_mta: str
    diagnostic: str

    @property
    def all_lost(self) -> bool:
        """Every loss of the run was refused beyond the gateway."""
        return self.refused == self.lost


@dataclass(frozen=True)
class Verdict:
    pattern: Pattern
    severity: Severity
    summary: str
    evidence: tuple[str, ...] = ()
    sent: int = 0
    accepted: int = 0
    delivered: int = 0
    not_attempted: int = 0  # left unsent by the circuit breaker: neither refused nor lost
    bounced: int = 0  # came back with a report that delivery failed: returned, not lost
    delayed: int = 0  # a report said a server on the way is still trying: not judged yet
    sink_verified: bool | None = None
    details: dict[str, int] = field(default_factory=dict)  # e.g. {"k": 3} for degraded_after_k
    cause: Cause | None = None
    next_hop: NextHop | None = None  # losses refused beyond the gateway, when there are any

    def to_dict(self) -> dict[str, object]:
        return {
            "pattern": self.pattern.value,
            "severity": self.severity.name.lower(),
            "summary": self.summary,
            "evidence": list(self.evidence),
            "sink_verified": self.sink_verified,
            "cause": self.cause.value if self.cause else None,
            "bounced": self.bounced,
            "delayed": self.delayed,
            **self.details,
        }


class _Judge(Protocol):
    """`classify`'s closure that builds the verdict with the run's counts and context."""

    def __call__(
        self,
        pattern: Pattern,
        severity: Severity,
        summary: str,
        evidence: list[str],
        cause: Cause | None = None,
        **details: int,
    ) -> Verdict: ...


def classify(record: RunRecord, thresholds: Thresholds = Thresholds()) -> Verdict:
    """Judge a run from its notifications alone.

    A bounce is never a delivery: a notification a report says failed is not delivered, and
    it is not waited for either, so the pattern it makes with the others (first_only,
    all_bounced, ...) is named with the report's reason. A notification a report says is
    delayed is not lost: it is left out of the pattern and named apart until it arrives or
    fails.
    """
    # An attempt the probe itself cut mid-step (a stop) says nothing of the gateway: not sent.
    attempted = gateway_order(
        n for n in record.burst if n.submission is not None and not n.submission.interrupted
    )
    delayed = [n for n in attempted if n.delayed]
    sent = [n for n in attempted if not n.delayed]
    accepted = [n for n in sent if n.submission and n.submission.accepted]
    delivered = [n for n in sent if n.copies]
    lost = [n for n in sent if not n.copies]
    control = record.control
    sink_verified = None if control is None or not control.attempted else bool(control.copies)
    throttled: list[Notification] = []  # set once refusals by a limit are judged apart
    counts = {
        "sent": len(attempted),
        "accepted": len(accepted),
        "delivered": len(delivered),
        "not_attempted": len(_not_attempted(record)),
        "bounced": sum(1 for n in sent if n.bounced),
        "delayed": len(delayed),
    }

    def verdict(
        pattern: Pattern,
        severity: Severity,
        summary: str,
        evidence: list[str],
        cause: Cause | None = None,
        **details: int,
    ) -> Verdict:
        evidence = (
            evidence
            + _limit_lines(throttled)
            + _delayed_lines(delayed)
            + _context_lines(record, sink_verified)
        )
        return Verdict(
            pattern,
            severity,
            summary,
            tuple(evidence),
            **counts,
            sink_verified=sink_verified,
            details=details,
            cause=cause,
            # `sent` as judged: the notifications a limit refused are set apart by then
            next_hop=next_hop_of([n for n in sent if not n.copies]),
        )

    if record.run.failure:  # the probe's fault, whatever the rows it did keep say
        return verdict(
            Pattern.INCONCLUSIVE,
            Severity.UNKNOWN,
            f"the probe failed to record this run in its ledger ({record.run.failure}); judge "
            "nothing from it",
            [f"internal failure: {record.run.failure}"],
            Cause.INTERNAL,
        )
    planned = len(record.burst) - counts["not_attempted"]
    if len(attempted) < planned or not attempted:  # what never started proves nothing
        return verdict(
            Pattern.INCONCLUSIVE,
            Severity.UNKNOWN,
            f"cut off after {len(attempted)} of {planned} notifications; judge nothing from it",
            [f"of the {len(attempted)} sent, {len(delivered)} delivered"] if attempted else [],
            Cause.CUT_OFF,
        )
    if not sent:
        return verdict(
            Pattern.SLOW,
            Severity.WARNING,
            f"none of the {len(attempted)} notifications has arrived yet: a mail server on the "
            f"way reported every one delayed ({_top_bounce(delayed)}) and is still trying",
            [],
        )
    missing = [n for n in accepted if not n.copies and not n.bounced]
    if record.run.status == "interrupted" and missing:
        return verdict(
            Pattern.INCONCLUSIVE,
            Severity.UNKNOWN,
            f"cut off while waiting for late mail, with {len(missing)} of {len(sent)} "
            "notifications accepted and not delivered yet; judge nothing from it",
            [f"accepted, not delivered when cut off: {seq_ranges(n.seq for n in missing)}"],
            Cause.CUT_OFF,
        )
    silent_tail = _silent_tail(sent)
    if silent_tail:  # proven by the submissions alone, whatever the sink did
        return _stalled(sent, delivered, silent_tail, counts["not_attempted"], verdict)
    if sink_verified is False and lost:
        refusal = control.submission if control and control.submission else None
        if refusal is not None and refusal.refused:
            return verdict(
                Pattern.INCONCLUSIVE,
                Severity.UNKNOWN,
                f"the probe's own sink refused its control message ({refusal.describe()}); the "
                "losses cannot be blamed on the gateway",
                [f"control message (seq 0) refused by the sink: {refusal.describe()}"]
                + _loss_lines(lost),
                Cause.SINK_REFUSED,
            )
        return verdict(
            Pattern.INCONCLUSIVE,
            Severity.UNKNOWN,
            "the probe's own sink did not receive its control message; the losses cannot be "
            "blamed on the gateway",
            [f"control message (seq 0): {_describe_submission(control)}, never recorded by sink"]
            + _loss_lines(lost),
            Cause.SINK_UNPROVEN,
        )

    limited = [n for n in lost if _limited(n)]
    if limited:  # the gateway's policy toward the probe, judged apart from what it let through
        throttled = limited
        sent = [n for n in sent if n not in limited]
        lost = [n for n in lost if n not in limited]
        if not lost:
            return _throttled(limited, sent, verdict)
    if not delivered:
        return _nothing_delivered(sent, accepted, verdict)

    if lost:
        cut = per_session_cut(sent)
        if cut is not None:
            return _queued_per_session(record.run.run_id, sent, delivered, lost, cut, verdict)
        return _partial(sent, delivered, lost, thresholds, verdict)

    latencies = [n.latency_s for n in sent if n.latency_s is not None]
    latency_line = _latency_line(latencies)
    if delayed:
        return verdict(
            Pattern.SLOW,
            Severity.WARNING,
            f"{len(sent)} of {len(attempted)} notifications delivered; the other "
            f"{len(delayed)} were reported delayed by a mail server on the way "
            f"({_top_bounce(delayed)}), which is still trying: late, not lost",
            [latency_line],
        )
    duplicates = [n for n in sent if n.copies > 1]
    if duplicates:
        extra = sum(n.copies - 1 for n in duplicates)
        return verdict(
            Pattern.DUPLICATED,
            Severity.WARNING,
            f"all {len(sent)} notifications delivered, {len(duplicates)} of them more than once "
            f"({extra} extra copies)",
            [
                "delivered more than once: "
                + ", ".join(f"seq {n.seq} ×{n.copies}" for n in duplicates[:20]),
                latency_line,
            ],
        )
    slowest = max(latencies, default=0.0)
    if slowest > thresholds.slow_after_s:
        slow = [n for n in sent if (n.latency_s or 0.0) > thresholds.slow_after_s]
        return verdict(
            Pattern.SLOW,
            Severity.WARNING,
            f"all {len(sent)} notifications delivered, but {len(slow)} took longer than "
            f"{thresholds.slow_after_s:g} s (slowest {slowest:.2f} s)",
            [
                f"slower than {thresholds.slow_after_s:g} s: {seq_ranges(n.seq for n in slow)}",
                latency_line,
            ],
        )
    return verdict(
        Pattern.HEALTHY,
        Severity.OK,
        f"all {len(sent)} notifications delivered once; {latency_line}",
        [latency_line],
    )


def judge_recorded(record: RunRecord) -> Verdict:
    """Judge a run again from the ledger, with the thresholds it was run with (a run that was
    cut off is `inconclusive`: it proves nothing, neither delivery nor loss)."""
    return classify(record, Thresholds(slow_after_s=record.run.options.slow_after_s))


COMPLETE = frozenset({Pattern.HEALTHY, Pattern.SLOW, Pattern.DUPLICATED})  # nothing lost


def gateway_order(notifications: Iterable[Notification]) -> list[Notification]:
    """Order in which the gateway answered: with several connections this is not seq order."""

    def key(n: Notification) -> tuple[float, int]:
        return (n.submission.finished_at if n.submission else float("inf"), n.seq)

    return sorted(notifications, key=key)


@dataclass(frozen=True)
class SessionCut:
    """Losses that line up with SMTP sessions: each session delivered its first `k`."""

    k: int
    sessions: int  # sessions that carried more than k notifications, all cut at k
    one_session: bool  # the whole burst went over one session


def per_session_cut(sent: Sequence[Notification]) -> SessionCut | None:
    """A loss that follows the SMTP sessions, not the burst: the first K of every session
    delivered, every later one in a session accepted and not delivered, with the same K in
    every session. That is a gateway holding back (queueing) mail after K messages on one
    connection, as Exim does after `smtp_accept_queue_per_connection` (10), not a gateway that
    breaks after K notifications in all.

    The two only differ once a session delivers again after another session's loss (in the
    order the gateway answered): then the loss is per session. A single session carrying the
    whole burst cannot tell them apart; it is named per session when K >= 2 (K = 1 there is
    `first_only`, the stale-module signature, whatever the session shape).
    """
    submissions = [n.submission for n in sent]
    places = [(s.session, s.position) for s in submissions if s is not None]
    if len(places) != len(sent) or any(a is None or b is None for a, b in places):
        return None  # recorded before sessions were kept, or never submitted
    lost = [n for n in sent if not n.copies]
    if not lost or any(not (n.submission and n.submission.accepted) or n.bounced for n in lost):
        return None  # refusals and bounces are answers, not mail held in a queue
    k = max(_position(n) for n in sent if n.copies)
    if any(_position(n) <= k for n in lost):
        return None
    one_session = len({s for s, _ in places}) == 1
    first_loss = next(i for i, n in enumerate(sent) if not n.copies)
    resumed = any(n.copies for n in sent[first_loss:])
    if not resumed and not (one_session and k >= 2):
        return None
    cut_sessions = {n.submission.session for n in lost if n.submission}
    return SessionCut(k=k, sessions=len(cut_sessions), one_session=one_session)


def _position(n: Notification) -> int:
    return (n.submission.position or 0) if n.submission else 0


def _queued_per_session(
    run_id: str,
    sent: list[Notification],
    delivered: list[Notification],
    lost: list[Notification],
    cut: SessionCut,
    verdict: _Judge,
) -> Verdict:
    ambiguity = (
        " One session carried the whole burst, so a gateway that stops after "
        f"{cut.k} notifications in all looks the same until the re-judge."
        if cut.one_session
        else ""
    )
    return verdict(
        Pattern.QUEUED_PER_SESSION,
        Severity.WARNING,
        f"queued after {cut.k} messages per session — the gateway's per-connection limit (e.g. "
        f"Exim smtp_accept_queue_per_connection): the first {cut.k} notifications of each SMTP "
        f"session were delivered, the {len(lost)} later ones were accepted and not delivered "
        f"yet. Judge the run again after the gateway's queue run: notifyprobe verdict {run_id}."
        + ambiguity,
        [
            f"delivered: {seq_ranges(n.seq for n in delivered)}, each among the first {cut.k} "
            "of its session",
            f"accepted, not delivered: {seq_ranges(n.seq for n in lost)}, each after the "
            f"first {cut.k} of its session ({cut.sessions} session(s) cut)",
        ],
        k=cut.k,
        sessions_cut=cut.sessions,
    )


def _nothing_delivered(
    sent: list[Notification], accepted: list[Notification], verdict: _Judge
) -> Verdict:
    submissions = [n.submission for n in sent if n.submission]
    unreachable = [s for s in submissions if s.unreachable]
    if len(unreachable) == len(sent):
        reasons = Counter(
            f"{s.error_kind.label if s.error_kind else 'error'}: {s.error}" for s in unreachable
        )
        top, _ = reasons.most_common(1)[0]
        kinds = Counter(
            _UNREACHABLE_CAUSE.get(s.error_kind) if s.error_kind else None for s in unreachable
        )
        return verdict(
            Pattern.GATEWAY_UNREACHABLE,
            Severity.CRITICAL,
            f"the gateway could not be reached ({top}) for all {len(sent)} notifications",
            [f"{count}× {reason}" for reason, count in reasons.most_common()],
            kinds.most_common(1)[0][0],
        )
    if not accepted:
        if _broken(submissions):
            return verdict(
                Pattern.PROTOCOL_ERROR,
                Severity.CRITICAL,
                _broken_summary(submissions),
                _outcome_lines(sent),
                Cause.PROTOCOL,
            )
        if _hung_up(submissions):
            return verdict(
                Pattern.GATEWAY_HUNG_UP,
                Severity.CRITICAL,
                _hung_up_summary(submissions),
                _outcome_lines(sent),
                Cause.RESET,
            )
        return verdict(
            Pattern.ALL_REFUSED,
            Severity.CRITICAL,
            _refused_summary(submissions),
            _outcome_lines(sent),
            Cause.AUTH if all(s.stage == "auth" for s in submissions) else None,
        )
    if all(n.bounced for n in accepted):
        refused = len(sent) - len(accepted)
        also = f"; {refused} more refused at submission" if refused else ""
        return verdict(
            Pattern.ALL_BOUNCED,
            Severity.CRITICAL,
            f"the gateway accepted {len(accepted)} of {len(sent)} notifications and every one "
            f"came back as a bounce: {_top_bounce(accepted)}{also}",
            _outcome_lines(sent),
        )
    return verdict(
        Pattern.NONE_DELIVERED,
        Severity.CRITICAL,
        f"the gateway accepted {len(accepted)} of {len(sent)} notifications but none reached "
        "the sink",
        _outcome_lines(sent),
    )


def next_hop_of(lost: Sequence[Notification]) -> NextHop | None:
    """The losses a server after the gateway refused (None: none was), with their most common
    report: a failure report naming a Remote-MTA that is not the server that wrote the report."""
    onward = [
        b
        for n in lost
        if n.bounced
        and (b := n.bounce) is not None
        and b.remote_mta
        and b.remote_mta.lower() != b.reporting_mta.lower()
    ]
    if not onward:
        return None
    top = Counter((b.status, b.remote_mta, b.diagnostic) for b in onward).most_common(1)[0][0]
    return NextHop(len(lost), len(onward), *top)


def _limited(n: Notification) -> bool:
    """Refused, and not delivered, by a reply that names a rate or connection limit."""
    s = n.submission
    return not n.copies and s is not None and s.reply is not None and s.reply.names_limit


def _throttled(
    limited: list[Notification], through: list[Notification], verdict: _Judge
) -> Verdict:
    """A rate or connection limit refused some notifications and every other one arrived: the
    gateway throttles the probe. Nothing got through at all: nothing proves that it delivers,
    so that stays critical, as any refusal of everything is."""
    reply = Counter(_reply_text(n.submission) for n in limited if n.submission).most_common(1)
    quoted = reply[0][0] if reply else "no reply kept"
    fewer = (
        "open fewer connections (lower --concurrency, or raise --per-session up to the "
        "gateway's per-connection limit)"
        if "connection" in quoted.lower()
        else "send slower (lower --max-rate, or a smaller --count)"
    )
    advice = f"{fewer}, or exempt the probe's address from the gateway's limit"
    if not through:
        return verdict(
            Pattern.THROTTLED,
            Severity.CRITICAL,
            f"the gateway refused all {len(limited)} notifications with a rate or connection "
            f"limit ({quoted}): none got through, so delivery could not be checked; {advice}",
            [],
            throttled=len(limited),
        )
    return verdict(
        Pattern.THROTTLED,
        Severity.WARNING,
        f"the gateway's rate or connection limit refused {len(limited)} of "
        f"{len(limited) + len(through)} notifications ({quoted}); the {len(through)} it let "
        f"through were all delivered; {advice}",
        [
            f"delivered: {seq_ranges(n.seq for n in through)} "
            f"({_latency_line([n.latency_s for n in through if n.latency_s is not None])})"
        ],
        throttled=len(limited),
    )


def _limit_lines(limited: Sequence[Notification]) -> list[str]:
    """Notifications a limit refused, grouped by reply: neither delivered nor lost."""
    groups: dict[str, list[int]] = {}
    for n in limited:
        if n.submission is not None:
            groups.setdefault(n.submission.describe(), []).append(n.seq)
    return [
        f"seq {seq_ranges(seqs)}: refused by a rate or connection limit: {text}"
        + (" (first shown)" if len(seqs) > 1 else "")
        for text, seqs in groups.items()
    ]


_UNREACHABLE_CAUSE = {
    ErrorKind.DNS: Cause.DNS,
    ErrorKind.CONNECTION_REFUSED: Cause.CONNECTION_REFUSED,
    ErrorKind.TLS: Cause.TLS,
    ErrorKind.TIMEOUT: Cause.TIMEOUT,  # silence at the TCP handshake
}


def _broken(submissions: Sequence[Submission]) -> bool:
    """Nothing accepted, and what the gateway said is not SMTP: a broken gateway, not one that
    refuses. So when it refused nothing at all (the rest got no answer), or when it ended on
    such replies, MIN_STALL_RUN in a row or all of them (in the order it answered), as a hung
    gateway ends on silence. A refusing gateway with a stray reply that is not SMTP, or that
    refused again after one, is still refusing: `all_refused`, the reply named apart."""
    if not any(s.not_smtp for s in submissions):
        return False
    if not any(s.refused for s in submissions):
        return True
    tail = len(list(takewhile(lambda s: s.not_smtp, reversed(submissions))))
    return tail >= MIN_STALL_RUN


def _broken_summary(submissions: Sequence[Submission]) -> str:
    """The step(s) the gateway answered what is not SMTP at, and the most frequent such
    reply; refusals and silences beside them named apart."""
    total = len(submissions)
    broken = [s for s in submissions if s.not_smtp]
    where = " and ".join(dict.fromkeys(s.stage.upper() for s in broken))
    if len(broken) == total:
        top = Counter(s.describe() for s in broken).most_common(1)[0][0]
        return (
            f"the gateway answered all {total} notifications at {where} with a reply that is "
            f"not SMTP ({top}): it refused none and accepted none"
        )
    refused = "ended on" if any(s.refused for s in submissions) else "refused none:"
    return (
        f"the gateway accepted none of the {total} notifications and {refused} replies that are "
        f"not SMTP at {where}: {'; '.join(_answer_parts(submissions))}"
    )


def _hung_up(submissions: Sequence[Submission]) -> bool:
    """Nothing accepted, and the gateway hung up: it took the connection, then closed it. The
    boundary with a refusing gateway is drawn as for replies that are not SMTP: it refused
    nothing (the rest got no answer), or it ended on hang-ups, MIN_STALL_RUN in a row (in the
    order it answered). A refusing gateway with a stray hang-up, or that refused again after
    one, is still refusing: `all_refused`, the hang-ups named apart."""
    if not any(s.hung_up for s in submissions):
        return False
    if not any(s.refused for s in submissions):
        return True
    tail = len(list(takewhile(lambda s: s.hung_up, reversed(submissions))))
    return tail >= MIN_STALL_RUN


_HUNG_UP_WHEN = {
    SmtpPhase.CONNECT: "at connect, before its greeting",
    SmtpPhase.GREETING: "at connect, before its greeting",
    SmtpPhase.DATA: "at DATA, before its 354",
    SmtpPhase.END_OF_DATA: "after the final dot, before its final reply",
}


def hung_up_when(phase: SmtpPhase) -> str:
    """Where in the session the gateway hung up, in words: at connect (before the greeting),
    after the greeting at a command, at DATA, or after the final dot."""
    return _HUNG_UP_WHEN.get(phase, f"after the greeting, at {phase.label.upper()}")


def _hung_up_summary(submissions: Sequence[Submission]) -> str:
    """Where the gateway hung up, and the most frequent error; refusals, replies that are not
    SMTP and silences beside the hang-ups named apart."""
    total = len(submissions)
    hung_up = [s for s in submissions if s.hung_up]
    where = " and ".join(
        dict.fromkeys(hung_up_when(s.hung_up_at or SmtpPhase.CONNECT) for s in hung_up)
    )
    if len(hung_up) == total:
        top = Counter(s.describe() for s in hung_up).most_common(1)[0][0]
        return (
            f"the gateway hung up on all {total} notifications {where} ({top}): it refused "
            "none and accepted none"
        )
    how = (
        "ended by hanging up" if any(s.refused for s in submissions) else "refused none; it hung up"
    )
    return (
        f"the gateway accepted none of the {total} notifications and {how} {where}: "
        f"{'; '.join(_answer_parts(submissions))}"
    )


def _refused_summary(submissions: Sequence[Submission]) -> str:
    """Temporary (4xx: try later) and permanent (5xx: policy, hard failure) refusals named
    apart; what got no reply at all, one that is not SMTP, or a hang-up, is not called a
    refusal. Every submission is in exactly one of the groups, whatever the mix."""
    total = len(submissions)
    refusals = _refusals(submissions)
    if all(s.refused for s in submissions) and len(refusals) == 1:
        how, replies = refusals[0]
        return (
            f"the gateway refused all {total} notifications {how} ({replies.most_common(1)[0][0]})"
        )
    if all(s.refused for s in submissions):
        described = [f"{sum(r.values())} {how} ({_top(r)})" for how, r in refusals]
        return f"the gateway refused all {total} notifications: {', '.join(described)}"
    return (
        f"the gateway accepted none of the {total} notifications: "
        f"{'; '.join(_answer_parts(submissions))}"
    )


def _refusals(submissions: Sequence[Submission]) -> list[tuple[str, Counter[str]]]:
    temporary = Counter(
        _reply_text(s) for s in submissions if s.refused and not s.reply_is_permanent
    )
    permanent = Counter(_reply_text(s) for s in submissions if s.reply_is_permanent)
    return [(how, r) for how, r in (("temporarily", temporary), ("permanently", permanent)) if r]


def _answer_parts(submissions: Sequence[Submission]) -> list[str]:
    """What became of each submission, in four groups, each with its most frequent reply:
    refused (4xx apart from 5xx), a reply that is not SMTP, hung up on, no SMTP answer."""
    parts = [f"refused {sum(r.values())} {how} ({_top(r)})" for how, r in _refusals(submissions)]
    broken = Counter(s.describe() for s in submissions if s.not_smtp)
    if broken:
        parts.append(f"{sum(broken.values())} got a reply that is not SMTP ({_top(broken)})")
    hung_up = Counter(s.describe() for s in submissions if s.hung_up)
    if hung_up:
        parts.append(f"{sum(hung_up.values())} hung up on ({_top(hung_up)})")
    silent = Counter(
        s.describe() for s in submissions if not (s.refused or s.not_smtp or s.hung_up)
    )
    if silent:
        parts.append(f"{sum(silent.values())} got no SMTP answer ({_top(silent)})")
    return parts


def _top(replies: Counter[str]) -> str:
    return replies.most_common(1)[0][0]


def _reply_text(s: Submission) -> str:
    return f"{s.stage.upper()} {s.reply}"


def _silent_tail(sent: Sequence[Notification]) -> list[Notification]:
    """The notifications, last in submission order, that got no answer at all, when among them
    is a stall and they prove the gateway stopped answering: at least MIN_STALL_RUN in a row, or
    every one sent. Otherwise none: a single stall amid answers is a loss, judged as such."""
    tail: list[Notification] = []
    for n in sorted(sent, key=lambda n: n.seq, reverse=True):
        if n.submission is None or n.submission.answered:
            break
        tail.append(n)
    stalled = any(n.submission and n.submission.stalled for n in tail)
    if stalled and (len(tail) >= MIN_STALL_RUN or len(tail) == len(sent)):
        return tail[::-1]
    return []


def _stalled(
    sent: list[Notification],
    delivered: list[Notification],
    tail: list[Notification],
    not_attempted: int,
    verdict: _Judge,
) -> Verdict:
    phases: dict[SmtpPhase, list[int]] = {}
    for n in sent:
        if n.submission and n.submission.stalled_at and n.submission.stalled:
            phases.setdefault(n.submission.stalled_at, []).append(n.seq)
    stalls = sum(len(seqs) for seqs in phases.values())
    where = " and ".join(phase.label for phase in phases)
    after = f"delivered {len(delivered)}, then " if delivered else ""
    skipped = f"; {not_attempted} not attempted" if not_attempted else ""
    evidence = [
        f"{len(seqs)} stalled at {phase.label} (seq {seq_ranges(seqs)}): the gateway took the "
        "connection, then sent no reply within the step timeout"
        for phase, seqs in phases.items()
    ]
    silently_delivered = [n for n in sent if n.copies and n.submission and n.submission.stalled]
    if silently_delivered:
        evidence.append(
            f"seq {seq_ranges(n.seq for n in silently_delivered)} stalled yet reached the sink: "
            "the gateway took the message and never confirmed it"
        )
    if delivered:
        evidence.append(f"delivered: {seq_ranges(n.seq for n in delivered)}")
    evidence += _loss_lines(
        [n for n in sent if not n.copies and not (n.submission and n.submission.stalled)]
    )
    return verdict(
        Pattern.GATEWAY_STALLED,
        Severity.CRITICAL,
        f"the gateway {after}stopped answering at {where}: "
        + (
            f"all {stalls} notifications sent stalled"
            if stalls == len(sent)
            else f"{stalls} of {len(sent)} notifications stalled, and the last {len(tail)} in a "
            f"row got no answer{_hung_up_among(tail)}"
        )
        + skipped,
        evidence,
    )


def _hung_up_among(tail: Sequence[Notification]) -> str:
    """The hang-ups in a stalled gateway's silent tail, named: the gateway closed those."""
    hung_up = sum(1 for n in tail if n.submission and n.submission.hung_up)
    return f" ({hung_up} of them hung up on)" if hung_up else ""


def _partial(
    sent: list[Notification],
    delivered: list[Notification],
    lost: list[Notification],
    thresholds: Thresholds,
    verdict: _Judge,
) -> Verdict:
    k = len(delivered)
    is_prefix = all(n.copies for n in sent[:k])
    lost_accepted = [n for n in lost if n.submission and n.submission.accepted]
    lost_hung_up = [n for n in lost if n.submission and n.submission.hung_up]
    lost_refused = [
        n for n in lost if not (n.submission and n.submission.accepted) and n not in lost_hung_up
    ]
    how = _how_lost(lost)
    delivered_lines = [
        f"delivered: {seq_ranges(n.seq for n in delivered)} "
        f"({_latency_line([n.latency_s for n in delivered if n.latency_s is not None])})"
    ]
    if is_prefix and k == 1:
        first = delivered[0]
        how_many = {"lost_accepted": len(lost_accepted), "lost_refused": len(lost_refused)}
        if lost_hung_up:  # apart from the refused, so an outage of hang-ups is told as one
            how_many["lost_hung_up"] = len(lost_hung_up)
        return verdict(
            Pattern.FIRST_ONLY,
            Severity.CRITICAL,
            f"only the first of {len(sent)} notifications was delivered; the other "
            f"{len(lost)} were {how}",
            [
                f"first notification (seq {first.seq}) delivered in {first.latency_s or 0:.3f} s"
                f" after {_describe_submission(first)}",
                *_loss_lines(lost),
            ],
            None,
            **how_many,
        )
    if is_prefix and len(lost) >= 2:
        return verdict(
            Pattern.DEGRADED_AFTER_K,
            Severity.CRITICAL,
            f"the first {k} of {len(sent)} notifications were delivered, then every later one "
            f"was {how}",
            delivered_lines + _loss_lines(lost),
            k=k,
        )
    loss = len(lost) / len(sent)
    severity = Severity.WARNING if loss <= thresholds.minor_loss else Severity.CRITICAL
    protocol = all(n.submission and n.submission.not_smtp for n in lost)
    hung_up = all(n.submission and n.submission.hung_up for n in lost)
    return verdict(
        Pattern.INTERMITTENT,
        severity,
        f"{k} of {len(sent)} notifications delivered; {len(lost)} {how} at scattered positions "
        f"({loss:.0%} loss)",
        delivered_lines + _loss_lines(lost),
        Cause.PROTOCOL if protocol else Cause.RESET if hung_up else None,
    )


def _how_lost(lost: Sequence[Notification]) -> str:
    kinds = Counter(_loss_kind(n) for n in lost)
    if len(kinds) > 1:
        return "lost (" + ", ".join(f"{count} {kind}" for kind, count in kinds.items()) + ")"
    kind = next(iter(kinds))
    if kind.startswith("bounced"):
        return f"accepted by the gateway (2xx) and came back {kind}"
    if kind == "accepted and never delivered":
        return "accepted by the gateway (2xx) and never delivered"
    if kind.startswith("refused"):
        return f"refused at submission, {kind.split(' ', 1)[1]}"
    return kind


def _loss_kind(n: Notification) -> str:
    s = n.submission
    if s is None:
        return "never submitted"
    if n.bounced and n.bounce is not None:
        return f"bounced ({n.bounce.status or 'no status given'})"
    if s.accepted:
        return "accepted and never delivered"
    if s.refused:
        return "refused permanently (5xx)" if s.reply_is_permanent else "refused temporarily (4xx)"
    if s.stalled_at is not None and s.stalled:
        return f"stalled at {s.stalled_at.label}"
    if s.not_smtp:
        return "answered with a reply that is not SMTP"
    if s.hung_up_at is not None:
        return f"hung up on {hung_up_when(s.hung_up_at)}"
    return "failed without an SMTP answer"


def _loss_lines(lost: Sequence[Notification]) -> list[str]:
    """Group lost notifications by what the gateway said about them."""
    groups: dict[tuple[object, ...], tuple[str, list[int]]] = {}
    for n in lost:
        s = n.submission
        bounce = n.bounce
        if s is None:
            key: tuple[object, ...] = ("never submitted",)
            text = "never submitted"
        elif n.bounced and bounce is not None:
            key = ("bounced", bounce.status, bounce.diagnostic, bounce.remote_mta)
            text = f"accepted, then bounced: {bounce.describe()}"
        elif s.accepted and s.reply is not None:
            key = ("accepted", s.reply.code, s.reply.enhanced)
            text = f"accepted ({s.reply}) but never delivered"
        elif s.refused:
            key = ("refused", s.stage, s.reply.code if s.reply else None)
            how = "permanently" if s.reply_is_permanent else "temporarily"
            text = f"refused {how}: {s.describe()}"
        else:
            key = ("failed", s.stage, s.stalled_at, s.error_kind, s.hung_up_at)
            text = (
                f"stalled: {s.describe()}"
                if s.stalled
                else f"protocol error: {s.describe()}"
                if s.not_smtp
                else f"hung up {hung_up_when(s.hung_up_at)}: {s.describe()}"
                if s.hung_up_at is not None
                else f"failed: {s.describe()}"
            )
        groups.setdefault(key, (text, []))[1].append(n.seq)
    lines = []
    for text, seqs in groups.values():
        example = " (first shown)" if len(seqs) > 1 else ""
        lines.append(f"seq {seq_ranges(seqs)}: {text}{example}")
    return lines


def _outcome_lines(sent: Sequence[Notification]) -> list[str]:
    return _loss_lines([n for n in sent if not n.copies])


def _describe_submission(n: Notification | None) -> str:
    if n is None or n.submission is None:
        return "never submitted"
    return n.submission.describe()


def _latency_line(latencies: Sequence[float]) -> str:
    if not latencies:
        return "no latency measured"
    return (
        f"latency median {statistics.median(latencies):.3f} s, "
        f"max {max(latencies):.3f} s over {len(latencies)} deliveries"
    )


def _context_lines(record: RunRecord, sink_verified: bool | None) -> list[str]:
    lines = []
    skipped = _not_attempted(record)
    planned = len(record.burst) - len(skipped)
    attempted = sum(1 for n in record.burst if n.attempted)
    if attempted < planned:
        lines.append(f"run cut off: {attempted} of {planned} planned notifications were sent")
    if skipped:
        lines.append(
            f"{len(skipped)} not attempted (seq {seq_ranges(n.seq for n in skipped)}), neither "
            f"refused nor lost: {skipped[0].not_attempted}"
        )
    if sink_verified is True:
        lines.append("sink verified: the control message sent straight to the sink arrived")
    elif sink_verified is None:
        lines.append("sink not verified: no control message was sent in this run")
    if record.unmatched_bounces:
        lines.append(
            f"{record.unmatched_bounces} bounce message(s) came back to this run's sender "
            "naming none of its notifications: kept, not judged by"
        )
    return lines


def _delayed_lines(delayed: Sequence[Notification]) -> list[str]:
    """Delayed notifications, grouped by what the report said: neither delivered nor lost."""
    groups: dict[str, list[int]] = {}
    for n in delayed:
        if n.bounce is not None:
            groups.setdefault(n.bounce.describe(), []).append(n.seq)
    return [
        f"seq {seq_ranges(seqs)}: {text}; not judged until it arrives or fails"
        for text, seqs in groups.items()
    ]


def _top_bounce(notifications: Sequence[Notification]) -> str:
    """The most common report among `notifications`, with its status first."""
    reports = Counter(n.bounce.describe() for n in notifications if n.bounce is not None)
    if not reports:
        return "no report"
    text, count = reports.most_common(1)[0]
    return text if count == len(notifications) else f"{count}× {text}"


def _not_attempted(record: RunRecord) -> list[Notification]:
    return [n for n in record.burst if not n.attempted and n.not_attempted is not None]


def seq_ranges(seqs: Iterable[int]) -> str:
    """Compact sequence numbers for humans: 2-5, 7, 9-10."""
    ordered = sorted(set(seqs))
    parts: list[str] = []
    start = prev = None
    for seq in ordered:
        if prev is not None and seq == prev + 1:
            prev = seq
            continue
        if start is not None:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        start = prev = seq
    if start is not None:
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(parts)
