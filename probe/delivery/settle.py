"""How long to wait for late mail: adapt to the latency observed instead of a fixed timeout.

Once one notification has arrived with latency L, a notification still missing after a small
multiple of L (plus a grace) is not late, it is lost. So a first-only gateway is judged about a
second after the burst, while a slow but working gateway still gets the time it needs.

The grace is also the floor of the wait for the *second* notification, and one latency sample
cannot tell a first-only gateway from an MTA that spaces deliveries to one destination (Postfix
`default_destination_rate_delay`, throttled smart hosts): the first arrives in milliseconds, the
next a second later. With a 0.75 s grace a real Postfix at a 1 s rate delay was judged
first_only, the stale-module signature. The default (1 s) keeps a first-only verdict at about a
second on a gateway that delivers at once; raise `--grace` above the spacing for a gateway known
to pace its deliveries (tests/test_real_mta.py shows 2 s for a 1 s rate delay).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Patience:
    factor: float = 4.0  # wait up to factor × the slowest latency seen so far
    grace_s: float = 1.0  # plus this: jitter, queue runners, gateways that pace deliveries
    timeout_s: float = 30.0  # hard cap after the burst ends, whatever was seen


def wait_until(
    pending_started: Mapping[int, float],
    latencies: list[float],
    burst_ended_at: float,
    patience: Patience,
) -> float:
    """The time until which it is worth waiting for the `pending` notifications.

    `pending_started` maps each accepted-but-not-yet-delivered notification to the time its
    submission started; `latencies` are those of the deliveries seen so far. Pure: the caller
    compares the result with its clock.
    """
    hard = burst_ended_at + patience.timeout_s
    if not pending_started:
        return burst_ended_at
    if not latencies:
        return hard
    allowance = patience.factor * max(latencies) + patience.grace_s
    return min(hard, max(pending_started.values()) + allowance)
