"""`notifyprobe watch`: keep probing every target on an interval after the upgrade is verified.

One long-lived sink serves all targets (runs tell their mail apart by run id), every fact goes to
the ledger as it happens, and a run cut off by a kill or a stop is judged from the ledger when
the watch starts (or stops) again. On a verdict change a configured command gets the verdict JSON
on stdin, so it can page, open a ticket or collect evidence.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from probe.delivery import (
    DeliveryHub,
    ProbeSettings,
    SharedSink,
    Sink,
    judge_cut_run,
    revisit,
    run_probe,
)
from probe.errors import ProbeError
from probe.host import local_source, take_inventory
from probe.ledger import Ledger, LedgerWriter
from probe.monitor.config import OnChange, Target, WatchConfig
from probe.monitor.metrics import Metrics
from probe.records import Endpoint, RunRecord
from probe.reporting import make_bundle, to_json
from probe.verdict import Pattern, Severity, Verdict

log = structlog.get_logger("notifyprobe.watch")

RETENTION_EVERY_S = 3600.0
HOOK_OUTPUT_LIMIT = 500  # characters of a failed command's stderr kept in the log


@dataclass(frozen=True)
class TargetState:
    """The last verdict of a target: what a new verdict is compared with."""

    pattern: Pattern
    severity: Severity
    run_id: str


@dataclass(frozen=True)
class Judged:
    """One judged run of a target, live or recovered from the ledger."""

    target: str
    record: RunRecord
    verdict: Verdict
    elapsed_s: float | None = None


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
    )


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
        self.worst = Severity.OK
        self._last_retention = 0.0

    # -- the whole service -----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> Severity:
        """Watch until `stop` is set (or, with `once`, until every target ran once).

        Returns the worst severity seen in this session (the exit code of `--once`).
        """
        self.recover()
        self.retain()
        self.load_states()
        if self.metrics is not None:
            self.metrics.add_targets((t.name, t.burst_interval_s) for t in self.config.targets)
            for name, state in self.states.items():
                record = self.ledger.load(state.run_id)
                at = record.run.finished_at or record.run.started_at
                self.metrics.show_verdict(name, state.pattern, state.severity, at)
        writer = LedgerWriter(self.ledger)
        hub = DeliveryHub()
        cfg = self.config
        sink = Sink(writer, host=cfg.sink.host, port=cfg.sink.port, domain=cfg.domain,
                    on_delivery=hub, access=cfg.sink_access)  # fmt: skip
        try:
            await sink.start()
        except BaseException:
            await writer.close()
            raise
        if self.metrics is not None:
            self.metrics.sink_up.set(1)
        shared = SharedSink(writer, hub, sink_endpoint(cfg.sink, sink.port))
        self.announce(f"sink listening on {sink.address} for @{cfg.domain}")
        log.info("watch_started", targets=[t.name for t in cfg.targets], sink=sink.address)
        tasks = [
            asyncio.create_task(self.watch_target(t, shared), name=f"watch-{t.name}")
            for t in cfg.targets
        ]
        stopped = asyncio.create_task(stop.wait())
        all_ran = asyncio.gather(*tasks, return_exceptions=True)  # ends only with `once`
        try:
            either: list[asyncio.Future[Any]] = [all_ran, stopped]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Stop: cut every run short. run_probe records what it knows and marks the run
            # interrupted; it is judged below, from the ledger, like a run cut off by a kill.
            for task in [*tasks, stopped]:
                task.cancel()
            await asyncio.gather(all_ran, stopped, return_exceptions=True)
            await sink.stop()
            await writer.close()
            if self.metrics is not None:
                self.metrics.sink_up.set(0)
            self.recover()
            log.info("watch_stopped")
        return self.worst

    # -- one target ------------------------------------------------------------------------

    async def watch_target(self, target: Target, shared: SharedSink) -> None:
        rng = random.Random(f"{self.config.seed}:{target.name}")
        delay = first_delay(target, rng)
        while True:
            if delay > 0:
                await asyncio.sleep(delay)  # the interval itself: nothing to wait for but time
            started = time.monotonic()
            try:  # everything of one round: a failure must never end this target's loop
                self.look_back(target)
                outcome = await run_probe(
                    self.ledger, settings_for(self.config, target), shared=shared
                )
                judged = Judged(target.name, outcome.record, outcome.verdict, outcome.elapsed_s)
                await self.after_run(target, judged)
                if not self.config.once:
                    self.retain()
            except Exception as exc:  # the next run may well work: log, count, carry on
                if isinstance(exc, ProbeError):
                    log.error("watch_run_failed", target=target.name, error=str(exc))
                else:
                    log.exception("watch_run_crashed", target=target.name)
                if self.metrics is not None:
                    self.metrics.probe_errors.labels(target.name).inc()
                self.worst = max(self.worst, Severity.UNKNOWN)
            if self.config.once:
                return
            delay = next_delay(target, rng, time.monotonic() - started)

    async def after_run(self, target: Target, judged: Judged) -> None:
        verdict, record = judged.verdict, judged.record
        self.worst = max(self.worst, verdict.severity)
        if self.metrics is not None:
            at = record.run.finished_at or time.time()
            self.metrics.observe_run(target.name, record, verdict, judged.elapsed_s or 0.0, at)
            if target.modules:
                self.metrics.set_stale_modules(target.name, await stale_modules(target))
        previous = self.states.get(target.name)
        self.states[target.name] = TargetState(verdict.pattern, verdict.severity,
                                               record.run.run_id)  # fmt: skip
        log.info("watch_run_judged", target=target.name, run_id=record.run.run_id,
                 pattern=verdict.pattern.value, severity=verdict.severity.name.lower())  # fmt: skip
        if not changed(previous, verdict):
            return
        log.warning("verdict_changed", target=target.name, run_id=record.run.run_id,
                    previous=previous.pattern.value if previous else None,
                    pattern=verdict.pattern.value)  # fmt: skip
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
            ok = await run_hook(on_change, self.payload(target, previous, judged, bundle_path),
                                self.hook_env(target, previous, judged, bundle_path))  # fmt: skip
            if not ok and self.metrics is not None:
                self.metrics.hook_failures.labels(target.name).inc()

    def look_back(self, target: Target) -> None:
        """Re-judge the target's previous run with the mail that arrived after its verdict."""
        previous = self.states.get(target.name)
        if previous is None:
            return
        looked = revisit(self.ledger, previous.run_id, time.time())
        r = looked.revision
        if not looked.newly_corrected or r is None:
            return
        log.warning("verdict_corrected", target=target.name, run_id=previous.run_id,
                    original=r.original.value, corrected=r.current.pattern.value, late=r.late,
                    last_late_s=r.last_late_s, summary=r.summary())  # fmt: skip
        if self.metrics is not None:
            self.metrics.corrected.labels(target.name).inc()

    # -- state change: evidence and the command ---------------------------------------------

    def write_evidence(self, directory: Path, target: Target, judged: Judged) -> Path | None:
        """The first critical run of an incident: write its evidence bundle while it is fresh."""
        run_id = judged.record.run.run_id
        path = directory / f"{judged.target}-{run_id}.zip"
        password = target.security.password
        secrets = [password.reveal()] if password is not None else []
        try:
            directory.mkdir(parents=True, exist_ok=True)
            command_line = ["notifyprobe", "watch", "--target", target.name]
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
        env.update(
            NOTIFYPROBE_EVENT="verdict_changed",
            NOTIFYPROBE_TARGET=target.name,
            NOTIFYPROBE_RUN_ID=judged.record.run.run_id,
            NOTIFYPROBE_PATTERN=judged.verdict.pattern.value,
            NOTIFYPROBE_SEVERITY=judged.verdict.severity.name.lower(),
            NOTIFYPROBE_PREVIOUS_PATTERN=previous.pattern.value if previous else "",
            NOTIFYPROBE_EVIDENCE=str(bundle_path) if bundle_path else "",
        )
        return env

    # -- ledger: recovery, history, retention ------------------------------------------------

    def recover(self) -> list[Judged]:
        """Judge the watch's runs left without a verdict (killed, or cut short by a stop).

        Only runs a watch started (they carry a target name) are touched: a `burst` in another
        process may be running on the same ledger right now.
        """
        judged: list[Judged] = []
        for run_id in self.ledger.unjudged_runs():
            target = self.ledger.load(run_id).run.options.get("target")
            if not isinstance(target, str) or not target:
                continue
            record, verdict = judge_cut_run(self.ledger, run_id)
            log.warning("run_recovered", target=target, run_id=run_id,
                        pattern=verdict.pattern.value, was=record.run.status)  # fmt: skip
            judged.append(Judged(target, record, verdict))
        return judged

    def load_states(self) -> None:
        """Each target's last verdict from the ledger, so a restart does not re-page."""
        for target in self.config.targets:
            run_id = self.ledger.last_judged_run(target.name)
            stored = self.ledger.stored_verdict(run_id) if run_id else None
            if run_id and stored:
                try:
                    pattern = Pattern(str(stored["pattern"]))
                    severity = Severity[str(stored["severity"]).upper()]
                except (KeyError, ValueError):
                    continue
                self.states[target.name] = TargetState(pattern, severity, run_id)

    def retain(self) -> None:
        now = time.time()
        if now - self._last_retention < RETENTION_EVERY_S:
            return
        self._last_retention = now
        deleted = self.ledger.delete_runs_before(now - self.config.retention_days * 86400.0)
        if deleted:
            log.info("retention", deleted_runs=deleted, days=self.config.retention_days)


async def stale_modules(target: Target) -> int:
    """How many processes on this host hold an old copy of the target's modules."""
    try:
        inventory = await asyncio.to_thread(
            take_inventory, local_source(), target.modules, target.installed
        )
    except ProbeError as exc:
        log.error("module_inventory_failed", target=target.name, error=str(exc))
        return 0
    old = inventory.old_copies
    if old:
        log.warning("stale_modules", target=target.name,
                    pids=sorted({hit.process.pid for hit in old}))  # fmt: skip
    return len(old)


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
        log.error("state_change_command_failed", command=argv[0], exit_code=proc.returncode,
                  stderr=stderr.decode("utf-8", "replace")[-HOOK_OUTPUT_LIMIT:])  # fmt: skip
        return False
    log.info("state_change_command_done", command=argv[0])
    return True
