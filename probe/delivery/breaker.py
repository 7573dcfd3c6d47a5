"""The burst's circuit breaker: stop sending to a gateway that has stopped answering.

A gateway that hangs makes every notification wait a whole step timeout, one after another: 20
notifications × 10 s is longer than any monitoring check may take, and the 18 last waits prove
nothing the first two did not. Once `threshold` notifications *in a row* got no SMTP answer at all
(a stall, a refused or reset connection, a failed TLS handshake), the rest are not attempted and
recorded so, with the reason. A 4xx/5xx reply is an answer: refusals never open the breaker.

"In a row" means consecutive in submission order (sequence numbers), whatever connection each
notification went over: with several connections stalling at once, their outcomes come back
out of order, and with sessions of a few notifications each, the layout of sessions changes
nothing to which notifications are neighbours.
"""

from __future__ import annotations

import asyncio

from probe.records import Submission
from probe.verdict import seq_ranges

DEFAULT_BREAKER = 2


class CircuitBreaker:
    def __init__(self, threshold: int = DEFAULT_BREAKER):
        self.threshold = threshold  # 0: never open
        self._silent: dict[int, Submission] = {}
        self._in_flight: set[int] = set()
        self._progress = asyncio.Event()  # set (and replaced) whenever an outcome comes back
        self.reason: str | None = None  # set once open: why the rest is not attempted

    @property
    def open(self) -> bool:
        return self.reason is not None

    def started(self, seq: int) -> None:
        self._in_flight.add(seq)

    def record(self, seq: int, submission: Submission) -> None:
        """One notification's outcome, in any order."""
        self._in_flight.discard(seq)
        self._progress.set()
        self._progress = asyncio.Event()
        if self.threshold <= 0 or self.open or submission.answered:
            return
        self._silent[seq] = submission
        first = last = seq
        while first - 1 in self._silent:
            first -= 1
        while last + 1 in self._silent:
            last += 1
        if last - first + 1 >= self.threshold:
            self.reason = (
                f"circuit breaker: seq {seq_ranges(range(first, last + 1))} in a row got no "
                f"SMTP answer (last: {submission.describe()})"
            )

    async def hold(self, submission: Submission) -> None:
        """After an outcome with no answer, wait for the notifications then in flight: they may
        be its neighbours that open the breaker, and starting another one meanwhile would cost a
        hung gateway a whole step timeout more (several connections stall at about once)."""
        if self.threshold <= 0 or submission.answered:
            return
        waiting_for = set(self._in_flight)
        while not self.open and waiting_for & self._in_flight:
            await self._progress.wait()
