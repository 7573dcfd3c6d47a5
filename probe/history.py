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
from dataclasses import dataclass

from probe.ledger import Ledger
from probe.records import RunRecord
from probe.verdict import COMPLETE, Pattern, Verdict, judge_recorded


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
    late = [n.delivered_at for n in record.burst
            if n.delivered_at is not None and n.delivered_at > judged_at]  # fmt: skip
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
