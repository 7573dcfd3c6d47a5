"""`notifyprobe watch`: keep probing every target on an interval after the upgrade is verified.

One long-lived sink serves all targets (runs tell their mail apart by run id), every fact goes to
the ledger as it happens, and a run cut off by a kill or a stop is judged from the ledger when
the watch starts (or stops) again. On a verdict change a configured command gets the verdict JSON
on stdin, so it can page, open a ticket or collect evidence.

A service that runs for months is stopped and restarted: neither may raise an alert. A stop cuts
the runs in flight at once, keeps the sink up for a bounded drain, and judges the cut runs as
interrupted (`inconclusive` unless everything they sent arrived); they never set a target's
state. A start takes each target's state from its last conclusive run, re-judged with what the
ledger holds now.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import structlog

from probe.delivery import (
    DeliveryHub,
    ProbeOutcome,
    ProbeSettings,
    SharedSink,
    Sink,
    SinkLimits,
    judge_cut_run,
)
from probe.diagnosis import Request
from probe.errors import ProbeError
from probe.history import Outage, Story, as_told, revise_and_keep, story_of
from probe.host import Inventory
from probe.ledger import Ledger, LedgerWriter
from probe.logs import CAPTURE
from probe.monitor.config import OnChange, Target, WatchConfig
from probe.monitor.metrics import NO_VERDICT, Metrics, probe_exposition
from probe.pipeline import Job, Probe, Probed
from probe.records import Endpoint, RunRecord
from probe.reporting import SCHEMA_VERSION, keep_log, make_bundle, to_json
from probe.verdict import Pattern, Severity, Verdict

log = structlog.get_logger("notifyprobe.watch")
T = TypeVar("T")

RETENTION_EVERY_S = 3600.0
HOOK_OUTPUT_LIMIT = 500  # characters of a failed command's stderr kept in the log
LOOK_BACK_RUNS = 20  # at start: how far back a target's last conclusive run is looked for
DRAIN_POLL_S = 0.1
PROBE_MARGIN_S = 0.5  # of a /probe scrape's timeout, kept to answer after the run


@dataclass(frozen=True)
class TargetState:
    """The last verdict of a target: what a new verdict is compared with."""

    pattern: Pattern
    severity: Severity
    run_id: str
    outage: Outage | None = None  # the first_only outage the run continued, as it was told


@dataclass(frozen=True)
class Judged:
    """One judged run of a target, live or recovered from the ledger."""

    target: str
    record: RunRecord
    verdict: Verdict  # as told: a run that continues a first_only outage is first_only
    elapsed_s: float | None = None
    story: Story = field(default_factory=Story)


def first_delay(target: Target, rng: random.Random) -> float:
    """Spread the first runs over a jitter-sized window so targets and probes do not align."""
    return rng.uniform(0.0, target.jitter * target.burst_interval_s)


def next_delay(target: Target, rng: random.Random, elapsed_s: float) -> float:
    """Time from the end of a run to the start of the next: interval ± jitter, start to start."""
    period = target.burst_interval_s * (1.0 + rng.uniform(-target.jitter, target.jitter))
    return max(0.0, period - elapsed_s)


def changed(previous: TargetState | None, verdict: Verdict) -> bool:
    """A state change: another pattern than last time. A first-ever verdict counts unless OK."""
    if previous is None:
        return verdict.severity is not Severity.OK
    return previous.pattern is not verdict.pattern


def run_events(record: RunRecord, target: str) -> list[dict[str, Any]]:
    """The captured log events of one run: those naming it, and the target's own since it
    started (the process's log mixes every target)."""
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.run.started_at))
    return [
        e
        for e in CAPTURE.events()
        if e.get("run_id") == record.run.run_id
        or (e.get("target") == target and str(e.get("timestamp", "")) >= since)
    ]


@dataclass(frozen=True)
class Served:
    """The run a /probe scrape is answered with."""

    judged: Judged
    at: float  # when it was judged (Unix time)
    cached: bool  # not run for this scrape: one was in flight, or the last is recent enough


