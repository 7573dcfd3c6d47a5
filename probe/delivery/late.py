"""Late deliveries: a run judged again with the mail that arrived after its verdict.

A sink that keeps running (`notifyprobe sink`, `notifyprobe watch`) records every notification
the gateway delivers, however late. `notifyprobe verdict RUN` and each new `watch` run look
back: when the run's pattern changes, the corrected verdict is kept beside the original one
(which stays as it was given), with the time of the change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from probe.ledger import Ledger
from probe.records import RunRecord
from probe.verdict import Pattern, Revision, revise


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
class Revisited:
    record: RunRecord
    revision: Revision | None  # None: no verdict was stored at the end of the run to compare
    newly_corrected: bool = False  # this look stored a correction no earlier look had stored
    original: StoredVerdict | None = None  # given when the run ended (or was cut off)
    correction: StoredVerdict | None = None  # the latest stored correction, if any


def look_back(ledger: Ledger, record: RunRecord) -> Revision | None:
    """The run judged again against the verdict stored at its end, read-only (None: no verdict
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


def revisit(ledger: Ledger, run_id: str, now: float) -> Revisited:
    """Re-judge a run and keep a new correction in the ledger."""
    record = ledger.load(run_id)
    revision = look_back(ledger, record)
    if revision is None:
        return Revisited(record, None)
    kept = StoredVerdict.of(ledger.stored_verdict(run_id), record.run.finished_at)
    corrected = ledger.corrected_verdict(run_id)
    newly = revision.changed and (
        corrected is None or corrected.get("pattern") != revision.current.pattern.value
    )
    if newly:
        corrected = revision.current.to_dict()
        ledger.correct_verdict(run_id, json.dumps(corrected), now)
    correction = StoredVerdict.of(corrected, ledger.corrected_at(run_id))
    return Revisited(record, revision, newly, kept, correction)
