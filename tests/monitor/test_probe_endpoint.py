"""`GET /probe?target=NAME` on watch's metrics listener, in blackbox_exporter's style: one run
now, answered as exposition within the scrape's timeout; one run per target in flight, and the
min_interval cap still holds (a probe too soon after the last run is served that run)."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from probe.lab.gateway import FaultMode, LabGateway
from probe.ledger import Ledger
from probe.monitor.config import Caps, WatchConfig
from probe.monitor.metrics import Metrics
from probe.monitor.watch import Watcher
from probe.records import Endpoint
from tests.monitor.test_watch import target
from tests.ports import unused_port

pytestmark = pytest.mark.real  # real processes and sockets on loopback


def get(url: str, timeout_s: float = 10.0) -> tuple[int, str, float]:
    request = urllib.request.Request(url, headers={"X-Prometheus-Scrape-Timeout-Seconds": "8"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return answer.status, answer.read().decode(), time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), time.monotonic() - started


def samples(text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "notifyprobe_probe_verdict":
                if s.value == 1:
                    found[f"pattern={s.labels['pattern']}"] = 1
            else:
                found[s.name] = s.value
    return found


async def test_probe_runs_the_target_now_and_keeps_its_caps(tmp_path):
    sink = Endpoint("127.0.0.1", unused_port())
    async with LabGateway(Endpoint("127.0.0.1", 0), sink, FaultMode("healthy")) as gw:
        # no scheduled run during the test: the first is drawn within half an hour
        cfg = WatchConfig(
            targets=(target("gw", gw.listen, burst_interval_s=3600.0, jitter=0.5),),
            sink=sink,
            seed=1,
            caps=Caps(min_interval_s=5.0),
        )
        with Ledger(tmp_path / "l.db") as ledger:
            metrics = Metrics()
            watcher = Watcher(cfg, ledger, metrics)
            watcher.prepare()
            bound = metrics.serve(Endpoint("127.0.0.1", 0), watcher.probe_endpoint)
            base = f"http://127.0.0.1:{bound.port}"
            stop = asyncio.Event()
            running = asyncio.create_task(watcher.run(stop))
            try:
                while watcher._shared is None:
                    await asyncio.sleep(0.05)
                status, body, _ = await asyncio.to_thread(get, f"{base}/probe?target=nope")
                assert status == 400 and body.count("\n") == 1 and "gw" in body
                # two scrapes at once: one run, the other served it
                both = await asyncio.gather(
                    asyncio.to_thread(get, f"{base}/probe?target=gw"),
                    asyncio.to_thread(get, f"{base}/probe?target=gw"),
                )
                assert [s for s, _, _ in both] == [200, 200]
                first, second = (samples(b) for _, b, _ in both)
                assert first["probe_success"] == second["probe_success"] == 1
                assert first["pattern=healthy"] == 1
                assert sorted(
                    [first["notifyprobe_probe_cached"], second["notifyprobe_probe_cached"]]
                ) == [0, 1]
                assert (
                    first["notifyprobe_probe_run_timestamp_seconds"]
                    == second["notifyprobe_probe_run_timestamp_seconds"]
                )
                assert all(took < 8.0 for _, _, took in both)  # within the scrape's timeout
                again = samples((await asyncio.to_thread(get, f"{base}/probe?target=gw"))[1])
                assert again["notifyprobe_probe_cached"] == 1  # within min_interval: served
                # served without the loop: here the loop is blocked by this very call (a call
                # through the loop would wait out the timeout and answer 503)
                code, answer = watcher.probe_endpoint("gw", 1.0)
                assert code == 200
                assert samples(answer.decode())["notifyprobe_probe_cached"] == 1
                assert len(ledger.run_ids()) == 1  # one burst for three scrapes
                status, text, _ = await asyncio.to_thread(get, f"{base}/metrics")
                assert (
                    status == 200
                    and 'notifyprobe_verdict{pattern="healthy",target="gw"} 1.0' in text
                )
            finally:
                stop.set()
                await running
                metrics.close()
