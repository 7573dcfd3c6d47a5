"""Shared fixtures: a fresh ledger per test and a lab bench (lab gateway + probe) on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import structlog

from probe.correlation import TokenKey
from probe.delivery.run import ProbeOutcome, ProbeSettings, run_probe
from probe.delivery.settings import BurstSettings
from probe.delivery.settle import Patience
from probe.lab.gateway import FaultMode, LabGateway
from probe.ledger import Ledger, key_path
from probe.records import Endpoint
from probe.verdict import Thresholds
from tests.ports import unused_port


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("linux_only") and not sys.platform.startswith("linux"):
        pytest.skip("needs Linux (/proc, ELF, prctl)")


NOT_REAL = (
    "{what} in a test not marked `real`: mark it @pytest.mark.real (or its module: "
    "pytestmark = pytest.mark.real), so `pytest -m 'not real'` stays the fast tier"
)


@pytest.fixture(autouse=True)
def _fast_tier_stays_fast(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """A test without the `real` marker may not open a network socket or start a process:
    the marker is then true by construction, not by review."""
    if request.node.get_closest_marker("real"):
        yield
        return

    def refuse(what: str):
        def refused(*args: object, **kwargs: object) -> None:
            raise AssertionError(NOT_REAL.format(what=what))

        return refused

    def network_only(method):
        def guarded(sock: socket.socket, *args: object) -> object:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                raise AssertionError(NOT_REAL.format(what=f"socket {method.__name__}"))
            return method(sock, *args)

        return guarded

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("a subprocess"))
    for name in ("bind", "connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, network_only(getattr(socket.socket, name)))
    yield


@pytest.fixture(autouse=True)
def _fresh_logging():
    """A test that runs the CLI in-process binds structlog to its captured (later closed)
    stderr; later tests that log would write to a closed file. Start each test from defaults."""
    yield
    structlog.reset_defaults()


TEST_KEY = TokenKey(bytes(range(32)))  # tests that write tokens by hand sign them with this


def with_test_key(db: Path) -> Path:
    """Give the ledger at `db` the test key, as `<db>.key` (what the probe would make itself)."""
    key = key_path(db)
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text(bytes(range(32)).hex() + "\n")
    key.chmod(0o600)
    return db


@pytest.fixture
def ledger(tmp_path: Path):
    with Ledger(with_test_key(tmp_path / "ledger.sqlite3")) as opened:
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
    sink = Endpoint("127.0.0.1", unused_port())
    gateway = LabGateway(
        Endpoint("127.0.0.1", 0), sink, FaultMode.parse(mode), seed=seed, rewrite=rewrite
    )
    burst_fields = {f.name for f in fields(BurstSettings)}
    burst_options = {k: settings.pop(k) for k in list(settings) if k in burst_fields}
    burst = BurstSettings(count=count, **burst_options)
    # The lab gateway relays at once: a short window keeps the suite fast (defaults: test_settle)
    settings.setdefault("patience", Patience(settle_s=1.0, timeout_s=5.0))
    settings.setdefault("thresholds", Thresholds())
    async with gateway:
        target = gateway.listen if mode != "down" else Endpoint("127.0.0.1", unused_port())
        return await run_probe(
            ledger, ProbeSettings(gateway=target, sink=sink, burst=burst, **settings)
        )
