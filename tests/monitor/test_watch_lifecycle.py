"""`watch` as a long-running service: a stop, a restart and a failing gateway raise no false
alert and keep the schedule. Short explicit windows; the long version is `make soak`."""

from __future__ import annotations

import asyncio
import itertools
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from probe.delivery.settings import BurstSettings
from probe.delivery.settle import Patience
from probe.lab.gateway import FaultMode, LabGateway
from probe.ledger import Ledger
from probe.monitor.config import OnChange, WatchConfig
from probe.monitor.metrics import NO_VERDICT, PATTERNS, Metrics
from probe.monitor.watch import Watcher
from probe.records import Endpoint, ErrorKind
from tests.known import kept
from tests.monitor.gateways import batching_gateway, gateway_process, hung_gateway
from tests.monitor.test_metrics import samples
from tests.monitor.test_watch import WAIT_S, scrape, target, watch, write_config
from tests.ports import unused_port
from tests.waits import TIMEOUT_S, until_async

pytestmark = pytest.mark.real

HUNG_STEP_TIMEOUT_S = 60.0  # far beyond any stop: a stop that waited for it would show


def marker_command(path: Path) -> OnChange:
    return OnChange((sys.executable, "-c", f"open({str(path)!r}, 'a').write('x')"))


async def test_a_stop_cuts_a_hung_step_at_once_drains_accepted_mail_and_raises_nothing(tmp_path):
    sink = Endpoint("127.0.0.1", unused_port())
    hook = tmp_path / "hook-called"
    metrics = Metrics()
    # The first queue run comes 3 s after the gateway starts: after the stop, within the drain.
    holding = asyncio.Event()
    async with hung_gateway(holding) as hung, batching_gateway(sink, every_s=3.0) as batching:
        hangs = BurstSettings(count=3, step_timeout_s=HUNG_STEP_TIMEOUT_S)
        hung_target = replace(target("hung", hung), burst=hangs)
        batch_target = target(
            "batching", batching, count=3, patience=Patience(settle_s=5.0, timeout_s=10.0)
        )
        cfg = WatchConfig(
            targets=(hung_target, batch_target),
            sink=sink,
            stop_drain_s=4.0,
            on_change=marker_command(hook),
        )
        with Ledger(tmp_path / "l.db") as ledger:
            stop = asyncio.Event()
            task = asyncio.create_task(Watcher(cfg, ledger, metrics).run(stop))

            def both_in_flight() -> bool:
                runs = [ledger.load(r) for r in ledger.run_ids()]
                hung_sent = any(r.run.gateway == str(hung) for r in runs)
                batch_accepted = any(
                    r.run.gateway == str(batching)
                    and r.run.status == "running"
                    and sum(1 for n in r.burst if n.attempted) == 3
                    for r in runs
                )
                return hung_sent and batch_accepted

            await until_async(both_in_flight, "both runs in flight")
            await asyncio.wait_for(holding.wait(), TIMEOUT_S)  # a message held, unconfirmed
            stopped_at = time.monotonic()
            stop.set()
            await task
            stop_s = time.monotonic() - stopped_at
            runs = {ledger.load(r).run.gateway: ledger.load(r) for r in ledger.run_ids()}
            stored = {gw: kept(ledger.stored_verdict(r.run.run_id)) for gw, r in runs.items()}
    assert stop_s < HUNG_STEP_TIMEOUT_S / 2  # a stop that waited for the hung step would not be
    cut = runs[str(hung)]
    assert cut.run.status == "interrupted" and stored[str(hung)]["pattern"] == "inconclusive"
    in_flight = cut.burst[0].submission
    assert in_flight is not None and in_flight.error_kind is ErrorKind.INTERRUPTED
    assert in_flight.steps[-1].command == "message and ."  # cut while waiting for the reply
    assert in_flight.stalled_at is None  # the probe stopped: no stall is blamed on the gateway
    drained = runs[str(batching)]
    assert drained.run.status == "interrupted"
    assert all(n.copies for n in drained.burst)  # accepted before the stop, received in the drain
    assert stored[str(batching)]["pattern"] == "healthy"
    s = samples(metrics)
    for name in ("hung", "batching"):  # a stop is not a verdict: no state, no alert, no command
        assert s[("notifyprobe_verdict_severity", (("target", name),))] == NO_VERDICT
    assert not hook.exists()


