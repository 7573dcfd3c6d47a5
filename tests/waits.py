"""Readiness helpers: wait for a condition, never for a fixed time.

A test that needs something to have happened (a process listening, a run started, a message
held) waits for exactly that, bounded by a generous timeout that only a broken build reaches,
and fails naming what never happened. Speed is measured by `make bench`, not asserted here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

TIMEOUT_S = 30.0  # generous: reached only when the awaited thing is broken, never on a slow host
POLL_S = 0.02


def until(condition: Callable[[], object], what: str, timeout_s: float = TIMEOUT_S) -> None:
    """Return as soon as `condition()` is true; fail after `timeout_s` naming `what`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s")
        time.sleep(POLL_S)


async def until_async(
    condition: Callable[[], object], what: str, timeout_s: float = TIMEOUT_S
) -> None:
    """`until` for a test on the event loop: polls without blocking the loop."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s")
        await asyncio.sleep(POLL_S)
