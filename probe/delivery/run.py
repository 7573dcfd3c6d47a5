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
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import Literal

import structlog

from probe.correlation import TokenRef, new_run_id
from probe.delivery.burst import Deadline, send_burst, send_control
from probe.delivery.clock import SYSTEM_CLOCK, Clock
from probe.delivery.settings import BurstSettings
from probe.delivery.settle import (
    HISTORY_RUNS,
    Patience,
    choose_window,
    settle_deadline,
)
from probe.delivery.sink import BounceCallback, DeliveryCallback, Sink
from probe.delivery.sink_limits import Access, SinkLimits
from probe.delivery.tls import ClientSecurity
from probe.domain import DEFAULT_DOMAIN
from probe.ledger import Ledger, LedgerWriter
from probe.records import (
    Bounce,
    BounceAction,
    Delivery,
    DeliveryHistory,
    Endpoint,
    Notification,
    Run,
    RunOptions,
    RunRecord,
    RunStatus,
    SettleWindow,
    Submission,
)
from probe.verdict import Pattern, Thresholds, Verdict, classify, judge_recorded

log = structlog.get_logger("notifyprobe.run")

EXTERNAL_SINK_POLL_S = 0.1
PROGRESS_EVERY_S = 0.25  # while waiting: how often the time left and provisional pattern refresh


@dataclass(frozen=True)
class ProbeSettings:
    """One run: where the burst goes, how it is sent (`burst`), how long to wait, how to judge."""

    gateway: Endpoint
    sink: Endpoint
    burst: BurstSettings = field(default_factory=BurstSettings)
    domain: str = DEFAULT_DOMAIN
    own_sink: bool = True  # False: a separate `notifyprobe sink` records into the same ledger
    patience: Patience = field(default_factory=Patience)
    thresholds: Thresholds = field(default_factory=Thresholds)
    target: str = ""  # the watch target this run belongs to; "" for a one-off burst
    security: ClientSecurity = field(default_factory=ClientSecurity)
    sink_limits: SinkLimits = field(default_factory=SinkLimits)
    sink_access: Access = field(default_factory=Access)
    sink_tls: ssl.SSLContext | None = None
    budget_s: float | None = None  # the longest the whole run may take (watch); None: no limit
    lab: bool = False  # the gateway is a lab gateway this process started (the demo)

    def options(self, window: SettleWindow) -> RunOptions:
        """What the ledger keeps of these settings with the run, and the window it used."""
        burst = self.burst
        return RunOptions(
            target=self.target,
            security=self.security.describe(),
            max_rate=burst.max_rate,
            concurrency=burst.concurrency,
            per_session=burst.per_session,
            notification_gap_s=burst.notification_gap_s,
            step_timeout_s=burst.step_timeout_s,
            breaker=burst.breaker,
            own_sink=self.own_sink,
            control=burst.control,
            timeout_s=self.patience.timeout_s,
            slow_after_s=self.thresholds.slow_after_s,
            budget_s=self.budget_s,
            lab=self.lab,
            settle=window,
        )


Phase = Literal["sending", "waiting", "judging"]


@dataclass(frozen=True)
class Progress:
    total: int
    sent: int
    accepted: int
    delivered: int
    phase: Phase
    provisional: Pattern | None = None  # waiting: the verdict if nothing more arrives
    left_s: float | None = None  # waiting: until the missing ones are declared lost


@dataclass(frozen=True)
class ProbeOutcome:
    record: RunRecord
    verdict: Verdict
    elapsed_s: float


ProgressCallback = Callable[[Progress], None]


class DeliveryHub:
    """Fans the deliveries and bounces of one long-lived sink out to the runs waiting for
    them, by run id: the sink's `on_delivery` is the hub, its `on_bounce` is `hub.bounced`."""

    def __init__(self) -> None:
        self._subscribers: dict[str, tuple[DeliveryCallback, BounceCallback]] = {}

    def subscribe(
        self, run_id: str, on_delivery: DeliveryCallback, on_bounce: BounceCallback
    ) -> None:
        self._subscribers[run_id] = (on_delivery, on_bounce)

    def unsubscribe(self, run_id: str) -> None:
        self._subscribers.pop(run_id, None)

    def __call__(self, ref: TokenRef, received_at: float) -> None:
        callbacks = self._subscribers.get(ref.run_id)
        if callbacks is not None:
            callbacks[0](ref, received_at)

    def bounced(self, ref: TokenRef, received_at: float, action: BounceAction) -> None:
        callbacks = self._subscribers.get(ref.run_id)
        if callbacks is not None:
            callbacks[1](ref, received_at, action)


