"""The soak test of `notifyprobe watch` as a service (`make soak`, about 3-4 minutes).

Six targets on one watch, 10 s apart, scraped over HTTP every second: a healthy relay (lab),
two gateways written here that deliver in batches every 2 and 4 s, one that delivers the
first message of a session at once and the rest at its next queue run, judged with a window
too short for it (1 s), a first-only gateway (lab) and one that hangs after DATA. The watch is
stopped with SIGTERM while runs are in flight and started again, twice. What must hold:

- no CRITICAL for the healthy and batching targets at any scrape, stop or restart included
  (the short-window target is CRITICAL by design: its window never allows its batches);
- every series of every target at each process's first scrape;
- each stop within the drain plus 3 s, whatever the hung gateway is doing;
- every notification the healthy and batching gateways accepted is in the ledger as delivered
  (mail still queued at the last stop is collected by a sink started afterwards);
- the short-window target's first run is stored as corrected and counted in the metric;
- the failing targets keep their interval.

Not part of `make test`: it is long by nature. The figures are printed at the end.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import sqlite3
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from probe.monitor.metrics import PATTERNS
from tests.monitor.gateways import gateway_process
from tests.monitor.test_watch import scrape
from tests.ports import unused_port
from tests.test_cli import ENV, PROBE, service

pytestmark = pytest.mark.real  # real processes and sockets on loopback

INTERVAL_S = 10.0
STOP_DRAIN_S = 6.0
PHASES_S = (55.0, 55.0, 50.0)  # three watch processes: two stops and restarts during runs
SCRAPE_EVERY_S = 1.0
NEVER_CRITICAL = ("healthy", "batch-2s", "batch-4s")
EVERY_SERIES = (
    "notifyprobe_verdict_severity",
    "notifyprobe_last_run_timestamp_seconds",
    "notifyprobe_last_run_duration_seconds",
    "notifyprobe_sink_verified",
    "notifyprobe_stale_modules",
    "notifyprobe_unreadable_processes",
    "notifyprobe_interval_seconds",
    "notifyprobe_notifications_sent_total",
    "notifyprobe_notifications_accepted_total",
    "notifyprobe_notifications_delivered_total",
    "notifyprobe_probe_errors_total",
    "notifyprobe_state_change_command_failures_total",
)


@dataclass
class Figures:
    scrapes: int = 0
    critical: dict[str, int] = field(default_factory=dict)  # per target, scrapes at CRITICAL
    stops_s: list[float] = field(default_factory=list)
    runs: int = 0
    interrupted: int = 0
    corrected: float = 0.0  # the short-window target's first_only runs corrected, at best


def write_config(path: Path, sink: int, db: Path, gateways: dict[str, int]) -> Path:
    lines = [
        f'sink = "127.0.0.1:{sink}"',
        f'ledger = "{db}"',
        'domain = "probe.test"',
        'metrics = "127.0.0.1:0"',
        f'stop_drain = "{STOP_DRAIN_S:g}s"',
        "seed = 17",
        "[limits]",
        "min_interval = 5",
        "max_per_minute = 600",
        "[defaults]",
        f"interval = {INTERVAL_S:g}",
        "jitter = 0.1",
        "count = 5",
    ]
    for name, port in gateways.items():
        lines += ["[[target]]", f'name = "{name}"', f'gateway = "127.0.0.1:{port}"']
        if name == "short-window":
            lines.append('settle = "1s"')
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def watch(config: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The watch with its log in `log` (info level: kept for when the soak fails)."""
    announced = re.compile(r"metrics listening on [\d.]+:(\d+)")
    earlier = len(announced.findall(log.read_text())) if log.exists() else 0
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*PROBE, "watch", "--config", str(config)],
            stderr=out,
            stdout=subprocess.DEVNULL,
            env=ENV,
        )
    try:
        deadline = time.monotonic() + 30
        while len(ports := announced.findall(log.read_text())) <= earlier:
            assert proc.poll() is None and time.monotonic() < deadline, "watch did not start"
            time.sleep(0.05)
        yield proc, int(ports[-1])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def check_every_series(text: str, targets: list[str]) -> None:
    found = values(text)
    names = {name for name, _ in found}
    for target in targets:
        label = (("target", target),)
        for series in EVERY_SERIES:
            assert (series, label) in found, f"first scrape lacks {series} of {target}"
        for pattern in PATTERNS:
            assert ("notifyprobe_verdict", (("pattern", pattern),) + label) in found
    assert "notifyprobe_verdicts_corrected_total" in names


def severities(text: str) -> dict[str, float]:
    return {
        dict(labels)["target"]: value
        for (name, labels), value in values(text).items()
        if name == "notifyprobe_verdict_severity"
    }


def corrected_first_only(text: str, target: str) -> float:
    return sum(
        value
        for (name, labels), value in values(text).items()
        if name == "notifyprobe_verdicts_corrected_total"
        and dict(labels)["target"] == target
        and dict(labels)["from_pattern"] == "first_only"
    )


