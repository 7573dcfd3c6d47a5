"""Verdict history: what the ledger kept of a verdict, and the run judged again since.

A sink that keeps running (`notifyprobe sink`, `watch`) records what the gateway delivers after
a run's settle window gave up on it, and the bounces that come back for it. They do not rewrite
history (the verdict given at the end of the run is what the operator saw and acted on), but
they say whether a loss was a delay, or what it was. Two words, one concept each:

- a **revision** is the run judged again with everything recorded by now, against the verdict
  given when it ended (`revise`, pure; `revision_of` reads the ledger and writes nothing);
- a **correction** is a revision that changed the pattern, kept in the ledger beside the
  original verdict with the time it was found (`revise_and_keep`), shown by `verdict RUN`,
  counted by watch's metrics and annotated by its alert.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Literal

from probe.ledger import Ledger
from probe.records import ProcessStart, RunGlance, RunRecord
from probe.verdict import COMPLETE, Cause, Pattern, Severity, Verdict, judge_recorded


@dataclass(frozen=True)
class Revision:
    """A run judged again with the mail and the bounces that reached the sink after its
    verdict."""

    original: Pattern
    current: Verdict
    late: int  # burst notifications whose first copy arrived after the verdict
    last_late_s: float | None  # when the last of them arrived, seconds after the run started
    after_verdict_s: float | None  # and how long after the verdict
    late_bounces: int = 0  # burst notifications a report first came back about after it

    @property
    def changed(self) -> bool:
        return self.current.pattern is not self.original

    def summary(self) -> str:
        if not self.late:
            head = "no notification arrived after the verdict"
        else:
            head = (
                f"{self.late} notification{'s' if self.late > 1 else ''} arrived after the "
                f"verdict, the last at +{self.last_late_s:.1f} s ({self.after_verdict_s:.1f} s "
                "after the verdict)"
            )
        if self.late_bounces:
            head += f"; a report came back after it about {self.late_bounces} more"
        if not self.changed:
            return f"{head}: the verdict stays {self.original.value}"
        change = f"{self.original.value} → {self.current.pattern.value}"
        if not self.late:
            return f"{head}: what came back changes the verdict ({change})"
        if self.current.pattern in COMPLETE:
            return f"{head}: the loss was a delay ({change})"
        return f"{head}: part of the loss was a delay ({change})"

    def to_dict(self) -> dict[str, object]:
        return {
            "original": self.original.value,
            "current": self.current.pattern.value,
            "changed": self.changed,
            "late": self.late,
            "last_late_s": self.last_late_s,
            "after_verdict_s": self.after_verdict_s,
            "late_bounces": self.late_bounces,
            "summary": self.summary(),
        }


def revise(record: RunRecord, original: Pattern, judged_at: float) -> Revision:
    """Judge `record` again, with everything the sink has recorded by now, against the
    `original` pattern given at `judged_at`."""
    late = [
        n.delivered_at
        for n in record.burst
        if n.delivered_at is not None and n.delivered_at > judged_at
    ]
    last = max(late, default=None)
    late_bounces = sum(
        1 for n in record.burst if n.bounces and min(b.received_at for b in n.bounces) > judged_at
    )
    return Revision(
        original=original,
        current=judge_recorded(record),
        late=len(late),
        last_late_s=last - record.run.started_at if last is not None else None,
        after_verdict_s=last - judged_at if last is not None else None,
        late_bounces=late_bounces,
    )


@dataclass(frozen=True)
class StoredVerdict:
    """A verdict as the ledger keeps it: the pattern and severity, and when it was given."""

    pattern: str
    severity: str
    at: float | None

    @classmethod
    def of(cls, data: dict[str, object] | None, at: float | None) -> StoredVerdict | None:
        if data is None:
            return None
        return cls(str(data.get("pattern", "?")), str(data.get("severity", "?")), at)


@dataclass(frozen=True)
class Revised:
    """A run judged again, and what the ledger keeps of its verdicts."""

    record: RunRecord
    revision: Revision | None  # None: no verdict was stored at the end of the run to compare
    newly_corrected: bool = False  # this revision stored a correction no earlier one had
    original: StoredVerdict | None = None  # given when the run ended (or was cut off)
    correction: StoredVerdict | None = None  # the latest stored correction, if any

    @property
    def verdict(self) -> Verdict:
        """The run's verdict now: revised, or judged from the ledger when none was stored."""
        return self.revision.current if self.revision is not None else judge_recorded(self.record)