async def test_a_restart_shows_the_last_conclusive_verdict_not_the_run_a_stop_cut(tmp_path):
    sink = Endpoint("127.0.0.1", unused_port())
    db = tmp_path / "l.db"
    hook = tmp_path / "hook-called"
    with Ledger(db) as ledger:
        async with LabGateway(Endpoint("127.0.0.1", 0), sink, FaultMode("healthy")) as gw:
            cfg = WatchConfig(targets=(target("gw", gw.listen),), sink=sink, once=True)
            await Watcher(cfg, ledger).run(asyncio.Event())
        (healthy_run,) = ledger.run_ids()
        holding = asyncio.Event()
        async with hung_gateway(holding) as hung:  # the same target, cut by a stop while it hangs
            cfg = WatchConfig(targets=(target("gw", hung),), sink=sink)
            stop = asyncio.Event()
            task = asyncio.create_task(Watcher(cfg, ledger).run(stop))
            await asyncio.wait_for(holding.wait(), TIMEOUT_S)
            stop.set()
            await task
        assert kept(ledger.stored_verdict(ledger.run_ids()[0]))["pattern"] == "inconclusive"

        async with LabGateway(Endpoint("127.0.0.1", 0), sink, FaultMode("healthy")) as gw:
            metrics = Metrics()
            at_start: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
            cfg = WatchConfig(
                targets=(target("gw", gw.listen),),
                sink=sink,
                once=True,
                on_change=marker_command(hook),
            )
            watcher = Watcher(cfg, ledger, metrics, lambda _: at_start.update(samples(metrics)))
            await watcher.run(asyncio.Event())
        finished = ledger.load(healthy_run).run.finished_at
    gw_label = (("target", "gw"),)
    assert at_start[("notifyprobe_verdict_severity", gw_label)] == 0  # healthy: OK, not -1
    assert at_start[("notifyprobe_verdict", (("pattern", "healthy"),) + gw_label)] == 1
    assert at_start[("notifyprobe_last_run_timestamp_seconds", gw_label)] == finished
    assert at_start[("notifyprobe_sink_verified", gw_label)] == 1
    assert not hook.exists()  # healthy after healthy: the cut run in between is no change


async def test_a_failing_gateway_keeps_its_interval(tmp_path):
    sink = Endpoint("127.0.0.1", unused_port())
    interval_s = 2.0
    # A first-only gateway with a window far longer than the interval: without the budget each
    # run would wait the whole window for mail that never comes.
    async with LabGateway(Endpoint("127.0.0.1", 0), sink, FaultMode.parse("first-only")) as gw:
        slow_to_give_up = Patience(settle_s=20.0, timeout_s=20.0)
        watched = target(
            "gw", gw.listen, count=3, burst_interval_s=interval_s, patience=slow_to_give_up
        )
        with Ledger(tmp_path / "l.db") as ledger:
            stop = asyncio.Event()
            task = asyncio.create_task(
                Watcher(WatchConfig((watched,), sink=sink, stop_drain_s=0.5), ledger).run(stop)
            )
            await until_async(lambda: len(ledger.run_ids()) >= 3, "three runs")
            stop.set()
            await task
            runs = sorted(
                (ledger.load(r).run for r in ledger.run_ids()), key=lambda r: r.started_at
            )
    starts = [r.started_at for r in runs]
    assert all(b - a < interval_s * 1.2 for a, b in itertools.pairwise(starts))
    judged = [r for r in runs if r.status == "done"]
    assert len(judged) >= 2
    assert all(
        r.finished_at is not None and r.finished_at - r.started_at <= watched.run_budget_s + 0.5
        for r in judged
    )


def test_first_scrape_has_every_series_and_sigterm_with_a_hung_gateway_is_quick(tmp_path):
    sink = unused_port()
    holding = threading.Event()
    with gateway_process("hung", holding=holding) as hung:
        targets = {"hung": hung, "down": unused_port()}
        config = write_config(
            tmp_path / "watch.toml", sink, tmp_path / "l.db", targets, step_timeout='"60s"'
        )
        config.write_text('stop_drain = "2s"\n' + config.read_text())
        with watch(config, "--metrics", "127.0.0.1:0") as (proc, ports):
            first = scrape(ports["metrics"])
            deadline = time.monotonic() + WAIT_S
            assert proc.stderr is not None
            while "run_started" not in (line := proc.stderr.readline()):
                assert line and time.monotonic() < deadline, "no run started"
            assert holding.wait(TIMEOUT_S), "the hung gateway never got a whole message"
            sent_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            stop_s = time.monotonic() - sent_at
    assert stop_s < HUNG_STEP_TIMEOUT_S / 2  # a stop that waited for the hung step would not be
    for name in ("hung", "down"):
        label = f'target="{name}"'
        for series in (
            "notifyprobe_verdict_severity",
            "notifyprobe_last_run_timestamp_seconds",
            "notifyprobe_last_run_duration_seconds",
            "notifyprobe_sink_verified",
            "notifyprobe_stale_modules",
            "notifyprobe_unreadable_processes",
            "notifyprobe_interval_seconds",
            "notifyprobe_notifications_sent_total",
            "notifyprobe_probe_errors_total",
        ):
            assert f"{series}{{{label}}}" in first, (series, name)
        assert all(f'notifyprobe_verdict{{pattern="{p}",{label}}}' in first for p in PATTERNS)
        corrected = f'from_pattern="first_only",{label},to_pattern="healthy"'
        assert f"notifyprobe_verdicts_corrected_total{{{corrected}}} 0.0" in first