def settings_for(config: WatchConfig, target: Target) -> ProbeSettings:
    return ProbeSettings(
        gateway=target.gateway,
        sink=config.sink,
        burst=target.burst,
        domain=config.domain,
        patience=target.patience,
        thresholds=target.thresholds,
        target=target.name,
        security=target.security,
        budget_s=target.run_budget_s,
    )


def fleet_limits(targets: int) -> SinkLimits:
    """The shared sink's caps, grown with the fleet: every target's run may hold a session of
    its gateway's relay and its own control message at once, and the control messages all come
    from this host. At the one-burst defaults a fleet that starts together would be refused by
    its own sink (seen with 200 targets in `make bench`), and its runs judged inconclusive."""
    base = SinkLimits()
    return replace(
        base,
        max_connections=max(base.max_connections, 2 * targets + base.max_per_client),
        max_per_client=max(base.max_per_client, targets + base.max_per_client),
    )


def job_for(config: WatchConfig, target: Target) -> Job:
    """A target's run as the pipeline makes it: its modules diagnosed after the burst, the start
    times of its gateway's processes and services kept before and after it (a restart between
    two runs then shows in the target's story). It keeps no command line of its own: its
    bundle gives the burst that sends the same one, from the run's recorded options."""
    password = target.security.password
    return Job(
        settings_for(config, target),
        Request(
            module_names=target.modules,
            installed=target.installed,
            processes=target.processes,
            services=target.services,
            services_must_exist=False,
        ),
        secrets=(password.reveal(),) if password is not None else (),
    )


def missing(record: RunRecord) -> int:
    """Notifications of a run the gateway accepted that have not reached the sink yet."""
    return sum(1 for n in record.burst if n.submission and n.submission.accepted and not n.copies)