def revision_of(ledger: Ledger, record: RunRecord) -> Revision | None:
    """The run judged again against the verdict stored at its end, read only (None: no verdict
    was stored to compare with)."""
    stored = ledger.stored_verdict(record.run.run_id)
    judged_at = record.run.finished_at
    try:
        original = Pattern(str(stored["pattern"])) if stored else None
    except ValueError:  # a pattern this version does not know: nothing to compare with
        original = None
    if original is None or judged_at is None:
        return None
    return revise(record, original, judged_at)


def kept_verdicts(
    ledger: Ledger, record: RunRecord
) -> tuple[StoredVerdict | None, StoredVerdict | None]:
    """The verdict given when the run ended and its latest correction, as the ledger keeps
    them (read only)."""
    run_id = record.run.run_id
    original = StoredVerdict.of(ledger.stored_verdict(run_id), record.run.finished_at)
    correction = StoredVerdict.of(ledger.corrected_verdict(run_id), ledger.corrected_at(run_id))
    return original, correction


def revise_and_keep(ledger: Ledger, run_id: str, now: float) -> Revised:
    """Judge a run again and, when its pattern changed since the last correction kept, keep the
    new one with the time `now`."""
    record = ledger.load(run_id)
    revision = revision_of(ledger, record)
    if revision is None:
        return Revised(record, None)
    corrected = ledger.corrected_verdict(run_id)
    newly = revision.changed and (
        corrected is None or corrected.get("pattern") != revision.current.pattern.value
    )
    if newly:
        ledger.store_correction(run_id, json.dumps(revision.current.to_dict()), now)
    original, correction = kept_verdicts(ledger, record)
    return Revised(record, revision, newly, original, correction)


# -- the outage story: one outage, one story ----------------------------------------------------

