"""Shared fixtures: a fresh ledger per test and a lab bench (lab gateway + probe) on loopback."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import structlog

from probe.delivery.run import ProbeOutcome, ProbeSettings, run_probe
from probe.delivery.settings import BurstSettings
from probe.delivery.settle import Patience
from probe.lab.gateway import FaultMode, LabGateway, free_port
from probe.ledger import Ledger
from probe.records import Endpoint
from probe.verdict import Thresholds


@pytest.fixture(autouse=True)
def _fresh_logging():
    """A test that runs the CLI in-process binds structlog to its captured (later closed)
    stderr; later tests that log would write to a closed file. Start each test from defaults."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def ledger(tmp_path: Path):
    with Ledger(tmp_path / "ledger.sqlite3") as opened:
        yield opened


async def probe_lab(
    ledger: Ledger,
    mode: str,
    *,
    count: int = 10,
    rewrite: bool = False,
    seed: int = 0,
    **settings: object,
) -> ProbeOutcome:
    """Run a real burst through an in-process lab gateway in `mode` to the probe's own sink.

    `settings` are `BurstSettings` fields (concurrency, reuse, ...) or `ProbeSettings` ones."""
    sink = Endpoint("127.0.0.1", free_port())
    gateway = LabGateway(
        Endpoint("127.0.0.1", 0), sink, FaultMode.parse(mode), seed=seed, rewrite=rewrite
    )
    burst_fields = {f.name for f in fields(BurstSettings)}
    burst_options = {k: settings.pop(k) for k in list(settings) if k in burst_fields}
    burst = BurstSettings(count=count, **burst_options)
    settings.setdefault("patience", Patience(timeout_s=5.0))
    settings.setdefault("thresholds", Thresholds())
    async with gateway:
        target = gateway.listen if mode != "down" else Endpoint("127.0.0.1", free_port())
        return await run_probe(
            ledger, ProbeSettings(gateway=target, sink=sink, burst=burst, **settings)
        )
