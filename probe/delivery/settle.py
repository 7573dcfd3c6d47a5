"""The settle window: how long missing mail must stay silent before it is declared lost.

Certainty before speed. A notification the gateway accepted but that has not arrived is lost
only once the missing ones have been silent for the whole window, silence counting from the
later of the end of the burst and the last delivery of this run. A healthy run does not wait at
all: it ends the moment every accepted notification has arrived.

Where the window comes from, in this order:

- **set by option** (`--settle`, the `settle` key of a watch target): the operator knows best;
- **learned** from this gateway's own history in the ledger, once it has `MIN_HEALTHY_RUNS`
  fully delivered runs: a multiple of the largest latency and of the largest gap between two
  deliveries those runs showed, never below a floor (`--grace`, 5.5 s: a slow spell of a few
  seconds is late, not lost) and never above the default. A gateway known to deliver in
  milliseconds is judged about 5.5 s after the burst; one known to deliver in batches keeps a
  window that outlasts its batches;
- **default** otherwise: long enough for a gateway that delivers the first notification at once
  and the rest when its queue runner wakes up to 10 s later (the first-only signature of a
  stale module must never be a queue runner misread).

The window never outlasts the hard cap (`--timeout`, counted from the end of the burst), which
also bounds a gateway that keeps trickling mail in. Pure: callers pass plain values and compare
the result with their own clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from probe.errors import UsageError
from probe.records import DeliveryHistory, SettleWindow, WindowSource

DEFAULT_WINDOW_S = 15.0  # a queue runner that wakes every 10 s, with a third to spare
MIN_HEALTHY_RUNS = 3  # fully delivered runs before a gateway's own history sets its window
HISTORY_FACTOR = 3.0  # a learned window: 3 × the slowest delivery or the longest gap seen
HISTORY_RUNS = 20  # the most recent fully delivered runs learned from: a gateway may change
# The shortest window history may teach (--grace). A gateway fast for months still pauses now
# and then: a 5 s resolver timeout, a content filter restarting, a queue manager busy. Such a
# spell must read as late, not lost, so the floor outlasts a 5 s pause; and it keeps a gateway
# that really loses mail judged in well under half the default window (about 5.7 s for a
# first-only gateway, `make bench`). Waiting out the default window before a learned-window
# verdict that would be critical would cost the whole default (15 s) on every real failure.
LEARNED_FLOOR_S = 5.5


@dataclass(frozen=True)
class Patience:
    """What the operator chose about waiting for late mail."""

    settle_s: float | None = None  # an explicit window (--settle); None: learned or default
    grace_s: float = LEARNED_FLOOR_S  # the shortest window history may teach (--grace)
    timeout_s: float = 30.0  # the hard cap after the burst (--timeout), whatever was seen

    def __post_init__(self) -> None:
        if self.settle_s is not None and self.settle_s > self.timeout_s:
            raise UsageError(
                f"settle window {self.settle_s:g} s (--settle) is longer than the longest wait "
                f"for late mail, {self.timeout_s:g} s (--timeout)"
            )


def choose_window(patience: Patience, history: DeliveryHistory) -> SettleWindow:
    """The window for a run of a gateway with `history` (its fully delivered past runs)."""
    if patience.settle_s is not None:
        reason = "set by the settle option (--settle)"
        return SettleWindow(patience.settle_s, WindowSource.OPTION, reason=reason)
    if history.runs >= MIN_HEALTHY_RUNS:
        learned = max(
            patience.grace_s, HISTORY_FACTOR * max(history.max_latency_s, history.max_gap_s)
        )
        seconds = min(learned, DEFAULT_WINDOW_S, patience.timeout_s)
        reason = (
            f"learned from {history.runs} fully delivered runs of this gateway (slowest "
            f"delivery {history.max_latency_s:.3g} s, longest gap {history.max_gap_s:.3g} s)"
        )
        return SettleWindow(seconds, WindowSource.LEARNED, history.runs, reason)
    reason = (
        f"default: this gateway has {history.runs} fully delivered run(s) in the ledger, "
        f"{MIN_HEALTHY_RUNS} are needed to learn its own"
    )
    if patience.timeout_s < DEFAULT_WINDOW_S:
        reason += f"; cut to --timeout {patience.timeout_s:g} s"
    seconds = min(DEFAULT_WINDOW_S, patience.timeout_s)
    return SettleWindow(seconds, WindowSource.DEFAULT, history.runs, reason)


def settle_deadline(
    pending: int,
    last_delivery_at: float | None,
    burst_ended_at: float,
    window_s: float,
    timeout_s: float,
) -> float:
    """When the `pending` accepted-but-missing notifications are lost, not late.

    `last_delivery_at` is the latest first arrival of this run's notifications (None: none
    yet). Nothing pending: the run is settled when the burst ends.
    """
    if not pending:
        return burst_ended_at
    quiet_since = max(burst_ended_at, last_delivery_at or burst_ended_at)
    return min(quiet_since + window_s, burst_ended_at + timeout_s)