FailedAs = Literal["lost", "bounced", "refused", "hung_up"]
NOTHING_THROUGH: dict[Pattern, FailedAs] = {
    Pattern.NONE_DELIVERED: "lost",
    Pattern.ALL_BOUNCED: "bounced",
    Pattern.ALL_REFUSED: "refused",
    Pattern.GATEWAY_HUNG_UP: "hung_up",  # its cause, reset, says only that: no setting apart
}
OUTAGE_LOOK_BACK = 10_000  # runs an outage story walks back at most to find its first run
# What a greeting says that changes without a restart: a date, a time, a zone, a long number.
_GREETING_NOISE = re.compile(
    r"\b(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*\b,?"
    r"|\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\b"
    r"|\d{4}-\d{2}-\d{2}(?:[t ]\d{2}:\d{2}(?::\d{2})?(?:\.\d+)?)?(?:z|[+-]\d{2}:?\d{2})?"
    r"|\d{1,2}:\d{2}(?::\d{2})?(?:\.\d+)?|[+-]\d{4}\b|\b(?:utc|gmt|[a-z]st|[a-z]dt)\b"
    r"|(?<![\w.])(?:\d{1,2}|(?:19|20)\d{2})(?![\w.:])|\b[0-9a-f]{6,}\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Restart:
    """A restart of the gateway the probe saw between two runs."""

    after_run: str  # the earlier run
    before_run: str  # the later run
    how: str  # what showed it, in words
    at: float | None = None  # when the restarted process started, when a start time showed it

    def to_dict(self) -> dict[str, object]:
        return {
            "after_run": self.after_run,
            "before_run": self.before_run,
            "how": self.how,
            "at": self.at,
        }


@dataclass(frozen=True)
class Outage:
    """A first_only outage this run continues: the run that first showed it, and the runs
    since, each of which delivered nothing, failed the same way, with no restart seen."""

    since_run: str
    since_at: float
    runs: tuple[str, ...]  # the runs since `since_run` that delivered nothing, this one last
    this_run: Pattern  # what the run shows on its own
    failed_as: FailedAs
    restart_seeable: bool  # the probe saw the gateway's process starts or its greeting

    @property
    def line(self) -> str:
        seen = "no restart seen" if self.restart_seeable else "no restart seen (none could be)"
        return (
            f"one notification delivered since {self.since_run} at {utc(self.since_at)}; "
            f"none since; {seen}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "pattern": Pattern.FIRST_ONLY.value,
            "since_run": self.since_run,
            "since_at": self.since_at,
            "runs_since": len(self.runs),
            "this_run_pattern": self.this_run.value,
            "failed_as": self.failed_as,
            "restart_seeable": self.restart_seeable,
            "summary": self.line,
        }


@dataclass(frozen=True)
class Story:
    """What a run tells with the runs before it: the outage it continues, if any, and a restart
    of the gateway seen since the run before it (shown on the timeline either way)."""

    outage: Outage | None = None
    restart: Restart | None = None

    def timeline(self) -> list[str]:
        lines = []
        if self.outage is not None:
            o = self.outage
            lines.append(f"{utc(o.since_at)}  {o.since_run}  first_only: the outage starts")
            if len(o.runs) > 1:
                lines.append(f"{len(o.runs) - 1} run(s) since delivered nothing, no restart seen")
            lines.append(f"this run {o.runs[-1]}  {o.this_run.value}: continues it")
        if self.restart is not None:
            at = f"{utc(self.restart.at)}  " if self.restart.at is not None else ""
            lines.append(f"{at}gateway restart seen before this run: {self.restart.how}")
        return lines

    def to_dict(self) -> dict[str, object]:
        return {
            "outage": self.outage.to_dict() if self.outage else None,
            "restart": self.restart.to_dict() if self.restart else None,
            "timeline": self.timeline(),
        }


def failed_as(verdict: dict[str, object] | None) -> FailedAs | None:
    """How what a run did not deliver failed, from its stored verdict: accepted and lost,
    bounced, refused, or hung up on; None when mixed, when a cause (credentials, protocol) sets
    it apart, or when the run's pattern is neither first_only nor nothing delivered. (A
    first_only run kept before hang-ups were counted apart counted them refused, as the
    all_refused runs of its time did.)"""
    if not verdict or verdict.get("cause") not in (None, Cause.RESET.value):
        return None
    pattern = _pattern(verdict)
    if pattern in NOTHING_THROUGH:
        return NOTHING_THROUGH[pattern]
    if pattern is not Pattern.FIRST_ONLY:
        return None
    accepted, refused = _int(verdict, "lost_accepted"), _int(verdict, "lost_refused")
    bounced, hung_up = _int(verdict, "bounced"), _int(verdict, "lost_hung_up")
    if hung_up and not accepted and not refused:
        return "hung_up"
    if hung_up:
        return None
    if refused and not accepted:
        return "refused"
    if accepted and not refused:
        return "bounced" if bounced == accepted else "lost" if not bounced else None
    return None


def normal_greeting(greeting: str | None) -> str | None:
    """A greeting without what changes on every connection (dates, times, counters): what is
    left changes when the gateway restarts with another version, name or configuration."""
    if greeting is None:
        return None
    return " ".join(_GREETING_NOISE.sub(" ", greeting).split()).lower() or None


def restart_between(older: RunGlance, newer: RunGlance) -> Restart | None:
    """A restart of the gateway the probe saw between two runs: a process or service started
    after the older run began (or its instances changed), or the gateway's greeting changed."""
    fresh = [s for s in newer.starts if s.started_at > older.started_at]
    if older.starts and newer.starts:
        before = {(s.name, s.pid, round(s.started_at, 2)) for s in older.starts}
        fresh += [
            s
            for s in newer.starts
            if (s.name, s.pid, round(s.started_at, 2)) not in before and s not in fresh
        ]
    if fresh:
        first = min(fresh, key=lambda s: s.started_at)
        how = f"{first.name} (pid {first.pid}) started at {utc(first.started_at)}"
        return Restart(older.run_id, newer.run_id, how, first.started_at)
    was, now = normal_greeting(older.greeting), normal_greeting(newer.greeting)
    if was is not None and now is not None and was != now:
        how = f"the gateway's greeting changed from {older.greeting!r} to {newer.greeting!r}"
        return Restart(older.run_id, newer.run_id, how)
    return None


def tell(
    current: RunGlance,
    earlier: Iterable[RunGlance],
    known: Outage | None = None,
    look_back: int = OUTAGE_LOOK_BACK,
) -> Story:
    """The run's story with the runs before it (newest first).

    A run that delivered nothing continues a first_only outage when, walking back, every run
    up to a first_only one delivered nothing and failed the same way as that run's lost
    notifications, and no restart was seen between any two of them. Anything else is a new
    story, told on its own: a delivery, a restart seen, another failure (unreachable, stalled,
    throttled, a refusal of credentials), an inconclusive run other than one cut off with
    nothing delivered (it proves nothing either way), or no first_only run within
    `look_back`. A healthy run is never part of one. `known`: the outage the previous run
    continued, as the caller remembers it; the walk may stop at its runs.
    """
    runs = iter(earlier)
    previous = next(runs, None)
    restart = restart_between(previous, current) if previous is not None else None
    failed = failed_as(current.verdict)
    pattern = _pattern(current.verdict)
    if current.delivered or pattern not in NOTHING_THROUGH or failed is None or restart:
        return Story(None, restart)
    chain = [current.run_id]
    seeable = _seeable(current)
    newer, walked = current, 0
    older: RunGlance | None = previous
    while older is not None and walked < look_back:
        walked += 1
        if older is not previous and restart_between(older, newer) is not None:
            return Story(None, restart)
        seeable = seeable or _seeable(older)
        was = _pattern(older.verdict)
        if was is Pattern.FIRST_ONLY:
            if failed_as(older.verdict) != failed:
                return Story(None, restart)
            outage = Outage(
                older.run_id, older.started_at, tuple(reversed(chain)), pattern, failed, seeable
            )
            return Story(outage, restart)
        through = was in NOTHING_THROUGH and failed_as(older.verdict) == failed
        cut_empty = was is Pattern.INCONCLUSIVE and _cut_off(older.verdict)
        if older.delivered or not (through or cut_empty):
            return Story(None, restart)
        if known is not None and through and older.run_id == known.runs[-1]:
            if known.failed_as != failed:
                return Story(None, restart)
            outage = Outage(
                known.since_run,
                known.since_at,
                (*known.runs, *reversed(chain)),
                pattern,
                failed,
                seeable or known.restart_seeable,
            )
            return Story(outage, restart)
        if through:
            chain.append(older.run_id)
        newer, older = older, next(runs, None)
    return Story(None, restart)


def as_told(verdict: Verdict, story: Story) -> Verdict:
    """The verdict a run is reported with: its own, or, when it continues a first_only outage,
    first_only since the run that first showed it (same pattern, same severity), with what the
    run showed on its own kept first among the evidence."""
    outage = story.outage
    if outage is None:
        return verdict
    return replace(
        verdict,
        pattern=Pattern.FIRST_ONLY,
        severity=Severity.CRITICAL,
        summary=outage.line,
        evidence=(
            f"this run on its own: {verdict.pattern.value}: {verdict.summary}",
            f"the outage started with run {outage.since_run} at {utc(outage.since_at)} "
            f"(first_only); {len(outage.runs)} run(s) since delivered nothing, "
            f"{outage.failed_as.replace('_', ' ')} like its lost notifications",
            *verdict.evidence,
        ),
        details={**verdict.details, "outage_runs": len(outage.runs)},
    )


def glance_of(record: RunRecord, verdict: Verdict, starts: tuple[ProcessStart, ...]) -> RunGlance:
    """The run being told, at a glance like the runs before it."""
    submitted = sorted(
        (n.submission for n in record.burst if n.submission is not None), key=lambda s: s.started_at
    )
    greeting = None
    if submitted and submitted[0].steps and submitted[0].steps[0].command.startswith("connect"):
        reply = submitted[0].steps[0].reply
        greeting = reply.text if reply is not None else None
    return RunGlance(
        run_id=record.run.run_id,
        started_at=record.run.started_at,
        finished_at=record.run.finished_at,
        verdict=verdict.to_dict(),
        delivered=sum(1 for n in record.burst if n.copies),
        greeting=greeting,
        starts=starts,
    )


def story_of(
    ledger: Ledger, record: RunRecord, verdict: Verdict, known: Outage | None = None
) -> Story:
    """The run's story, read from the ledger (read only): the runs before it of the same
    target, walked back a page at a time until the story is told."""
    run = record.run
    starts = tuple(ledger.starts_of([run.run_id]).get(run.run_id, ()))

    def earlier() -> Iterator[RunGlance]:
        offset, page = 0, 2  # most stories end at the run before: read few, then more
        while offset < OUTAGE_LOOK_BACK:
            glances = ledger.glances_before(run, page, offset)
            yield from glances
            if len(glances) < page:
                return
            offset, page = offset + page, min(page * 8, 500)

    return tell(glance_of(record, verdict, starts), earlier(), known)


def utc(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _pattern(verdict: dict[str, object] | None) -> Pattern | None:
    try:
        return Pattern(str(verdict.get("pattern"))) if verdict else None
    except ValueError:
        return None


def _int(verdict: dict[str, object], key: str) -> int:
    value = verdict.get(key)
    return value if isinstance(value, int) else 0


def _cut_off(verdict: dict[str, object] | None) -> bool:
    return bool(verdict) and verdict is not None and verdict.get("cause") == Cause.CUT_OFF.value


def _seeable(glance: RunGlance) -> bool:
    return bool(glance.starts) or normal_greeting(glance.greeting) is not None
