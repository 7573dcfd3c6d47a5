"""The verdict: which delivery pattern a run shows, with the evidence that proves it.

`classify` is a pure function of a `RunRecord` (no clock, no I/O), so a run cut off mid-burst is
judged later exactly as it would have been live, and every pattern is unit-tested on crafted data.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Protocol

from probe.records import Notification, RunRecord


class Pattern(str, Enum):
    HEALTHY = "healthy"
    FIRST_ONLY = "first_only"
    DEGRADED_AFTER_K = "degraded_after_k"
    INTERMITTENT = "intermittent"
    NONE_DELIVERED = "none_delivered"
    GATEWAY_UNREACHABLE = "gateway_unreachable"
    ALL_REJECTED = "all_rejected"
    SLOW = "slow"
    DUPLICATED = "duplicated"
    INCONCLUSIVE = "inconclusive"  # the probe could not judge: nothing sent, or its sink unproven


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
class Verdict:
    pattern: Pattern
    severity: Severity
    summary: str
    evidence: tuple[str, ...] = ()
    sent: int = 0
    accepted: int = 0
    delivered: int = 0
    sink_verified: bool | None = None
    details: dict[str, int] = field(default_factory=dict)  # e.g. {"k": 3} for degraded_after_k

    def to_dict(self) -> dict[str, object]:
        return {
            "pattern": self.pattern.value,
            "severity": self.severity.name.lower(),
            "summary": self.summary,
            "evidence": list(self.evidence),
            "sink_verified": self.sink_verified,
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
        **details: int,
    ) -> Verdict: ...


def classify(record: RunRecord, thresholds: Thresholds = Thresholds()) -> Verdict:
    """Judge a run from its notifications alone."""
    sent = gateway_order(n for n in record.burst if n.attempted)
    accepted = [n for n in sent if n.submission and n.submission.accepted]
    delivered = [n for n in sent if n.copies]
    lost = [n for n in sent if not n.copies]
    control = record.control
    sink_verified = None if control is None or not control.attempted else bool(control.copies)
    counts = {"sent": len(sent), "accepted": len(accepted), "delivered": len(delivered)}

    def verdict(
        pattern: Pattern, severity: Severity, summary: str, evidence: list[str], **details: int
    ) -> Verdict:
        evidence = evidence + _context_lines(record, sink_verified)
        return Verdict(
            pattern,
            severity,
            summary,
            tuple(evidence),
            **counts,
            sink_verified=sink_verified,
            details=details,
        )

    if not sent:
        planned = len(record.burst)
        return verdict(
            Pattern.INCONCLUSIVE,
            Severity.UNKNOWN,
            f"no notification was sent ({planned} planned): the run was cut off before it began",
            [],
        )
    if sink_verified is False and lost:
        return verdict(
            Pattern.INCONCLUSIVE,
            Severity.UNKNOWN,
            "the probe's own sink did not receive its control message; the losses cannot be "
            "blamed on the gateway",
            [f"control message (seq 0): {_describe_submission(control)}, never recorded by sink"]
            + _loss_lines(lost),
        )

    if not delivered:
        return _nothing_delivered(sent, accepted, verdict)

    if lost:
        return _partial(sent, delivered, lost, thresholds, verdict)

    latencies = [n.latency_s for n in sent if n.latency_s is not None]
    latency_line = _latency_line(latencies)
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
    """Judge a run again from the ledger, with the thresholds it was run with."""
    slow_after = record.run.options.get("slow_after_s", Thresholds.slow_after_s)
    try:
        thresholds = Thresholds(slow_after_s=float(str(slow_after)))
    except ValueError:
        thresholds = Thresholds()
    return classify(record, thresholds)


def gateway_order(notifications: Iterable[Notification]) -> list[Notification]:
    """Order in which the gateway answered: with several connections this is not seq order."""

    def key(n: Notification) -> tuple[float, int]:
        return (n.submission.finished_at if n.submission else float("inf"), n.seq)

    return sorted(notifications, key=key)


def _nothing_delivered(
    sent: list[Notification], accepted: list[Notification], verdict: _Judge
) -> Verdict:
    submissions = [n.submission for n in sent if n.submission]
    unreachable = [
        s
        for s in submissions
        if s.reply is None
        and (s.stage == "connect" or (s.error_kind is not None and s.error_kind.is_connect_failure))
    ]
    if len(unreachable) == len(sent):
        reasons = Counter(
            f"{s.error_kind.value if s.error_kind else 'error'}: {s.error}" for s in unreachable
        )
        top, _ = reasons.most_common(1)[0]
        return verdict(
            Pattern.GATEWAY_UNREACHABLE,
            Severity.CRITICAL,
            f"the gateway could not be reached ({top}) for all {len(sent)} notifications",
            [f"{count}× {reason}" for reason, count in reasons.most_common()],
        )
    if not accepted:
        return verdict(
            Pattern.ALL_REJECTED,
            Severity.CRITICAL,
            f"the gateway refused all {len(sent)} notifications",
            _outcome_lines(sent),
        )
    return verdict(
        Pattern.NONE_DELIVERED,
        Severity.CRITICAL,
        f"the gateway accepted {len(accepted)} of {len(sent)} notifications but none reached "
        "the sink",
        _outcome_lines(sent),
    )


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
    lost_refused = [n for n in lost if not (n.submission and n.submission.accepted)]
    how = _how_lost(lost_accepted, lost_refused)
    delivered_lines = [
        f"delivered: {seq_ranges(n.seq for n in delivered)} "
        f"({_latency_line([n.latency_s for n in delivered if n.latency_s is not None])})"
    ]
    if is_prefix and k == 1:
        first = delivered[0]
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
            lost_accepted=len(lost_accepted),
            lost_refused=len(lost_refused),
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
    return verdict(
        Pattern.INTERMITTENT,
        severity,
        f"{k} of {len(sent)} notifications delivered; {len(lost)} {how} at scattered positions "
        f"({loss:.0%} loss)",
        delivered_lines + _loss_lines(lost),
    )


def _how_lost(lost_accepted: Sequence[Notification], lost_refused: Sequence[Notification]) -> str:
    if lost_accepted and not lost_refused:
        return "accepted by the gateway (2xx) and never delivered"
    if lost_refused and not lost_accepted:
        return "refused at submission"
    return f"lost ({len(lost_accepted)} accepted and never delivered, {len(lost_refused)} refused)"


def _loss_lines(lost: Sequence[Notification]) -> list[str]:
    """Group lost notifications by what the gateway said about them."""
    groups: dict[tuple[object, ...], tuple[str, list[int]]] = {}
    for n in lost:
        s = n.submission
        if s is None:
            key: tuple[object, ...] = ("never submitted",)
            text = "never submitted"
        elif s.accepted and s.reply is not None:
            key = ("accepted", s.reply.code, s.reply.enhanced)
            text = f"accepted ({s.reply}) but never delivered"
        else:
            code = s.reply.code if s.reply else None
            key = ("refused", s.stage, code, s.error_kind)
            text = f"refused: {s.describe()}"
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
    planned = len(record.burst)
    attempted = sum(1 for n in record.burst if n.attempted)
    if attempted < planned:
        lines.append(f"run cut off: {attempted} of {planned} planned notifications were sent")
    if sink_verified is True:
        lines.append("sink verified: the control message sent straight to the sink arrived")
    elif sink_verified is None:
        lines.append("sink not verified: no control message was sent in this run")
    if record.bounces:
        lines.append(f"{record.bounces} bounce message(s) came back to the probe's sender")
    return lines


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
