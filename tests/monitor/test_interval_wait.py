"""The wait between two runs of a target ends at a stop by itself, not only by the task's
cancellation: Python 3.11's `asyncio.wait_for` (aiosmtplib's timeouts) can drop a cancellation
that comes as the awaited call completes, and a watch stopped then would hold its stop for a
whole interval (seen under load: SIGTERM, then no exit for the test's 30 s)."""

from __future__ import annotations

import asyncio

from probe.monitor.watch import until_stopped
from tests.waits import TIMEOUT_S


async def test_a_stop_ends_the_interval_wait_without_a_cancellation():
    stop = asyncio.Event()
    waiting = asyncio.create_task(until_stopped(stop, 3600.0))
    await asyncio.sleep(0)  # the wait has begun
    stop.set()
    await asyncio.wait_for(waiting, TIMEOUT_S)  # ended by the stop alone, nothing cancelled it
    assert waiting.done() and not waiting.cancelled()


async def test_without_a_stop_the_interval_wait_lasts_the_interval():
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await until_stopped(stop, 0.05)
    assert loop.time() - started >= 0.05 and not stop.is_set()
