"""`notifyprobe watch`: scheduling, state changes, recovery, retention, and the real service."""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import structlog

from probe.cli import build_parser
from probe.delivery.settings import BurstSettings
from probe.delivery.settle import Patience
from probe.lab.gateway import FaultMode, LabGateway
from probe.ledger import Ledger
from probe.logs import configure
from probe.monitor.config import OnChange, Target, WatchConfig
from probe.monitor.metrics import Metrics
from probe.monitor.watch import TargetState, Watcher, changed, first_delay, next_delay
from probe.records import Endpoint, Run, RunOptions, Submission
from probe.verdict import Pattern, Severity, Verdict
from tests.cli import DEVNULL, PIPE, CliProcess, run_cli, start_cli
from tests.known import kept
from tests.monitor.test_metrics import PROMTOOL
from tests.ports import unused_port
from tests.test_cli import ENV, probe, service

WAIT_S = 20.0  # upper bound of every wait on another process


def target(
    name: str,
    gateway: Endpoint,
    count: int = 4,
    *,
    burst_interval_s: float = 3600.0,
    jitter: float = 0.0,
    patience: Patience | None = None,
    modules: tuple[str, ...] = (),
    installed: tuple[str, ...] = (),
) -> Target:
    return Target(
        name=name,
        gateway=gateway,
        burst_interval_s=burst_interval_s,
        jitter=jitter,
        burst=BurstSettings(count=count),
        patience=patience or Patience(settle_s=1.0, timeout_s=5.0),  # lab gateways relay at once
        modules=modules,
        installed=installed,
    )


# -- scheduling and state changes: pure ------------------------------------------------------


def test_jitter_is_seeded_and_stays_within_its_fraction():
    t = target("gw", Endpoint("127.0.0.1", 25), burst_interval_s=100.0, jitter=0.2)
    delays = [next_delay(t, random.Random("0:gw"), 0.0) for _ in range(3)]
    assert len(set(delays)) == 1  # same seed, same schedule
    rng = random.Random(7)
    spread = [next_delay(t, rng, 0.0) for _ in range(200)]
    assert 80.0 <= min(spread) < 90.0 and 110.0 < max(spread) <= 120.0
    assert next_delay(t, random.Random(1), elapsed_s=500.0) == 0.0  # late run: start next now
    assert all(0.0 <= first_delay(t, rng) <= 20.0 for _ in range(50))


def verdict(pattern: Pattern, severity: Severity) -> Verdict:
    return Verdict(pattern, severity, "summary")


def test_a_state_change_is_another_pattern_and_a_first_verdict_only_when_not_ok():
    healthy = verdict(Pattern.HEALTHY, Severity.OK)
    first_only = verdict(Pattern.FIRST_ONLY, Severity.CRITICAL)
    assert not changed(None, healthy)
    assert changed(None, first_only)
    was_healthy = TargetState(Pattern.HEALTHY, Severity.OK, "r")
    assert changed(was_healthy, first_only) and not changed(was_healthy, healthy)
    was_first_only = TargetState(Pattern.FIRST_ONLY, Severity.CRITICAL, "r")
    assert changed(was_first_only, verdict(Pattern.NONE_DELIVERED, Severity.CRITICAL))


# -- in process: the watcher with lab gateways --------------------------------------------------


@pytest.fixture
def captured_logs() -> Iterator[None]:
    """The logging `watch` sets up (its events captured for the bundle), undone afterwards."""
    configure(level="warning")
    try:
        yield
    finally:
        structlog.reset_defaults()


