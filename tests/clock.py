"""A clock for the wait for late mail (`probe.delivery.clock.Clock`) that skips the time a test
would only spend waiting for mail that will never come.

`JumpClock` is the real clock until the test calls `jump()`. From then on every wait of the loop
ends at once and moves the clock ahead by the whole of it, as if that time passed with nothing
arriving. The loop runs unchanged; only its idle time is skipped. A test jumps once everything
it expects to arrive has arrived (a condition it waits for, never a guess about idleness), so
what is left is window logic: when missing mail stops being late and is lost. Deterministic: the
clock moves only with real time and by the waits the loop itself asked for.
"""

from __future__ import annotations

import asyncio
import time


class JumpClock:
    def __init__(self) -> None:
        self.skipped = 0.0  # seconds the clock has been moved ahead of the real one
        self._jumping = asyncio.Event()

    def time(self) -> float:
        return time.time() + self.skipped

    def monotonic(self) -> float:
        return time.monotonic() + self.skipped

    def jump(self) -> None:
        """From now on, skip every wait instead of spending it."""
        self._jumping.set()

    async def wait(self, event: asyncio.Event, timeout_s: float) -> None:
        if self._jumping.is_set():
            if not event.is_set():
                self.skipped += timeout_s
            await asyncio.sleep(0)  # what arrived meanwhile is still seen, in order
            return
        waits = [asyncio.ensure_future(e.wait()) for e in (event, self._jumping)]
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        # woken by jump(): return, and the loop asks again for what is left of its wait