class Watcher:
    """The scheduler: one task per target, one shared sink, state changes, recovery, retention."""

    def __init__(
        self,
        config: WatchConfig,
        ledger: Ledger,
        metrics: Metrics | None = None,
        announce: Callable[[str], None] = lambda line: None,
    ):
        self.config = config
        self.ledger = ledger
        self.metrics = metrics
        self.announce = announce
        self.states: dict[str, TargetState] = {}
        self.looks: dict[str, list[str]] = {}  # per target: runs to re-judge at its next run
        self.worst = Severity.OK
        self._last_retention = 0.0
        self._prepared = False
        self._locks: dict[str, asyncio.Lock] = {}  # one run per target in flight
        self._served: dict[str, tuple[float, Served]] = {}  # per target: monotonic start, run
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shared: SharedSink | None = None

    # -- the whole service -----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> Severity:
        """Watch until `stop` is set (or, with `once`, until every target ran once).

        Returns the worst severity seen in this session (the exit code of `--once`).
        """
        if not self._prepared:
            self.prepare()
        cfg = self.config
        writer = LedgerWriter(self.ledger)
        hub = DeliveryHub()
        sink = Sink(
            writer,
            host=cfg.sink.host,
            port=cfg.sink.port,
            domain=cfg.domain,
            on_delivery=hub,
            on_bounce=hub.bounced,
            access=cfg.sink_access,
            limits=fleet_limits(len(cfg.targets)),
        )
        try:
            await sink.start()
        except BaseException:
            await writer.close()
            raise
        if self.metrics is not None:
            self.metrics.set_sink_up(True)
        shared = SharedSink(writer, hub, sink_endpoint(cfg.sink, sink.port))
        self._loop, self._shared = asyncio.get_running_loop(), shared
        self.announce(f"sink listening on {sink.address} for @{cfg.domain}")
        log.info("watch_started", targets=[t.name for t in cfg.targets], sink=sink.address)
        tasks = [
            asyncio.create_task(self.watch_target(t, shared, stop), name=f"watch-{t.name}")
            for t in cfg.targets
        ]
        stopped = asyncio.create_task(stop.wait())
        all_ran = asyncio.gather(*tasks, return_exceptions=True)  # ends only with `once`
        try:
            either: list[asyncio.Future[Any]] = [all_ran, stopped]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Stop: no new run, and the runs in flight stop sending at once (the SMTP step in
            # flight is cancelled and recorded). The sink stays up for the drain, then the cut
            # runs are judged from the ledger as interrupted.
            for task in [*tasks, stopped]:
                task.cancel()
            await asyncio.gather(all_ran, stopped, return_exceptions=True)
            await writer.drain()
            if stop.is_set():
                await self.drain(writer)
            self._shared = None
            await sink.stop()
            await writer.close()
            if self.metrics is not None:
                self.metrics.set_sink_up(False)
            self.recover()
            log.info("watch_stopped")
        return self.worst

    def prepare(self) -> None:
        """Before anything listens: judge the runs a kill cut off, apply retention, and give
        every target its series and its state from the ledger, so the first scrape is whole."""
        self._prepared = True
        self.recover()
        self.retain()
        if self.metrics is not None:
            targets = ((t.name, t.burst_interval_s) for t in self.config.targets)
            self.metrics.add_targets(targets, started_at=time.time())
        self.load_states()
        if self.metrics is not None:
            self.metrics.prerender()

    async def drain(self, writer: LedgerWriter) -> None:
        """Keep the sink up for mail the gateways already accepted in the runs cut by the stop:
        until none is missing, at most the longest settle window of those runs, capped by
        `stop_drain`."""
        cut = [self.ledger.load(run_id) for run_id in self.cut_runs()]
        windows = [r.run.options.settle for r in cut if missing(r)]
        longest = max((w.seconds for w in windows if w is not None), default=0.0)
        drain_s = min(longest, self.config.stop_drain_s)
        log.info("watch_stopping", runs_cut=len(cut), drain_s=round(drain_s, 3))
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline:
            await writer.drain()
            if not any(missing(self.ledger.load(r.run.run_id)) for r in cut):
                return
            await asyncio.sleep(min(DRAIN_POLL_S, max(0.0, deadline - time.monotonic())))

    # -- one target ------------------------------------------------------------------------

    async def watch_target(self, target: Target, shared: SharedSink, stop: asyncio.Event) -> None:
        rng = random.Random(f"{self.config.seed}:{target.name}")
        delay = first_delay(target, rng)
        while True:
            if delay > 0:
                await until_stopped(stop, delay)
            if stop.is_set():  # stopping: no new run, even one due in the same instant
                return
            started = time.monotonic()
            lock = self._locks.setdefault(target.name, asyncio.Lock())
            if lock.locked():  # a /probe run is in flight: it is this slot's run
                async with lock:
                    pass
            else:
                async with lock:
                    await self.round(target, shared)
            if self.config.once:
                return
            delay = next_delay(target, rng, time.monotonic() - started)

    async def round(
        self, target: Target, shared: SharedSink, budget_s: float | None = None
    ) -> Judged | None:
        """One run of a target, judged, told and acted on; the caller holds its lock. A failure
        is logged and counted, never raised: the next run may well work."""
        started = time.monotonic()
        try:
            self.revise_previous(target)
            job = job_for(self.config, target)
            if budget_s is not None:
                job = replace(job, settings=replace(job.settings, budget_s=budget_s))
            # naming the gateway's processes or services, preparing reads the process table
            # for their start times: off the loop, as the scan after the run is
            watching = target.processes or target.services
            probe = await asyncio.to_thread(Probe, job) if watching else Probe(job)
            outcome = await probe.run(self.ledger, shared=shared)
            probed = await self.finish(target, probe, outcome)
            judged = self.told(target, outcome, probed)
            self._served[target.name] = (
                started,
                Served(judged, outcome.record.run.finished_at or time.time(), False),
            )
            await self.after_run(target, judged)
            if not self.config.once:
                self.retain()
            return judged
        except Exception as exc:
            if isinstance(exc, ProbeError):
                log.error("watch_run_failed", target=target.name, error=str(exc))
            else:
                log.exception("watch_run_crashed", target=target.name)
            if self.metrics is not None:
                self.metrics.count_probe_error(target.name)
            self.worst = max(self.worst, Severity.UNKNOWN)
            return None

    # -- /probe?target=NAME: Prometheus drives a run ------------------------------------------

    def probe_endpoint(self, name: str | None, scrape_timeout_s: float | None) -> tuple[int, bytes]:
        """Answer `GET /probe?target=NAME` from the metrics listener's thread: run the target
        now on the watch's loop and sink, within the scrape's timeout, and answer with that
        run's series. One run per target in flight: a probe that finds one waits for it and
        is served it; a probe within the target's min_interval cap of the last run's start
        is served that run (`notifyprobe_probe_cached 1`): no configuration, no scraper, makes
        the probe burst a gateway more often than its caps allow. That last answer comes from
        this thread, without the loop: a busy loop (a fleet's runs starting) never delays it."""
        names = [t.name for t in self.config.targets]
        target = next((t for t in self.config.targets if t.name == name), None)
        if target is None:
            return 400, (
                f"unknown target {name!r}: give ?target= one of {', '.join(names)}\n"
                if name is not None
                else f"give exactly one ?target= of {', '.join(names)}\n"
            ).encode()
        loop, shared = self._loop, self._shared
        if loop is None or shared is None:
            return 503, b"the watch is not running (starting or stopping)\n"
        recent = self.served_recently(target)
        if recent is not None:
            j = recent.judged
            return 200, probe_exposition(j.verdict, j.elapsed_s or 0.0, recent.at, True)
        budget = target.run_budget_s
        if scrape_timeout_s is not None:
            budget = min(budget, max(0.5, scrape_timeout_s - PROBE_MARGIN_S))
        wait_s = (scrape_timeout_s or budget + 30.0) + 1.0
        future = asyncio.run_coroutine_threadsafe(self.probe_now(target, shared, budget), loop)
        try:
            served = future.result(timeout=wait_s)
        except Exception as exc:
            future.cancel()
            return 503, f"probe of {target.name} failed: {exc or type(exc).__name__}\n".encode()
        if served is None:
            return 503, f"probe of {target.name} failed: see the watch's log\n".encode()
        j = served.judged
        body = probe_exposition(j.verdict, j.elapsed_s or 0.0, served.at, served.cached)
        return 200, body

    def served_recently(self, target: Target) -> Served | None:
        """The target's last run when a probe is served it as it is: no run of the target in
        flight and the last one started within the min_interval cap. Safe from any thread: it
        only reads what the loop replaces whole (the lock's state, the last run served)."""
        lock = self._locks.get(target.name)
        if lock is not None and lock.locked():
            return None
        last = self._served.get(target.name)
        if last is not None and time.monotonic() - last[0] < self.config.caps.min_interval_s:
            return replace(last[1], cached=True)
        return None

    async def probe_now(self, target: Target, shared: SharedSink, budget_s: float) -> Served | None:
        lock = self._locks.setdefault(target.name, asyncio.Lock())
        if lock.locked():  # a run in flight: it is the answer
            async with lock:
                pass
            last = self._served.get(target.name)
            return replace(last[1], cached=True) if last else None
        recent = self.served_recently(target)  # a run may have ended since the thread looked
        if recent is not None:
            return recent
        async with lock:
            judged = await self.round(target, shared, budget_s)
        last = self._served.get(target.name)
        return last[1] if judged is not None and last is not None else None

    def told(self, target: Target, outcome: ProbeOutcome, probed: Probed | None) -> Judged:
        """The run as its story tells it: one that continues a first_only outage keeps the
        outage's pattern, severity and alert (the report's story when the pipeline finished
        the run, else read here, from where the target's last run left it)."""
        if probed is not None:
            story, verdict = probed.report.story, probed.report.verdict
        else:
            previous = self.states.get(target.name)
            known = previous.outage if previous is not None else None
            story = story_of(self.ledger, outcome.record, outcome.verdict, known)
            verdict = as_told(outcome.verdict, story)
        if story.restart is not None:
            log.info(
                "gateway_restart_seen",
                target=target.name,
                how=story.restart.how,
                run_id=outcome.record.run.run_id,
            )
        return Judged(target.name, outcome.record, verdict, outcome.elapsed_s, story)

    async def after_run(self, target: Target, judged: Judged) -> None:
        verdict, record = judged.verdict, judged.record
        self.worst = max(self.worst, verdict.severity)
        if self.metrics is not None:
            at = record.run.finished_at or time.time()
            self.metrics.observe_run(target.name, record, verdict, judged.elapsed_s or 0.0, at)
        previous = self.states.get(target.name)
        self.states[target.name] = TargetState(
            verdict.pattern, verdict.severity, record.run.run_id, judged.story.outage
        )
        self.looks[target.name] = [record.run.run_id]
        log.info(
            "watch_run_judged",
            target=target.name,
            run_id=record.run.run_id,
            pattern=verdict.pattern.value,
            severity=verdict.severity.name.lower(),
        )
        if not changed(previous, verdict):
            return
        log.warning(
            "verdict_changed",
            target=target.name,
            run_id=record.run.run_id,
            previous=previous.pattern.value if previous else None,
            pattern=verdict.pattern.value,
        )
        on_change = self.config.on_change
        if on_change is None:
            return
        bundle_path: Path | None = None
        first_critical = verdict.severity is Severity.CRITICAL and (
            previous is None or previous.severity is not Severity.CRITICAL
        )
        if first_critical and on_change.evidence_dir is not None:
            bundle_path = self.write_evidence(on_change.evidence_dir, target, judged)
        if on_change.command:
            ok = await run_hook(
                on_change,
                self.payload(target, previous, judged, bundle_path),
                self.hook_env(target, previous, judged, bundle_path),
            )
            if not ok and self.metrics is not None:
                self.metrics.count_hook_failure(target.name)

    def revise_previous(self, target: Target) -> None:
        """Judge the target's previous run again (and the runs a stop cut off since, when the
        watch just started) with the mail and bounces that arrived after their verdict."""
        for run_id in self.looks.pop(target.name, []):
            self.revise(target.name, run_id)

    def revise(self, target: str, run_id: str) -> Verdict | None:
        """The run's verdict now; a correction is kept, logged once and counted."""
        revised = revise_and_keep(self.ledger, run_id, time.time())
        r = revised.revision
        if r is None:
            return None
        if revised.newly_corrected:
            log.warning(
                "verdict_corrected",
                target=target,
                run_id=run_id,
                original=r.original.value,
                corrected=r.current.pattern.value,
                late=r.late,
                last_late_s=r.last_late_s,
                summary=r.summary(),
            )
            if self.metrics is not None:
                self.metrics.count_correction(target, r.original, r.current.pattern)
        return r.current

    async def finish(self, target: Target, probe: Probe, outcome: ProbeOutcome) -> Probed | None:
        """A judged run explained and kept by the pipeline, off the event loop (the module scan
        reads the host; the other targets go on). A scan that fails costs the diagnosis, never
        the verdict."""
        try:
            probed = await in_daemon_thread(partial(probe.finish, self.ledger, outcome))
        except ProbeError as exc:
            log.error("module_inventory_failed", target=target.name, error=str(exc))
            self.scanned(target, None)
            return None
        if target.modules:
            self.scanned(target, probed.explanation.inventory)
        return probed

    def scanned(self, target: Target, inventory: Inventory | None) -> None:
        """After a run's module scan: how many processes on this host hold an old copy of the
        target's modules, and how many the scan could not read (-1: the scan failed)."""
        if inventory is None:
            old, unreadable = NO_VERDICT, NO_VERDICT
        else:
            old, unreadable = len(inventory.old_copies), inventory.denied
            if old:
                log.warning(
                    "stale_modules",
                    target=target.name,
                    pids=sorted({hit.process.pid for hit in inventory.old_copies}),
                )
            if unreadable:
                log.warning(
                    "module_scan_blind",
                    target=target.name,
                    unreadable=unreadable,
                    scanned=inventory.scanned,
                    advice=inventory.unreadable_advice,
                    note=inventory.unreadable_note(),
                )
        if self.metrics is not None:
            self.metrics.set_stale_modules(target.name, old, unreadable)

    # -- state change: evidence and the command ---------------------------------------------

    def write_evidence(self, directory: Path, target: Target, judged: Judged) -> Path | None:
        """The first critical run of an incident: write its evidence bundle while it is fresh."""
        run_id = judged.record.run.run_id
        path = directory / f"{judged.target}-{run_id}.zip"
        password = target.security.password
        secrets = [password.reveal()] if password is not None else []
        try:
            directory.mkdir(parents=True, exist_ok=True)
            # The command that makes this bundle again; the burst it records is rebuilt from the
            # run's options, and the log is this run's events (watch keeps no other artifact).
            db = ["--db", str(self.ledger.path)] if self.ledger.path is not None else []
            command_line = ["notifyprobe", "evidence", run_id, *db, "--out", str(path)]
            keep_log(self.ledger, run_id, run_events(judged.record, target.name), secrets)
            make_bundle(self.ledger, run_id, path, secrets=secrets, command_line=command_line)
        except (OSError, ProbeError) as exc:
            log.error("evidence_write_failed", path=str(path), error=str(exc))
            return None
        log.info("evidence_written", target=judged.target, path=str(path))
        return path

    def payload(
        self, target: Target, previous: TargetState | None, judged: Judged, bundle_path: Path | None
    ) -> bytes:
        data = {
            "schema_version": SCHEMA_VERSION,
            "event": "verdict_changed",
            "target": target.name,
            "gateway": str(target.gateway),
            "previous": (
                {
                    "pattern": previous.pattern.value,
                    "severity": previous.severity.name.lower(),
                    "run_id": previous.run_id,
                }
                if previous
                else None
            ),
            "current": judged.verdict.to_dict(),
            "evidence": str(bundle_path) if bundle_path else None,
            "story": judged.story.to_dict(),
            "run": to_json(judged.record, judged.verdict),
        }
        return (json.dumps(data, indent=2) + "\n").encode("utf-8")

    def hook_env(
        self, target: Target, previous: TargetState | None, judged: Judged, bundle_path: Path | None
    ) -> dict[str, str]:
        """The probe's environment minus its secrets, plus the verdict in NOTIFYPROBE_* vars."""
        secret_vars = {
            t.security.password.source.removeprefix("env:")
            for t in self.config.targets
            if t.security.password is not None and t.security.password.source.startswith("env:")
        }
        env = {k: v for k, v in os.environ.items() if k not in secret_vars}
        outage = judged.story.outage
        env.update(
            NOTIFYPROBE_EVENT="verdict_changed",
            NOTIFYPROBE_TARGET=target.name,
            NOTIFYPROBE_RUN_ID=judged.record.run.run_id,
            NOTIFYPROBE_PATTERN=judged.verdict.pattern.value,
            NOTIFYPROBE_SEVERITY=judged.verdict.severity.name.lower(),
            NOTIFYPROBE_PREVIOUS_PATTERN=previous.pattern.value if previous else "",
            NOTIFYPROBE_EVIDENCE=str(bundle_path) if bundle_path else "",
            NOTIFYPROBE_OUTAGE_SINCE=outage.since_run if outage is not None else "",
        )
        return env

    # -- ledger: recovery, history, retention ------------------------------------------------

    def cut_runs(self) -> list[str]:
        """This watch's runs left without a verdict: killed, crashed, or cut by a stop.

        Only runs a watch started (they carry a target name) count: a `burst` in another
        process may be running on the same ledger right now.
        """
        targets = {t.name for t in self.config.targets}
        return [
            run_id
            for run_id in self.ledger.unjudged_runs()
            if self.ledger.load(run_id).run.options.target in targets
        ]

    def recover(self) -> list[Judged]:
        """Judge the cut runs as interrupted (`inconclusive`: a stop proves nothing); they never
        set a target's state or fire a state change."""
        judged: list[Judged] = []
        for run_id in self.cut_runs():
            was = self.ledger.load(run_id).run.status
            record, verdict = judge_cut_run(self.ledger, run_id)
            target = record.run.options.target
            log.warning(
                "interrupted_run_judged",
                target=target,
                run_id=run_id,
                pattern=verdict.pattern.value,
                was=was,
            )
            judged.append(Judged(target, record, verdict))
        return judged

    def load_states(self) -> None:
        """Each target's state from its last conclusive run, judged again with what the ledger
        holds now (corrections stored and counted): a restart neither re-pages nor shows the
        verdict of a run that a stop or a kill cut off."""
        for target in self.config.targets:
            walked: list[str] = []
            for run_id in self.ledger.judged_runs(target.name, LOOK_BACK_RUNS):
                walked.append(run_id)
                verdict = self.revise(target.name, run_id)
                if verdict is None or verdict.pattern is Pattern.INCONCLUSIVE:
                    continue
                record = self.ledger.load(run_id)
                story = story_of(self.ledger, record, verdict)
                verdict = as_told(verdict, story)
                self.states[target.name] = TargetState(
                    verdict.pattern, verdict.severity, run_id, story.outage
                )
                if self.metrics is not None:
                    run = record.run
                    at = run.finished_at or run.started_at
                    self.metrics.show_verdict(target.name, verdict, at, at - run.started_at)
                break
            self.looks[target.name] = walked  # the runs that late mail may still correct

    def retain(self) -> None:
        now = time.time()
        if now - self._last_retention < RETENTION_EVERY_S:
            return
        self._last_retention = now
        deleted = self.ledger.delete_runs_before(now - self.config.retention_days * 86400.0)
        if deleted:
            log.info("retention", deleted_runs=deleted, days=self.config.retention_days)


async def until_stopped(stop: asyncio.Event, delay_s: float) -> None:
    """Wait `delay_s` (the interval: nothing to wait for but time), or until `stop` is set.

    A stop also cancels the target's task, but a cancellation can be lost on the way:
    `asyncio.wait_for` in Python 3.11 (aiosmtplib's timeouts use it) returns the awaited call's
    result when the cancellation comes as that call completes. The task would then sleep a
    whole interval and hold the stop; waiting on the event too ends it either way."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), delay_s)


class DaemonWorkers:
    """Daemon threads kept for the next job. Starting a thread makes the starter wait until
    the new thread runs: milliseconds for the loop on a busy host (200 targets: 8 % of its
    time while the runs start), so a thread is started only when none is idle. Daemon: the
    process exits without joining one (a scan that hangs on a read never holds a stop), and a
    job never waits for another (a hung one holds its own thread only)."""

    def __init__(self, name: str):
        self.name = name
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        """Run `job` (which must not raise) on an idle thread, or a new one."""
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1  # reserved: the job put next is that thread's
        self._jobs.put(job)
        if start:
            threading.Thread(target=self._work, name=self.name, daemon=True).start()

    @property
    def idle(self) -> int:
        """Threads waiting for a job."""
        return self._idle

    def _work(self) -> None:
        while True:
            self._jobs.get()()
            with self._lock:
                self._idle += 1


SCANS = DaemonWorkers("watch-scan")


async def in_daemon_thread(work: Callable[[], T]) -> T:
    """`work()` in a daemon thread (`SCANS`): a stop cancels the wait at once and the process
    exits without joining the thread (a scan of a host that hangs on a read never holds a
    stop)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def thread() -> None:
        try:
            result = work()
        except BaseException as exc:  # handed to the awaiting coroutine, as to_thread does
            error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(settle, lambda: future.set_exception(error))
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, lambda: future.set_result(result))

    SCANS.submit(thread)
    return await future


def sink_endpoint(listen: Endpoint, port: int) -> Endpoint:
    """Where runs send their control message: a wildcard listen address is reached on loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(listen.host, listen.host)
    return Endpoint(host, port)


async def run_hook(on_change: OnChange, payload: bytes, env: dict[str, str]) -> bool:
    """Run the state-change command with the verdict JSON on stdin; failures are logged only."""
    argv = list(on_change.command)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        log.error("state_change_command_failed", command=argv[0], error=exc.strerror)
        return False
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(payload), on_change.timeout_s)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        log.error("state_change_command_timeout", command=argv[0], timeout_s=on_change.timeout_s)
        return False
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        log.error(
            "state_change_command_failed",
            command=argv[0],
            exit_code=proc.returncode,
            stderr=stderr.decode("utf-8", "replace")[-HOOK_OUTPUT_LIMIT:],
        )
        return False
    log.info("state_change_command_done", command=argv[0])
    return True
