"""The burst's circuit breaker: stop sending to a gateway that has stopped answering.

A gateway that hangs makes every notification wait a whole step timeout, one after another: 20
notifications × 10 s is longer than any monitoring check may take, and the 18 last waits prove
nothing the first two did not. Once `threshold` notifications *in a row* got no SMTP answer to judge
(a stall, a refused connection, a failed TLS handshake, a hang-up, a reply that is not SMTP), the
rest are not attempted and recorded so, with the reason, which says which of those it was. A
4xx/5xx reply is an answer: refusals never open the breaker.

"In a row" means consecutive in submission order (sequence numbers), whatever connection each
notification went over: with several connections stalling at once, their outcomes come back
out of order, and with sessions of a few notifications each, the layout of sessions changes
nothing to which notifications are neighbours.
"""

from __future__ import annotations

import asyncio
from collections import Counter

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
            row = [self._silent[s] for s in range(first, last + 1)]
            self.reason = (
                f"circuit breaker: seq {seq_ranges(range(first, last + 1))} in a row "
                f"{what_happened(row)} (last: {submission.describe()})"
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


# What became of a notification that got no SMTP answer to judge: how one reads alone, and
# counted among others.
_NOT_SMTP = ("got a reply that is not SMTP", "a reply that is not SMTP")
_HUNG_UP = ("were hung up on", "hung up on")
_SILENT = ("got no SMTP answer", "no SMTP answer")


def what_happened(row: list[Submission]) -> str:
    """The row of notifications that opened the breaker, in words: a reply that is not SMTP,
    a hang-up (the gateway closed or reset the connection) and no answer at all (a stall, a
    refused connection, a TLS failure) are not the same thing to look for."""
    kinds = Counter(_NOT_SMTP if s.not_smtp else _HUNG_UP if s.hung_up else _SILENT for s in row)
    if len(kinds) == 1:
        return next(iter(kinds))[0]
    counted = ", ".join(f"{count} {kind[1]}" for kind, count in kinds.items())
    return f"got no SMTP answer to judge ({counted})"