@pytest.mark.real
async def test_state_change_runs_the_command_with_the_verdict_and_writes_evidence(
    tmp_path, captured_logs
):
    sink = Endpoint("127.0.0.1", unused_port())
    out = tmp_path / "hook.json"
    script = (
        "import os, sys, pathlib; data = sys.stdin.read();"
        f"pathlib.Path({str(out)!r}).write_text(data + os.environ['NOTIFYPROBE_PATTERN'])"
    )
    command = (sys.executable, "-c", script)
    async with LabGateway(Endpoint("127.0.0.1", 0), sink, FaultMode.parse("first-only")) as gw:
        cfg = WatchConfig(
            targets=(target("gw", gw.listen),),
            sink=sink,
            once=True,
            on_change=OnChange(command, timeout_s=10.0, evidence_dir=tmp_path / "evidence"),
        )
        with Ledger(tmp_path / "l.db") as ledger:
            worst = await Watcher(cfg, ledger, Metrics()).run(asyncio.Event())
    assert worst is Severity.CRITICAL
    text = out.read_text()
    assert text.endswith("}\nfirst_only")  # JSON on stdin, the pattern in the environment
    payload = json.loads(text.removesuffix("first_only"))
    assert payload["target"] == "gw" and payload["previous"] is None
    assert payload["current"]["pattern"] == "first_only"
    evidence = Path(payload["evidence"])
    assert evidence.parent == tmp_path / "evidence" and evidence.suffix == ".zip"
    assert evidence.with_name(evidence.name + ".sha256").exists()
    with zipfile.ZipFile(evidence) as bundle:
        report = json.loads(bundle.read("report.json"))
        manifest = json.loads(bundle.read("manifest.json"))
        log_lines = bundle.read("log.jsonl").decode().splitlines()
    assert report["run_id"] == payload["run"]["run_id"]
    # Commands a user can run again: the bundle's own, and the burst the watch sent.
    made, burst = manifest["command_line"], manifest["run_command_line"]
    assert made[:3] == ["notifyprobe", "evidence", report["run_id"]]
    assert burst[:4] == ["notifyprobe", "burst", "--gateway", str(gw.listen)]
    for argv in (made, burst):
        args = build_parser(argv[1:]).parse_args(argv[1:])
        assert args.command == argv[1]
    # The run's own log: at least the verdict the watch judged.
    events = [json.loads(line) for line in log_lines]
    assert any(e.get("event") == "watch_run_judged" for e in events), events