def run_in_flight(db: Path, target: str) -> bool:
    """A run of `target` that has sent its whole burst and waits for its mail."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT COUNT(*) FROM runs r JOIN notifications n ON n.run_id = r.run_id"
            " WHERE r.verdict IS NULL AND json_extract(r.options, '$.target') = ?"
            " AND n.seq > 0 AND n.code BETWEEN 200 AND 299",
            (target,),
        ).fetchone()
    return bool(rows[0])


def soak_phase(config: Path, db: Path, targets: list[str], length_s: float, fig: Figures) -> None:
    with watch(config, Path(f"{db}.log")) as (proc, metrics_port):
        check_every_series(scrape(metrics_port), targets)
        end = time.monotonic() + length_s
        while time.monotonic() < end or not run_in_flight(db, "batch-4s"):
            assert time.monotonic() < end + 4 * INTERVAL_S, "no batch-4s run in flight to cut"
            text = scrape(metrics_port)
            fig.scrapes += 1
            fig.corrected = max(fig.corrected, corrected_first_only(text, "short-window"))
            for target, severity in severities(text).items():
                if severity == 2:
                    fig.critical[target] = fig.critical.get(target, 0) + 1
                    assert target not in NEVER_CRITICAL, f"{target} CRITICAL at a scrape:\n{text}"
            time.sleep(SCRAPE_EVERY_S)
        sent_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_DRAIN_S + 30) == 0
        fig.stops_s.append(time.monotonic() - sent_at)
    assert fig.stops_s[-1] <= STOP_DRAIN_S + 3.0, f"stop took {fig.stops_s[-1]:.1f} s, see {db}.log"


def collect_queued_mail(db: Path, sink: int, wait_s: float) -> None:
    """After the last stop the batching gateways still hold mail they accepted: a sink on the
    same ledger receives it, as the watch's next start would."""
    proc = subprocess.Popen(
        [
            *PROBE,
            "sink",
            "--listen",
            f"127.0.0.1:{sink}",
            "--domain",
            "probe.test",
            "--db",
            str(db),
        ],
        env=ENV,
        stderr=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(wait_s)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_watch_soak_stops_and_restarts_without_a_false_alert(tmp_path):
    t0 = time.monotonic()
    sink = unused_port()
    db = tmp_path / "watch.sqlite3"
    relay = f"127.0.0.1:{sink}"
    fig = Figures()
    with ExitStack() as gateways:
        lab = ("lab", "gateway", "--listen", "127.0.0.1:0", "--relay", relay)
        ports = {
            "healthy": gateways.enter_context(service(*lab, "--mode", "healthy")),
            "batch-2s": gateways.enter_context(
                gateway_process("batching", "--relay", relay, "--every", "2")
            ),
            "batch-4s": gateways.enter_context(
                gateway_process("batching", "--relay", relay, "--every", "4")
            ),
            "short-window": gateways.enter_context(
                gateway_process("batching", "--relay", relay, "--every", "4", "--first-at-once")
            ),
            "first-only": gateways.enter_context(service(*lab, "--mode", "first-only")),
            "hung": gateways.enter_context(gateway_process("hung")),
        }
        config = write_config(tmp_path / "watch.toml", sink, db, ports)
        targets = list(ports)
        for length_s in PHASES_S:
            soak_phase(config, db, targets, length_s, fig)
        collect_queued_mail(db, sink, wait_s=6.0)

    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        runs = conn.execute(
            "SELECT run_id, status, verdict, corrected_verdict, started_at, finished_at,"
            " json_extract(options, '$.target') AS target FROM runs ORDER BY started_at"
        ).fetchall()
        undelivered = conn.execute(
            "SELECT json_extract(r.options, '$.target') AS target, n.run_id, n.seq"
            " FROM notifications n JOIN runs r ON r.run_id = n.run_id"
            " WHERE n.seq > 0 AND n.code BETWEEN 200 AND 299 AND NOT EXISTS"
            " (SELECT 1 FROM deliveries d WHERE d.run_id = n.run_id AND d.seq = n.seq)"
        ).fetchall()
    fig.runs = len(runs)
    assert all(r["verdict"] is not None for r in runs)  # every run judged, cut ones included
    cut = [r for r in runs if r["status"] == "interrupted"]
    fig.interrupted = len(cut)
    assert len(cut) >= 2  # each stop cut runs in flight
    for r in cut:  # a stop proves delivery, never loss
        assert json.loads(r["verdict"])["pattern"] in {"inconclusive", "healthy", "slow"}, r
    lost = [(u["target"], u["run_id"], u["seq"]) for u in undelivered]
    assert not [u for u in lost if u[0] in (*NEVER_CRITICAL, "short-window")], lost

    short = [r for r in runs if r["target"] == "short-window"]
    first = short[0]
    assert json.loads(first["verdict"])["pattern"] == "first_only"
    assert json.loads(first["corrected_verdict"])["pattern"] in {"healthy", "slow"}
    assert fig.corrected >= 1  # and counted in the metric, from first_only

    for name in ("hung", "first-only"):  # failing targets keep their interval
        starts = [r["started_at"] for r in runs if r["target"] == name]
        gaps = [b - a for a, b in itertools.pairwise(starts) if b - a < 2 * INTERVAL_S]
        assert statistics.median(gaps) <= INTERVAL_S * 1.1 + 0.5, (name, gaps)

    print(
        f"\nsoak: {time.monotonic() - t0:.0f} s, {fig.scrapes} scrapes, {fig.runs} runs "
        f"({fig.interrupted} cut by a stop), stops {', '.join(f'{s:.2f}' for s in fig.stops_s)} s "
        f"(drain cap {STOP_DRAIN_S:g} s), CRITICAL scrapes by target {fig.critical}, "
        f"short-window corrections counted {fig.corrected:g}"
    )
