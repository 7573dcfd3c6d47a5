"""The settle window against gateways the lab never scripted, with default options.

Each gateway here is written for the test: an aiosmtpd server that answers 250 and relays to
the probe's sink with its own client, by its own rules (a queue runner that delivers in one
batch, a gateway that accepts everything and drops all but the first k). The slow scenarios run
concurrently, once per module, so the default window costs the suite its length only once.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from probe.cli import main
from probe.delivery.run import ProbeOutcome, ProbeSettings, run_probe
from probe.delivery.settings import BurstSettings
from probe.delivery.settle import DEFAULT_WINDOW_S, Patience
from probe.delivery.sink import Sink
from probe.history import StoredVerdict, revise_and_keep
from probe.ledger import Ledger, LedgerWriter
from probe.records import Endpoint, WindowSource
from probe.verdict import Pattern
from tests.clock import JumpClock
from tests.known import kept
from tests.ports import unused_port
from tests.waits import until_async

COUNT = 20
BATCH_DELAYS_S = (2.0, 5.0, 10.0)


pytestmark = pytest.mark.real


class IndependentGateway:
    """Accepts every notification with 250 and relays it to `relay`:

    - `keep`: relay only the first `keep` accepted (None: all), then accept and drop;
    - `batch_after_s`: relay the first at once and hold the others, then relay everything
      held in one batch this long after the first (a queue runner on a timer).
    """

    def __init__(self, relay: Endpoint, *, keep: int | None = None, batch_after_s: float = 0.0):
        self.relay = relay
        self.keep = keep
        self.batch_after_s = batch_after_s
        self.accepted = 0
        self.relayed = 0  # notifications the sink confirmed to this gateway's relay client
        self._held: list[Envelope] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.endpoint = Endpoint("127.0.0.1", 0)

    def drop_after(self, keep: int) -> None:
        """From now on relay only `keep` more notifications (the gateway broke)."""
        self.accepted, self.relayed, self.keep = 0, 0, keep

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.accepted += 1
        if self.keep is not None and self.accepted > self.keep:
            return "250 2.0.0 queued"  # and never relayed
        if self.batch_after_s and self.accepted > 1:
            self._held.append(envelope)
        else:
            self._spawn(self._relay([envelope]))
            if self.batch_after_s:
                self._spawn(self._release_batch())
        return "250 2.0.0 queued"

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _release_batch(self) -> None:
        await asyncio.sleep(self.batch_after_s)
        held, self._held = self._held, []
        await self._relay(held)

    async def _relay(self, envelopes: list[Envelope]) -> None:
        async with aiosmtplib.SMTP(hostname=self.relay.host, port=self.relay.port) as client:
            for envelope in envelopes:
                assert envelope.mail_from is not None and envelope.original_content is not None
                await client.sendmail(
                    envelope.mail_from, envelope.rcpt_tos, envelope.original_content
                )
                self.relayed += 1

    async def __aenter__(self) -> IndependentGateway:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: SMTP(self), "127.0.0.1", 0)
        self.endpoint = Endpoint("127.0.0.1", self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()


def defaults(gateway: Endpoint, sink: Endpoint) -> ProbeSettings:
    """`notifyprobe burst --count 20` with every other option at its default."""
    return ProbeSettings(gateway=gateway, sink=sink, burst=BurstSettings(count=COUNT))


async def probe_once(ledger_path: Path, **gateway: Any) -> ProbeOutcome:
    sink = Endpoint("127.0.0.1", unused_port())
    async with IndependentGateway(sink, **gateway) as gw:
        with Ledger(ledger_path) as ledger:
            return await run_probe(ledger, defaults(gw.endpoint, sink))


async def judged_once_relayed(
    ledger: Ledger, gw: IndependentGateway, sink: Endpoint, relayed: int
) -> ProbeOutcome:
    """A run of a gateway that relays `relayed` notifications and drops the rest: once those
    have reached the sink, the wait for the others (the settle window, window logic and no
    timing) is skipped on a `JumpClock` instead of spent."""
    clock = JumpClock()
    run = asyncio.ensure_future(run_probe(ledger, defaults(gw.endpoint, sink), clock=clock))
    await until_async(lambda: gw.relayed >= relayed or run.done(), f"{relayed} relayed")
    clock.jump()
    return await run


async def probe_dropping(ledger_path: Path, keep: int) -> ProbeOutcome:
    sink = Endpoint("127.0.0.1", unused_port())
    async with IndependentGateway(sink, keep=keep) as gw:
        with Ledger(ledger_path) as ledger:
            return await judged_once_relayed(ledger, gw, sink, keep)


@dataclass(frozen=True)
class Learned:
    healthy: list[ProbeOutcome]
    failure: ProbeOutcome


async def learn_then_fail(ledger_path: Path) -> Learned:
    """Three healthy runs of a fast gateway, then the same gateway drops all but the first."""
    sink = Endpoint("127.0.0.1", unused_port())
    async with IndependentGateway(sink) as gw:
        with Ledger(ledger_path) as ledger:
            healthy = [await run_probe(ledger, defaults(gw.endpoint, sink)) for _ in range(3)]
            gw.drop_after(1)
            failure = await judged_once_relayed(ledger, gw, sink, 1)
    return Learned(healthy, failure)


@dataclass(frozen=True)
class Outcomes:
    batches: dict[float, ProbeOutcome]
    drop_after_first: ProbeOutcome
    drop_after_third: ProbeOutcome
    learned: Learned


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Outcomes:
    tmp = tmp_path_factory.mktemp("settle")

    async def everything() -> Outcomes:
        batches, drop1, drop3, learned = await asyncio.gather(  # all at once
            asyncio.gather(
                *(probe_once(tmp / f"batch{d:g}.db", batch_after_s=d) for d in BATCH_DELAYS_S)
            ),
            probe_dropping(tmp / "drop1.db", keep=1),
            probe_dropping(tmp / "drop3.db", keep=3),
            learn_then_fail(tmp / "learned.db"),
        )
        return Outcomes(dict(zip(BATCH_DELAYS_S, batches, strict=True)), drop1, drop3, learned)

    return asyncio.run(everything())


@pytest.mark.parametrize("delay_s", BATCH_DELAYS_S)
def test_a_queue_runner_delivering_in_one_batch_is_not_a_loss(outcomes, delay_s):
    outcome = outcomes.batches[delay_s]
    assert outcome.verdict.pattern in (Pattern.HEALTHY, Pattern.SLOW), outcome.verdict.summary
    assert (outcome.verdict.sent, outcome.verdict.delivered) == (COUNT, COUNT)
    window = outcome.record.run.options.settle
    assert window is not None and window.source is WindowSource.DEFAULT
    first, *batch = sorted(n.delivered_at or 0 for n in outcome.record.burst)
    assert min(batch) - first >= 0.9 * delay_s  # it did hold the rest back for one batch


def test_accept_and_drop_after_the_first_is_still_first_only(outcomes):
    verdict = outcomes.drop_after_first.verdict
    assert verdict.pattern is Pattern.FIRST_ONLY, verdict.summary
    assert (verdict.accepted, verdict.delivered) == (COUNT, 1)


def test_accept_and_drop_after_the_third_is_still_degraded_after_k(outcomes):
    verdict = outcomes.drop_after_third.verdict
    assert verdict.pattern is Pattern.DEGRADED_AFTER_K, verdict.summary
    assert verdict.details["k"] == 3


def test_a_gateway_with_healthy_history_is_judged_on_a_window_learned_from_it(outcomes):
    learned = outcomes.learned
    assert [o.verdict.pattern for o in learned.healthy] == [Pattern.HEALTHY] * 3
    sources = [o.record.run.options.settle for o in learned.healthy]
    assert [(w.source, w.runs) for w in sources if w] == [
        (WindowSource.DEFAULT, n) for n in range(3)
    ]
    failure = learned.failure
    assert failure.verdict.pattern is Pattern.FIRST_ONLY, failure.verdict.summary
    window = failure.record.run.options.settle
    assert window is not None and (window.source, window.runs) == (WindowSource.LEARNED, 3)
    assert window.seconds * 2 <= DEFAULT_WINDOW_S


def test_the_learned_window_judges_a_failure_at_least_twice_as_fast_as_an_empty_ledger(outcomes):
    # both waits ran on a JumpClock: the times compared are the windows the loop waited out,
    # whatever the load of the machine
    empty = outcomes.drop_after_first
    assert empty.record.run.options.settle.source is WindowSource.DEFAULT
    assert empty.elapsed_s >= DEFAULT_WINDOW_S  # it did wait the whole default window
    assert outcomes.learned.failure.elapsed_s * 2 <= empty.elapsed_s


# -- late deliveries ---------------------------------------------------------------------------


async def test_verdict_after_late_mail_says_the_loss_was_a_delay(tmp_path, capsys):
    db = tmp_path / "ledger.sqlite3"
    with Ledger(db) as ledger:
        writer = LedgerWriter(ledger)
        sink = Sink(writer, host="127.0.0.1", port=0, domain="probe.invalid")
        await sink.start()  # a sink that outlives the run, as `notifyprobe sink` does
        try:
            endpoint = Endpoint("127.0.0.1", sink.port)
            async with IndependentGateway(endpoint, batch_after_s=2.5) as gw:
                settings = ProbeSettings(
                    gateway=gw.endpoint,
                    sink=endpoint,
                    burst=BurstSettings(count=5),
                    own_sink=False,
                    patience=Patience(settle_s=0.3),
                )
                outcome = await run_probe(ledger, settings)
                run_id = outcome.record.run.run_id
                deadline = time.monotonic() + 10
                while ledger.delivery_count(run_id) < 6 and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)  # the batch arrives after the verdict
        finally:
            await sink.stop()
            await writer.close()
    assert outcome.verdict.pattern is Pattern.FIRST_ONLY

    assert main(["verdict", run_id, "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "healthy" in out
    assert "4 notifications arrived after the verdict" in out
    assert "the loss was a delay (first_only → healthy)" in out
    assert re.search(r"Original verdict: +first_only \(CRITICAL\) at \d{4}-\d\d-\d\d ", out)
    assert re.search(
        r"Corrected verdict: healthy \(OK\) at .* UTC, [\d.]+ s after the original", out
    )
    with Ledger(db) as ledger:
        assert kept(ledger.stored_verdict(run_id))["pattern"] == "first_only"  # kept as given
        assert kept(ledger.corrected_verdict(run_id))["pattern"] == "healthy"
        again = revise_and_keep(ledger, run_id, time.time())
        assert not again.newly_corrected  # counted once
        judged_at, corrected_at = ledger.load(run_id).run.finished_at, ledger.corrected_at(run_id)
    assert again.original == StoredVerdict("first_only", "critical", judged_at)
    assert again.correction == StoredVerdict("healthy", "ok", corrected_at)
    assert corrected_at is not None and judged_at is not None and corrected_at > judged_at
    assert main(["verdict", run_id, "--db", str(db), "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["original_verdict"] == {
        "pattern": "first_only",
        "severity": "critical",
        "at": judged_at,
    }
    assert report["corrected_verdict"]["at"] == corrected_at
