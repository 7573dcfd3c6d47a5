"""The clocks the wait for late mail reads, and how it waits: the real ones in production.

The wait (`run._probe`) compares deadlines on the wall clock, because delivery times are on it,
and bounds the whole wait on the monotonic clock, because the wall can jump. It reads both, and
sleeps, only through a `Clock`, so a test can hand it a clock of its own that moves time ahead
instead of waiting it out: the loop itself runs unchanged.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch, like `time.time()`."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps, like `time.monotonic()`."""
        ...

    async def wait(self, event: asyncio.Event, timeout_s: float) -> None:
        """Return once `event` is set or `timeout_s` has passed on this clock."""
        ...


class SystemClock:
    """The real clocks, and a real wait."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def wait(self, event: asyncio.Event, timeout_s: float) -> None:
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=timeout_s)


SYSTEM_CLOCK: Clock = SystemClock()

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]
