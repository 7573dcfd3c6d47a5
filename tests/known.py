"""What a test knows is there, said once for the type checker: a notification it knows was
attempted has a submission, a run it knows was judged has a verdict in the ledger."""

from __future__ import annotations

from typing import Any

from probe.records import Notification, Submission


def submitted(note: Notification) -> Submission:
    """`note.submission`, failing the test if `note` was never attempted."""
    assert note.submission is not None, f"seq {note.seq} was not attempted: {note.not_attempted}"
    return note.submission


def kept(verdict: dict[str, Any] | None) -> dict[str, Any]:
    """A verdict the ledger holds (`stored_verdict`, `corrected_verdict`), failing the test if
    it holds none."""
    assert verdict is not None, "the ledger holds no such verdict"
    return verdict
