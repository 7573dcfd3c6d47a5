"""One probe run, wired end to end: sink up, burst out, wait for late mail, judge.

This is the main job behind `notifyprobe burst` and the demo. Every fact goes to the ledger as
it happens, so an interrupted run is marked as such and can be judged later from what was kept.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from typing import Literal

import structlog

from probe.correlation import TokenRef, new_run_id
from probe.delivery.burst import (
    DEFAULT_MAX_RATE,
    MAX_COUNT,
    MAX_RATE_CAP,
    BurstPlan,
    send_burst,
    send_control,
)
from probe.delivery.settle import Patience, wait_until
from probe.delivery.sink import DeliveryCallback, Sink
from probe.delivery.sink_limits import Access, SinkLimits
from probe.delivery.tls import ClientSecurity
from probe.errors import UsageError
from probe.ledger import Ledger, LedgerWriter
from probe.records import Endpoint, Run, RunRecord, RunStatus, Submission
from probe.verdict import Thresholds, Verdict, classify

log = structlog.get_logger("notifyprobe.run")

EXTERNAL_SINK_POLL_S = 0.1


@dataclass(frozen=True)
class ProbeSettings:
    gateway: Endpoint
    sink: Endpoint
    domain: str = "probe.invalid"
    count: int = 10
    concurrency: int = 1
    reuse: bool = True
    interval_s: float = 0.0
    step_timeout_s: float = 10.0
    own_sink: bool = True  # False: a separate `notifyprobe sink` records into the same ledger
    control: bool = True
    patience: Patience = field(default_factory=Patience)
    thresholds: Thresholds = field(default_factory=Thresholds)
    helo: str | None = None
    target: str = ""  # the watch target this run belongs to; "" for a one-off burst
    security: ClientSecurity = field(default_factory=ClientSecurity)
    max_rate: float = DEFAULT_MAX_RATE
    sink_limits: SinkLimits = field(default_factory=SinkLimits)
    sink_access: Access = field(default_factory=Access)
    sink_tls: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        """The anti-mail-bomb caps, for every caller: burst, watch, postflight, demo."""
        if not 1 <= self.count <= MAX_COUNT:
            raise UsageError(f"count {self.count} (--count) is outside 1..{MAX_COUNT}")
        if not 0 < self.max_rate <= MAX_RATE_CAP:
            raise UsageError(
                f"max rate {self.max_rate:g}/s (--max-rate) must be above 0 and at most "
                f"{MAX_RATE_CAP:g}"
            )

    def options(self) -> dict[str, object]:
        extra: dict[str, object] = {"target": self.target} if self.target else {}
        return {
            **extra,
            "security": self.security.describe(),
            "max_rate": self.max_rate,
            "concurrency": self.concurrency,
            "reuse": self.reuse,
            "interval_s": self.interval_s,
            "step_timeout_s": self.step_timeout_s,
            "own_sink": self.own_sink,
            "control": self.control,
            "timeout_s": self.patience.timeout_s,
            "slow_after_s": self.thresholds.slow_after_s,
        }


Phase = Literal["sending", "waiting", "judging"]


@dataclass(frozen=True)
class Progress:
    total: int
    sent: int
    accepted: int
    delivered: int
    phase: Phase


@dataclass(frozen=True)
class ProbeOutcome:
    record: RunRecord
    verdict: Verdict
    elapsed_s: float


ProgressCallback = Callable[[Progress], None]


class DeliveryHub:
    """Fans the deliveries of one long-lived sink out to the runs waiting for them, by run id."""

    def __init__(self) -> None:
        self._subscribers: dict[str, DeliveryCallback] = {}

    def subscribe(self, run_id: str, callback: DeliveryCallback) -> None:
        self._subscribers[run_id] = callback

    def unsubscribe(self, run_id: str) -> None:
        self._subscribers.pop(run_id, None)

    def __call__(self, ref: TokenRef, received_at: float) -> None:
        callback = self._subscribers.get(ref.run_id)
        if callback is not None:
            callback(ref, received_at)


@dataclass(frozen=True)
class SharedSink:
    """An already-started in-process sink that several runs use at once (`notifyprobe watch`).

    Its `on_delivery` must be `hub`; `writer` is the sink's group-commit writer, shared too.
    """

    writer: LedgerWriter
    hub: DeliveryHub
    endpoint: Endpoint


class _Tracker:
    """What the run knows live: submissions and first arrivals, for waiting and progress."""

    def __init__(self, run_id: str, total: int, progress: ProgressCallback | None):
        self.run_id = run_id
        self.total = total
        self.progress = progress
        self.started: dict[int, float] = {}
        self.accepted: set[int] = set()
        self.arrived: dict[int, float] = {}
        self.changed = asyncio.Event()
        self.phase: Phase = "sending"

    def on_submission(self, seq: int, submission: Submission) -> None:
        self.started[seq] = submission.started_at
        if submission.accepted:
            self.accepted.add(seq)
        self.changed.set()
        self.report()

    def on_delivery(self, ref: TokenRef, received_at: float) -> None:
        if ref.run_id == self.run_id and ref.seq not in self.arrived:
            self.arrived[ref.seq] = received_at
            self.changed.set()
            self.report()

    def pending(self) -> dict[int, float]:
        return {s: self.started[s] for s in self.accepted if s not in self.arrived}

    def latencies(self) -> list[float]:
        """Gateway latencies only: the control message skips the gateway and says nothing."""
        # max(0, …): a wall clock stepped back mid-run must not make a negative latency (which
        # would shrink the adaptive wait below zero and call late mail lost).
        started = self.started
        return [max(0.0, t - started[s]) for s, t in self.arrived.items() if s in started and s]

    def report(self) -> None:
        if self.progress is not None:
            delivered = sum(1 for s in self.arrived if s != 0)
            sent = sum(1 for s in self.started if s != 0)
            accepted = sum(1 for s in self.accepted if s != 0)
            self.progress(Progress(self.total, sent, accepted, delivered, self.phase))


async def run_probe(
    ledger: Ledger,
    settings: ProbeSettings,
    progress: ProgressCallback | None = None,
    *,
    shared: SharedSink | None = None,
) -> ProbeOutcome:
    """One run. With `shared`, use that running sink instead of starting one for this run."""
    t0 = time.monotonic()
    run_id = new_run_id()
    tracker = _Tracker(run_id, settings.count, progress)
    async with AsyncExitStack() as stack:
        if shared is not None:
            writer = shared.writer
            shared.hub.subscribe(run_id, tracker.on_delivery)
            stack.callback(shared.hub.unsubscribe, run_id)
            sink_endpoint = shared.endpoint
        else:
            writer = LedgerWriter(ledger)
            stack.push_async_callback(writer.close)
            sink_endpoint = settings.sink
            if settings.own_sink:
                sink = Sink(
                    writer,
                    host=settings.sink.host,
                    port=settings.sink.port,
                    domain=settings.domain,
                    on_delivery=tracker.on_delivery,
                    limits=settings.sink_limits,
                    access=settings.sink_access,
                    tls_context=settings.sink_tls,
                )
                await sink.start()
                stack.push_async_callback(sink.stop)
                sink_endpoint = Endpoint(settings.sink.host, sink.port)
        run = Run(
            run_id=run_id,
            gateway=str(settings.gateway),
            sink=str(sink_endpoint),
            domain=settings.domain,
            count=settings.count,
            started_at=time.time(),
            options=settings.options(),
        )
        ledger.create_run(run, control=settings.control)
        log.info("run_started", run_id=run_id, gateway=run.gateway, sink=run.sink, count=run.count)
        status: RunStatus = "interrupted"
        try:
            in_process = shared is not None or settings.own_sink
            await _probe(writer, settings, run_id, sink_endpoint, tracker, ledger, in_process)
            status = "done"
        finally:
            await writer.drain()
            if status != "done":
                ledger.finish_run(run_id, status, time.time(), None)
                log.warning("run_interrupted", run_id=run_id)
    record = ledger.load(run_id)
    verdict = classify(record, settings.thresholds)
    ledger.finish_run(run_id, "done", time.time(), json.dumps(verdict.to_dict()))
    log.info("run_judged", run_id=run_id, pattern=verdict.pattern.value)
    return ProbeOutcome(ledger.load(run_id), verdict, time.monotonic() - t0)


async def _probe(
    writer: LedgerWriter,
    settings: ProbeSettings,
    run_id: str,
    sink: Endpoint,
    tracker: _Tracker,
    ledger: Ledger,
    in_process: bool,
) -> None:
    """Send, then wait for late mail; `in_process`: deliveries are reported live, no polling."""

    def on_result(seq: int, submission: Submission) -> None:
        writer.record_submission(run_id, seq, submission)
        tracker.on_submission(seq, submission)

    plan = BurstPlan(
        run_id=run_id,
        gateway=settings.gateway,
        domain=settings.domain,
        count=settings.count,
        concurrency=settings.concurrency,
        reuse=settings.reuse,
        interval_s=settings.interval_s,
        step_timeout_s=settings.step_timeout_s,
        helo=settings.helo,
        security=settings.security,
        max_rate=settings.max_rate,
    )
    await send_burst(plan, on_result)
    if settings.control:
        on_result(0, await send_control(sink, run_id, settings.domain, settings.step_timeout_s,
                                         settings.count))  # fmt: skip
    burst_ended = time.time()
    # The wall clock can jump (NTP step, VM resume): the deadlines below use it because delivery
    # times come from it, but the monotonic clock bounds the whole wait whatever the wall does.
    hard_stop = time.monotonic() + settings.patience.timeout_s
    tracker.phase = "waiting"
    tracker.report()
    while time.monotonic() < hard_stop:
        if not in_process:
            for seq, at in ledger.delivered_seqs(run_id).items():
                tracker.on_delivery(TokenRef(run_id, seq), at)
        deadline = wait_until(
            tracker.pending(), tracker.latencies(), burst_ended, settings.patience
        )
        remaining = min(deadline - time.time(), hard_stop - time.monotonic())
        if remaining <= 0:
            break
        tracker.changed.clear()
        wait_s = remaining if in_process else min(remaining, EXTERNAL_SINK_POLL_S)
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(tracker.changed.wait(), timeout=wait_s)
    tracker.phase = "judging"
    tracker.report()