@dataclass(frozen=True)
class SharedSink:
    """An already-started in-process sink that several runs use at once (`notifyprobe watch`).

    Its `on_delivery` must be `hub` and its `on_bounce` `hub.bounced`; `writer` is the sink's
    group-commit writer, shared too.
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
        self.submissions: dict[int, Submission] = {}
        self.arrived: dict[int, float] = {}
        self.reported: dict[int, Bounce] = {}  # the latest failure or delay report of each
        self.changed = asyncio.Event()
        self.phase: Phase = "sending"

    def on_submission(self, seq: int, submission: Submission) -> None:
        self.submissions[seq] = submission
        self.changed.set()
        if self.phase == "sending":  # while waiting, the wait loop reports (with time left)
            self.report()

    def on_delivery(self, ref: TokenRef, received_at: float) -> None:
        if ref.run_id == self.run_id and ref.seq not in self.arrived:
            self.arrived[ref.seq] = received_at
            self.changed.set()
            if self.phase == "sending":
                self.report()

    def on_bounce(self, ref: TokenRef, received_at: float, action: BounceAction) -> None:
        """A report came back: a failure or a delay ends the wait for that notification (it
        will not arrive now, or not soon); the other actions are evidence only."""
        if ref.run_id != self.run_id or action not in ("failed", "delayed"):
            return
        earlier = self.reported.get(ref.seq)
        if earlier is None or earlier.action != "failed" or action == "failed":
            self.reported[ref.seq] = Bounce(self.run_id, ref.seq, received_at, action)
            self.changed.set()

    def pending(self) -> int:
        """Accepted notifications (control included) that have neither arrived nor come back
        with a report that they failed or are delayed."""
        done = self.arrived.keys() | self.reported.keys()
        return sum(1 for s, sub in self.submissions.items() if sub.accepted and s not in done)

    def last_delivery_at(self) -> float | None:
        """The latest first arrival through the gateway: the control message skips it."""
        return max((t for s, t in self.arrived.items() if s), default=None)

    def provisional(self, run: Run, thresholds: Thresholds) -> Pattern:
        """The verdict if nothing more arrived: the same pure judgement, on what is known now."""
        notifications = tuple(
            Notification(
                self.run_id,
                seq,
                "",
                submission,
                (Delivery(self.run_id, seq, self.arrived[seq], "live"),)
                if seq in self.arrived
                else (),
                bounces=(self.reported[seq],) if seq in self.reported else (),
            )
            for seq, submission in sorted(self.submissions.items())
        )
        return classify(RunRecord(run, notifications), thresholds).pattern

    def report(self, provisional: Pattern | None = None, left_s: float | None = None) -> None:
        if self.progress is not None:
            delivered = sum(1 for s in self.arrived if s != 0)
            sent = sum(1 for s in self.submissions if s != 0)
            accepted = sum(1 for s, sub in self.submissions.items() if s != 0 and sub.accepted)
            self.progress(
                Progress(self.total, sent, accepted, delivered, self.phase, provisional, left_s)
            )


async def run_probe(
    ledger: Ledger,
    settings: ProbeSettings,
    progress: ProgressCallback | None = None,
    *,
    shared: SharedSink | None = None,
    run_id: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> ProbeOutcome:
    """One run. With `shared`, use that running sink instead of starting one for this run;
    `run_id` chosen by the caller (who can then name a run it cut short), else a new one.
    `clock`: what the wait for late mail reads and sleeps on (tests pass their own)."""
    t0, started = time.monotonic(), clock.monotonic()
    time_up = None
    if settings.budget_s is not None:
        reason = (
            f"the run's time budget ({settings.budget_s:.3g} s, to keep the target's "
            "interval) was spent"
        )
        time_up = Deadline(t0 + settings.budget_s, reason)
    run_id = run_id or new_run_id()
    tracker = _Tracker(run_id, settings.burst.count, progress)
    async with AsyncExitStack() as stack:
        if shared is not None:
            writer = shared.writer
            shared.hub.subscribe(run_id, tracker.on_delivery, tracker.on_bounce)
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
                    on_bounce=tracker.on_bounce,
                    limits=settings.sink_limits,
                    access=settings.sink_access,
                    tls_context=settings.sink_tls,
                )
                await sink.start()
                stack.push_async_callback(sink.stop)
                sink_endpoint = Endpoint(settings.sink.host, sink.port)
        gateway = str(settings.gateway)
        # The ledger off the loop: its reads wait for the writer's commit (an fsync), and a
        # watch's other runs go on meanwhile. A window set by option needs no history.
        history = (
            await asyncio.to_thread(ledger.delivery_history, gateway, limit=HISTORY_RUNS)
            if settings.patience.settle_s is None
            else DeliveryHistory()
        )
        window = choose_window(settings.patience, history)
        run = Run(
            run_id=run_id,
            gateway=gateway,
            sink=str(sink_endpoint),
            domain=settings.domain,
            count=settings.burst.count,
            started_at=time.time(),
            options=settings.options(window),
        )
        await writer.create_run(run, control=settings.burst.control)
        log.info(
            "run_started",
            run_id=run_id,
            gateway=run.gateway,
            sink=run.sink,
            count=run.count,
            settle_s=window.seconds,
            settle_source=window.source.value,
        )
        status: RunStatus = "interrupted"
        try:
            in_process = shared is not None or settings.own_sink
            await _probe(
                writer,
                settings,
                run,
                window,
                sink_endpoint,
                tracker,
                ledger,
                in_process,
                time_up,
                clock,
            )
            status = "done"
        finally:
            await writer.drain()
            failure = writer.failures.pop(run_id, None)
            if failure is not None:  # judged as the probe's own failure, with its cause
                ledger.record_failure(run_id, failure)
            if status != "done":
                ledger.finish_run(run_id, status, time.time(), None)
                log.warning("run_interrupted", run_id=run_id)
    judged_at = time.time()  # mail recorded after this is not in the verdict: it came late
    record = await asyncio.to_thread(ledger.load, run_id)
    verdict = classify(record, settings.thresholds)
    await asyncio.to_thread(
        ledger.finish_run, run_id, "done", judged_at, json.dumps(verdict.to_dict())
    )
    log.info("run_judged", run_id=run_id, pattern=verdict.pattern.value)
    record = await asyncio.to_thread(ledger.load, run_id)
    return ProbeOutcome(record, verdict, clock.monotonic() - started)


def judge_cut_run(ledger: Ledger, run_id: str) -> tuple[RunRecord, Verdict]:
    """Judge a run cut off by a signal, a kill or a stop, and keep it as interrupted with that
    verdict: judged as the interrupted run it is, whatever status it was left in."""
    record = ledger.load(run_id)
    finished = record.run.finished_at or time.time()
    record = replace(record, run=replace(record.run, status="interrupted", finished_at=finished))
    verdict = judge_recorded(record)
    ledger.finish_run(run_id, "interrupted", finished, json.dumps(verdict.to_dict()))
    return record, verdict


async def _probe(
    writer: LedgerWriter,
    settings: ProbeSettings,
    run: Run,
    window: SettleWindow,
    sink: Endpoint,
    tracker: _Tracker,
    ledger: Ledger,
    in_process: bool,
    time_up: Deadline | None,
    clock: Clock,
) -> None:
    """Send, then wait for late mail; `in_process`: deliveries are reported live, no polling.
    The wait reads the time and sleeps only through `clock`."""
    run_id = run.run_id

    def on_result(seq: int, submission: Submission) -> None:
        writer.record_submission(run_id, seq, submission)
        tracker.on_submission(seq, submission)

    def on_skipped(seq: int, reason: str) -> None:
        writer.record_not_attempted(run_id, seq, reason)

    burst = settings.burst
    await send_burst(
        burst,
        run_id=run_id,
        gateway=settings.gateway,
        domain=settings.domain,
        key=ledger.token_key,
        on_result=on_result,
        security=settings.security,
        on_skipped=on_skipped,
        deadline=time_up,
    )
    if burst.control:
        control = await send_control(
            sink, ledger.token_key, run_id, settings.domain, burst.step_timeout_s, burst.count
        )
        on_result(0, control)
        if control.refused:  # the sink said no: nothing the gateway relays can be recorded
            log.warning("control_refused", run_id=run_id, reply=str(control.reply))
            tracker.phase = "judging"
            tracker.report()
            return
    burst_ended = clock.time()
    # The wall clock can jump (NTP step, VM resume): the deadlines below use it because delivery
    # times come from it, but the monotonic clock bounds the whole wait whatever the wall does.
    hard_stop = clock.monotonic() + settings.patience.timeout_s
    if time_up is not None:  # the budget is on the real monotonic clock, like the burst's steps
        hard_stop = min(hard_stop, clock.monotonic() + time_up.at - time.monotonic())
    tracker.phase = "waiting"
    reported_at = float("-inf")
    while clock.monotonic() < hard_stop:
        if not in_process:
            for seq, at in ledger.delivered_seqs(run_id).items():
                tracker.on_delivery(TokenRef(run_id, seq), at)
            for seq, (at, action) in ledger.bounced_seqs(run_id).items():
                tracker.on_bounce(TokenRef(run_id, seq), at, action)
        deadline = settle_deadline(
            tracker.pending(),
            tracker.last_delivery_at(),
            burst_ended,
            window.seconds,
            settings.patience.timeout_s,
        )
        remaining = min(deadline - clock.time(), hard_stop - clock.monotonic())
        if remaining <= 0:
            break
        wait_s = remaining if in_process else min(remaining, EXTERNAL_SINK_POLL_S)
        if tracker.progress is not None:
            if clock.monotonic() - reported_at >= PROGRESS_EVERY_S:
                reported_at = clock.monotonic()
                tracker.report(tracker.provisional(run, settings.thresholds), remaining)
            wait_s = min(wait_s, PROGRESS_EVERY_S)
        tracker.changed.clear()
        await clock.wait(tracker.changed, wait_s)
    tracker.phase = "judging"
    tracker.report()
