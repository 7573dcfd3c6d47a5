"""Shared fixtures: a fresh ledger per test and a lab bench (lab gateway + probe) on loopback."""

from __future__ import annotations

import platform
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn, TypedDict

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
from tests import cli
from tests.ports import unused_port

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("linux_only") and not sys.platform.startswith("linux"):
        pytest.skip("needs Linux (/proc, ELF, prctl)")


NOT_REAL = (
    "{what} in a test not marked `real`: mark it @pytest.mark.real (or its module: "
    "pytestmark = pytest.mark.real), so `pytest -m 'not real'` stays the fast tier"
)


@pytest.fixture(autouse=True)
def _fast_tier_stays_fast(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """A test without the `real` marker may not open a network socket or start a process:
    the marker is then true by construction, not by review."""
    if request.node.get_closest_marker("real"):
        yield
        return

    def refuse(what: str) -> Callable[..., NoReturn]:
        def refused(*args: object, **kwargs: object) -> NoReturn:
            raise AssertionError(NOT_REAL.format(what=what))

        return refused

    def network_only(method: Callable[..., object]) -> Callable[..., object]:
        def guarded(sock: socket.socket, *args: object) -> object:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                raise AssertionError(NOT_REAL.format(what=f"socket {method.__name__}"))
            return method(sock, *args)

        return guarded

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("a subprocess"))
    monkeypatch.setattr(BaseProcess, "start", refuse("a process"))  # tests.cli's forks
    for name in ("bind", "connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, network_only(getattr(socket.socket, name)))
    yield


# How a process started from a terminal handles SIGINT and SIGTERM. A test process started in
# the background (`cmd &` in a script, some CI runners) begins with SIGINT ignored: the processes
# its tests start would inherit that, until some test's event loop restores the default.
SIGNALS_AS_FROM_A_TERMINAL: dict[
    signal.Signals, Callable[[int, FrameType | None], object] | int
] = {
    signal.SIGINT: signal.default_int_handler,
    signal.SIGTERM: signal.SIG_DFL,
}


@pytest.fixture(autouse=True)
def _signals_left_as_found() -> Iterator[None]:
    """Every test runs with SIGINT and SIGTERM handled as from a terminal, and leaves them so:
    the processes a test starts inherit an ignored signal, and a shuffle decides which test
    comes next."""
    found = {sig: signal.getsignal(sig) for sig in SIGNALS_AS_FROM_A_TERMINAL}
    assert found == SIGNALS_AS_FROM_A_TERMINAL, f"signal handling changed before this test: {found}"
    yield
    left = {sig: signal.getsignal(sig) for sig in SIGNALS_AS_FROM_A_TERMINAL}
    assert left == SIGNALS_AS_FROM_A_TERMINAL, f"the test changed signal handling: {left}"


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """A test that runs the CLI in-process binds structlog to its captured (later closed)
    stderr; later tests that log would write to a closed file. Start each test from defaults."""
    yield
    structlog.reset_defaults()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Start every test process alike, whatever started it and whichever test runs first in it:

    - SIGINT and SIGTERM handled as from a terminal (`SIGNALS_AS_FROM_A_TERMINAL`);
    - platform.platform() (in the evidence's host facts) runs `uname -p` the first time a
      process asks, then caches it: ask once here, or an unmarked test that collects host facts
      starts a process whenever no test before it in its worker asked (`-m 'not real'`, a
      shuffle, a worker that steals it first)."""
    for sig, handler in SIGNALS_AS_FROM_A_TERMINAL.items():
        signal.signal(sig, handler)
    platform.processor()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Reap the CLI forkserver (tests.cli), if this process started one."""
    cli.stop()


TEST_KEY = TokenKey(bytes(range(32)))  # tests that write tokens by hand sign them with this


def with_test_key(db: Path) -> Path:
    """Give the ledger at `db` the test key, as `<db>.key` (what the probe would make itself)."""
    key = key_path(db)
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text(bytes(range(32)).hex() + "\n")
    key.chmod(0o600)
    return db


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(with_test_key(tmp_path / "ledger.sqlite3")) as opened:
        yield opened


class BurstOptions(TypedDict, total=False):
    """The `BurstSettings` fields a lab run may set besides `count`."""

    concurrency: int
    per_session: int
    notification_gap_s: float
    step_timeout_s: float
    breaker: int
    max_rate: float
    control: bool
    helo: str | None


async def probe_lab(
    ledger: Ledger,
    mode: str,
    *,
    count: int = 10,
    rewrite: bool = False,
    seed: int = 0,
    patience: Patience | None = None,
    thresholds: Thresholds | None = None,
    **burst_options: Unpack[BurstOptions],
) -> ProbeOutcome:
    """Run a real burst through an in-process lab gateway in `mode` to the probe's own sink.

    `burst_options` are `BurstSettings` fields (concurrency, per_session, ...)."""
    sink = Endpoint("127.0.0.1", unused_port())
    gateway = LabGateway(
        Endpoint("127.0.0.1", 0), sink, FaultMode.parse(mode), seed=seed, rewrite=rewrite
    )
    burst = BurstSettings(count=count, **burst_options)
    # The lab gateway relays at once: a short window keeps the suite fast (defaults: test_settle)
    if patience is None:
        patience = Patience(settle_s=1.0, timeout_s=5.0)
    async with gateway:
        target = gateway.listen if mode != "down" else Endpoint("127.0.0.1", unused_port())
        settings = ProbeSettings(
            gateway=target,
            sink=sink,
            burst=burst,
            patience=patience,
            thresholds=thresholds or Thresholds(),
        )
        return await run_probe(ledger, settings)