@pytest.mark.real
async def test_no_command_when_the_verdict_stays_the_same_across_restarts(tmp_path):
    sink = Endpoint("127.0.0.1", unused_port())
    marker = tmp_path / "called"
    command = (sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x')")
    with Ledger(tmp_path / "l.db") as ledger:
        for _ in range(2):  # the second watch starts from the verdict in the ledger
            # A fresh gateway each time: a stopped sink does not close the relay's live session.
            async with LabGateway(Endpoint("127.0.0.1", 0), sink, FaultMode("healthy")) as gw:
                cfg = WatchConfig(
                    targets=(target("gw", gw.listen),),
                    sink=sink,
                    once=True,
                    on_change=OnChange(command),
                )
                assert await Watcher(cfg, ledger).run(asyncio.Event()) is Severity.OK
        assert len(ledger.run_ids()) == 2
    assert not marker.exists()


@pytest.mark.real
async def test_a_failing_command_is_logged_and_counted_not_fatal(tmp_path):
    sink = Endpoint("127.0.0.1", unused_port())
    cfg = WatchConfig(
        targets=(target("gw", Endpoint("127.0.0.1", unused_port()), count=1),),
        sink=sink,
        once=True,
        on_change=OnChange((str(tmp_path / "no-such-program"),)),
    )
    metrics = Metrics()
    with Ledger(tmp_path / "l.db") as ledger:
        assert await Watcher(cfg, ledger, metrics).run(asyncio.Event()) is Severity.CRITICAL
    exposition = metrics.exposition().decode()
    assert 'notifyprobe_state_change_command_failures_total{target="gw"} 1.0' in exposition
    assert 'notifyprobe_verdict{pattern="gateway_unreachable",target="gw"} 1.0' in exposition


@pytest.mark.real
async def test_the_next_run_corrects_a_verdict_that_late_mail_proved_wrong(tmp_path, capsys):
    sink = Endpoint("127.0.0.1", unused_port())
    metrics = Metrics()
    # A queue runner every 1 s judged with a 0.3 s window: the first run reads first_only
    # until its batch arrives; the second run starts after it and looks back.
    async with LabGateway(Endpoint("127.0.0.1", 0), sink, FaultMode.parse("batch:1")) as gw:
        window = Patience(settle_s=0.3, timeout_s=5.0)
        cfg = WatchConfig(
            targets=(target("gw", gw.listen, count=3, patience=window, burst_interval_s=2.0),),
            sink=sink,
        )
        with Ledger(tmp_path / "l.db") as ledger:
            watcher = Watcher(cfg, ledger, metrics)
            stop = asyncio.Event()
            task = asyncio.create_task(watcher.run(stop))
            deadline = time.monotonic() + WAIT_S
            while len(ledger.run_ids()) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            stop.set()
            await task
            first = ledger.run_ids()[-1]
            assert kept(ledger.stored_verdict(first))["pattern"] == "first_only"
            assert kept(ledger.corrected_verdict(first))["pattern"] == "healthy"
    exposition = metrics.exposition().decode()
    corrected = 'from_pattern="first_only",target="gw",to_pattern="healthy"'
    assert f"notifyprobe_verdicts_corrected_total{{{corrected}}} 1.0" in exposition
    log = [line for line in capsys.readouterr().out.splitlines() if "verdict_corrected" in line]
    assert len(log) == 1 and "first_only" in log[0] and "healthy" in log[0]


def test_recovery_judges_cut_watch_runs_and_leaves_other_runs_alone(tmp_path):
    with Ledger(tmp_path / "l.db") as ledger:
        for run_id, options in (
            ("aaaaaaaaaa", RunOptions(target="gw")),
            ("bbbbbbbbbb", RunOptions()),
        ):
            ledger.create_run(
                Run(run_id, "gw:25", "probe.invalid", count=3, started_at=100.0, options=options)
            )
            ledger.record_submission(run_id, 1, Submission(100.0, 100.1, "data"))
        cfg = WatchConfig(targets=(target("gw", Endpoint("127.0.0.1", 25)),))
        recovered = Watcher(cfg, ledger).recover()
        assert [j.record.run.run_id for j in recovered] == ["aaaaaaaaaa"]
        assert ledger.load("aaaaaaaaaa").run.status == "interrupted"
        assert ledger.stored_verdict("aaaaaaaaaa") is not None
        assert ledger.unjudged_runs() == ["bbbbbbbbbb"]  # a live `burst` elsewhere, maybe


def test_retention_deletes_old_judged_runs_with_their_rows(tmp_path):
    with Ledger(tmp_path / "l.db") as ledger:
        now = time.time()
        for run_id, started in (("0000000001", now - 40 * 86400), ("0000000002", now)):
            ledger.create_run(Run(run_id, "gw:25", "probe.invalid", count=2, started_at=started))
            ledger.finish_run(run_id, "done", started + 1, "{}")
        cfg = WatchConfig(targets=(target("gw", Endpoint("127.0.0.1", 25)),), retention_days=30)
        Watcher(cfg, ledger).retain()
        assert ledger.run_ids() == ["0000000002"]
    with sqlite3.connect(tmp_path / "l.db") as conn:
        (left,) = conn.execute("SELECT COUNT(*) FROM notifications WHERE run_id = '0000000001'")
    assert left == (0,)


# -- the real service: subprocesses, HTTP scrape, kill and restart -----------------------------


def write_config(
    path: Path, sink: int, ledger: Path, targets: dict[str, int], **extra: str
) -> Path:
    lines = [
        f'sink = "127.0.0.1:{sink}"',
        f'ledger = "{ledger}"',
        'domain = "probe.test"',
        "[limits]",
        "min_interval = 5",
        "[defaults]",
        "interval = 3600",
        "jitter = 0",
        *(f"{k} = {v}" for k, v in extra.items()),
    ]
    for name, port in targets.items():
        lines += ["[[target]]", f'name = "{name}"', f'gateway = "127.0.0.1:{port}"']
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def watch(config: Path, *args: str) -> Iterator[tuple[CliProcess[str], dict[str, int]]]:
    """Start `notifyprobe watch`; yield it with the ports it announced (sink, metrics)."""
    proc = start_cli("watch", "--config", str(config), *args, stderr=PIPE, stdout=DEVNULL, env=ENV)
    assert proc.stderr is not None  # a pipe
    try:
        ports: dict[str, int] = {}
        wanted = {"sink"} | ({"metrics"} if "--metrics" in args else set())
        for _ in range(50):  # bounded: the announcements come first, before any run
            line = proc.stderr.readline()
            match = re.search(r"(sink|metrics) listening on [\d.]+:(\d+)", line)
            if match:
                ports[match.group(1)] = int(match.group(2))
            if not line or wanted <= set(ports):
                break
        assert wanted <= set(ports), f"watch did not announce {wanted}: {ports}"
        yield proc, ports
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stderr.close()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        exposition: bytes = response.read()
        return exposition.decode()


@pytest.mark.real
def test_watch_two_targets_serves_both_verdicts_and_valid_metrics(tmp_path):
    sink = unused_port()
    relay = ("--listen", "127.0.0.1:0", "--relay", f"127.0.0.1:{sink}")
    with (
        service("lab", "gateway", *relay, "--mode", "healthy") as good,
        service("lab", "gateway", *relay, "--mode", "first-only") as bad,
    ):
        config = write_config(
            tmp_path / "watch.toml",
            sink,
            tmp_path / "l.db",
            {"good": good, "bad": bad},
            count="5",
            settle="1",
        )
        with watch(config, "--metrics", "127.0.0.1:0") as (proc, ports):
            wanted = [
                'notifyprobe_verdict{pattern="healthy",target="good"} 1.0',
                'notifyprobe_verdict{pattern="first_only",target="bad"} 1.0',
            ]
            deadline = time.monotonic() + WAIT_S
            text = scrape(ports["metrics"])
            while not all(w in text for w in wanted) and time.monotonic() < deadline:
                time.sleep(0.1)
                text = scrape(ports["metrics"])
            assert all(w in text for w in wanted), text
            assert "notifyprobe_sink_up 1.0" in text
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
    if PROMTOOL is None:
        pytest.skip("promtool not installed (Debian package `prometheus`): lint not run")
    lint = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def ledger_rows(db: Path) -> tuple[set[tuple[str, int, float]], int]:
    """Committed submissions (run, seq, started) and the number of deliveries."""
    with sqlite3.connect(db) as conn:
        submitted = set(
            conn.execute(
                "SELECT run_id, seq, started_at FROM notifications WHERE started_at IS NOT NULL"
            )
        )
        (deliveries,) = conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()
    return submitted, deliveries


def wait_for_submissions(db: Path, at_least: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            if len(ledger_rows(db)[0]) >= at_least:
                return
        except sqlite3.OperationalError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} submissions in {db} after {WAIT_S} s")


@pytest.mark.real
def test_killed_watch_loses_no_row_and_judges_the_cut_run_on_restart(tmp_path):
    sink = unused_port()
    db = tmp_path / "l.db"
    relay = ("--listen", "127.0.0.1:0", "--relay", f"127.0.0.1:{sink}")
    with service("lab", "gateway", *relay, "--mode", "healthy") as gateway:
        config = write_config(
            tmp_path / "watch.toml", sink, db, {"gw": gateway}, count="40", pacing='"100ms"'
        )
        with watch(config) as (proc, _):
            wait_for_submissions(db, at_least=5)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        submitted, deliveries = ledger_rows(db)
        (cut,) = {run_id for run_id, _, _ in submitted}
        with Ledger(db) as ledger:
            assert ledger.load(cut).run.status == "running"  # killed: nobody marked it
        # Restart: the cut run is judged before the sink announces itself; a new run starts.
        with watch(config) as (proc, _):
            with Ledger(db) as ledger:
                assert ledger.load(cut).run.status == "interrupted"
                stored = ledger.stored_verdict(cut)
            wait_for_submissions(db, at_least=len(submitted) + 2)
            proc.send_signal(signal.SIGTERM)  # graceful: the new run is cut and judged too
            assert proc.wait(timeout=10) == 0
    assert stored is not None and stored["pattern"] == "inconclusive"  # not judged healthy
    assert stored["summary"].startswith("cut off after ") and stored["cause"] == "cut_off"
    assert any("run cut off" in line for line in stored["evidence"])
    after, deliveries_after = ledger_rows(db)
    assert submitted <= after  # every submission committed before the kill is still there
    assert deliveries_after >= deliveries
    with Ledger(db) as ledger:
        assert ledger.unjudged_runs() == []
        statuses = {ledger.load(r).run.status for r in ledger.run_ids()}
    assert statuses == {"interrupted"}


@pytest.mark.real
def test_a_second_watch_on_the_same_ledger_stops_at_start_and_a_killed_ones_lock_is_freed(
    tmp_path,
):
    sink = unused_port()
    config = write_config(tmp_path / "watch.toml", sink, tmp_path / "l.db", {"gw": unused_port()})
    with watch(config) as (first, _):
        second = run_cli("watch", "--config", str(config), env=ENV, timeout=60)
        assert second.returncode == 3, second.stderr
        assert "already in use (watch, pid" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    with watch(config) as (third, _):  # the kernel dropped the dead watch's lock
        assert third.poll() is None


@pytest.mark.real
def test_watch_check_validates_and_bad_config_is_one_line_exit_3(tmp_path):
    good = write_config(tmp_path / "ok.toml", 2525, tmp_path / "l.db", {"gw": 25})
    result = probe("watch", "--config", str(good), "--check")
    assert result.returncode == 0 and "is valid: 1 target(s): gw" in result.stdout
    bad = write_config(tmp_path / "bad.toml", 2525, tmp_path / "l.db", {"gw": 25}, count="50000")
    result = probe("watch", "--config", str(bad))
    assert result.returncode == 3
    assert f"notifyprobe: error: config {bad}: target 'gw': count 50000 is above the cap" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.real
def test_watch_once_exits_with_the_worst_state(tmp_path):
    config = write_config(
        tmp_path / "w.toml", unused_port(), tmp_path / "l.db", {"down": unused_port()}, count="2"
    )
    result = probe("watch", "--config", str(config), "--once", timeout=30)
    assert result.returncode == int(Severity.CRITICAL), result.stderr
    with Ledger(tmp_path / "l.db") as ledger:
        (run_id,) = ledger.run_ids()
        assert kept(ledger.stored_verdict(run_id))["pattern"] == "gateway_unreachable"


@pytest.mark.real
async def test_stale_module_on_this_host_is_exported_per_target(tmp_path):
    from fixtures.hold_module import upgraded_while_loaded

    name = f"MPNotifyPerf-{tmp_path.name}.dll"  # the scan sees every process on the host
    sink = Endpoint("127.0.0.1", unused_port())
    with upgraded_while_loaded(tmp_path / name) as dll:
        async with LabGateway(Endpoint("127.0.0.1", 0), sink, FaultMode("healthy")) as gw:
            watched = target("gw", gw.listen, modules=(name,), installed=(str(dll),))
            cfg = WatchConfig(targets=(watched,), sink=sink, once=True)
            metrics = Metrics()
            with Ledger(tmp_path / "l.db") as ledger:
                await Watcher(cfg, ledger, metrics).run(asyncio.Event())
    exposition = metrics.exposition().decode()
    assert 'notifyprobe_stale_modules{target="gw"} 1.0' in exposition
    assert 'notifyprobe_unreadable_processes{target="gw"} ' in exposition


def test_a_module_scan_that_could_not_read_every_process_warns_with_the_advice(
    tmp_path: Path,
) -> None:
    """Recorded Windows host where a service (svchost) could not be read. The log names the
    count and what would let the scan see it; the gauges get the count, not a clean 0."""
    from dataclasses import replace

    from structlog.testing import capture_logs

    from probe.host import RecordedWindows, take_inventory

    recording = (
        Path(__file__).resolve().parents[2] / "fixtures" / "windows" / "meetingplace-gateway.json"
    )
    source = RecordedWindows.load(recording)
    source.processes[1020] = replace(source.processes[1020], error="denied")
    inventory = take_inventory(source, ["NoSuch.dll"])
    watched = target("gw", Endpoint("127.0.0.1", 1), modules=("NoSuch.dll",))
    metrics = Metrics()
    metrics.add_targets([("gw", 60.0)], started_at=0.0)
    cfg = WatchConfig(targets=(watched,), once=True)
    with Ledger(tmp_path / "l.db") as ledger, capture_logs() as logs:
        Watcher(cfg, ledger, metrics).scanned(watched, inventory)
    (blind,) = [e for e in logs if e["event"] == "module_scan_blind"]
    assert blind["log_level"] == "warning" and blind["unreadable"] == 1
    assert "SeDebugPrivilege" in blind["advice"] and "could not read 1 of" in blind["note"]
    exposition = metrics.exposition().decode()
    assert 'notifyprobe_stale_modules{target="gw"} -1.0' in exposition
    assert 'notifyprobe_unreadable_processes{target="gw"} 1.0' in exposition


def test_the_shared_sink_grows_with_the_fleet_and_never_below_the_one_burst_caps():
    from probe.delivery import SinkLimits
    from probe.monitor.watch import fleet_limits

    small, base = fleet_limits(1), SinkLimits()
    assert small.max_per_client >= base.max_per_client
    assert small.max_connections >= base.max_connections
    big = fleet_limits(200)
    assert big.max_per_client >= 200 + SinkLimits().max_per_client  # every control at once
    assert big.max_connections >= 2 * 200  # a relay session and a control message per target
