"""One outage, one story in `watch`: a gateway that delivers only the first notification after
its start, probed run after run with no restart, stays first_only at every run after its first,
pages once when the outage starts and once when it ends; `verdict` and the evidence bundle of a
run in it tell the same story."""

from __future__ import annotations

import asyncio
import json
import sys
import zipfile
from pathlib import Path

import pytest

from probe.lab.gateway import FaultMode, LabGateway
from probe.ledger import Ledger
from probe.monitor.config import OnChange, Target, WatchConfig
from probe.monitor.metrics import Metrics
from probe.monitor.watch import Judged, Watcher
from probe.records import Endpoint
from probe.reporting import make_bundle
from probe.verdict import Pattern
from tests.monitor.test_watch import target
from tests.ports import unused_port
from tests.test_cli import probe

pytestmark = pytest.mark.real  # real processes and sockets on loopback

RUNS = 5


def first_only_series(metrics: Metrics, name: str) -> float | None:
    return metrics.sample("notifyprobe_verdict", {"target": name, "pattern": "first_only"})


async def watch_runs(watcher: Watcher, runs: int) -> list[tuple[Judged, float | None]]:
    """Run the watcher until `runs` runs were judged; each with the first_only series after."""
    seen: list[tuple[Judged, float | None]] = []
    stop = asyncio.Event()
    after_run = watcher.after_run

    async def counted(t: Target, judged: Judged) -> None:
        await after_run(t, judged)
        assert watcher.metrics is not None
        seen.append((judged, first_only_series(watcher.metrics, t.name)))
        if len(seen) >= runs:
            stop.set()

    watcher.after_run = counted  # type: ignore[method-assign, assignment]  # observe each run
    await watcher.run(stop)
    return seen


async def test_a_first_only_gateway_watched_without_a_restart_is_one_outage(tmp_path):
    sink = Endpoint("127.0.0.1", unused_port())
    listen = Endpoint("127.0.0.1", unused_port())
    calls = tmp_path / "calls.jsonl"
    script = (
        "import sys, json; d = json.load(sys.stdin);"
        f"open({str(calls)!r}, 'a').write(json.dumps(d['current']['pattern']) + '\\n')"
    )
    hook = OnChange((sys.executable, "-c", script), timeout_s=10.0)
    gw_target = target("gw", listen, burst_interval_s=0.2)
    db = tmp_path / "l.db"
    with Ledger(db) as ledger:
        async with LabGateway(listen, sink, FaultMode.parse("first-only")):
            cfg = WatchConfig(targets=(gw_target,), sink=sink, on_change=hook)
            metrics = Metrics()
            seen = await watch_runs(Watcher(cfg, ledger, metrics), RUNS)
        own = [j.story.outage.this_run if j.story.outage else j.verdict.pattern for j, _ in seen]
        assert own[0] is Pattern.FIRST_ONLY
        assert set(own[1:]) == {Pattern.NONE_DELIVERED}  # what each run showed on its own
        assert [j.verdict.pattern for j, _ in seen] == [Pattern.FIRST_ONLY] * RUNS
        assert [series for _, series in seen] == [1.0] * RUNS
        first = seen[0][0].record.run.run_id
        assert {j.story.outage.since_run for j, _ in seen[1:] if j.story.outage} == {first}
        assert calls.read_text().splitlines() == ['"first_only"']  # paged once, at the start

        # a restarted watch keeps the outage's state; the gateway fixed, the outage ends
        async with LabGateway(listen, sink, FaultMode("healthy")):
            cfg = WatchConfig(targets=(gw_target,), sink=sink, on_change=hook)
            seen_after = await watch_runs(Watcher(cfg, ledger, Metrics()), 1)
        assert seen_after[0][0].verdict.pattern is Pattern.HEALTHY
        assert calls.read_text().splitlines() == ['"first_only"', '"healthy"']

        last = seen[-1][0].record.run.run_id
        make_bundle(ledger, last, tmp_path / "case.zip")
    with zipfile.ZipFile(tmp_path / "case.zip") as bundle:
        report = json.loads(bundle.read("report.json"))
        text = bundle.read("report.txt").decode()
    shown = probe("verdict", last, "--db", str(db))
    assert shown.returncode == 2
    line = f"one notification delivered since {first} at "
    assert line in shown.stdout and line in text
    assert "none since; no restart seen" in shown.stdout
    assert f"notifyprobe verdict {first}" in shown.stdout  # the advice names the first run
    assert report["verdict"]["pattern"] == "first_only" and report["schema_version"] == 1
    assert report["story"]["outage"]["since_run"] == first
    assert report["story"]["outage"]["this_run_pattern"] == "none_delivered"
    as_json = json.loads(probe("verdict", last, "--db", str(db), "--json", "-").stdout)
    assert as_json["story"] == report["story"]
    assert Path(db).exists()
