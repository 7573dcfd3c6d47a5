"""The burst's shape over SMTP sessions, end to end: gateways with a per-connection limit.

A gateway (or the MTA in front of it) that holds every message after the K-th of one
connection for its next queue run, as Exim does after `smtp_accept_queue_per_connection`, is
healthy through the default shape and named `queued_per_session` (a warning) through long
sessions; after its queue run, judging the run again counts every notification. A gateway that
stops after K notifications in all is still `degraded_after_k`, whatever the shape.

Besides the lab gateway, `QueueingGateway` below is an independent SMTP relay written here on
raw asyncio streams, relaying with the standard library's smtplib, so the verdict is not only
proven against `probe.lab`.
"""

from __future__ import annotations

import asyncio
import json
import re
import smtplib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

import pytest

from probe.delivery.run import DeliveryHub, ProbeOutcome, ProbeSettings, SharedSink, run_probe
from probe.delivery.settings import BurstSettings
from probe.delivery.settle import Patience
from probe.delivery.sink import Sink
from probe.ledger import Ledger, LedgerWriter
from probe.records import Endpoint
from probe.verdict import Pattern, Severity, judge_recorded
from tests.conftest import BurstOptions, probe_lab
from tests.known import submitted
from tests.ports import unused_port
from tests.test_cli import burst, lab_gateway, probe, service

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

pytestmark = pytest.mark.real

DOMAIN = "probe.invalid"
LIMIT = 10  # Exim's default smtp_accept_queue_per_connection


class QueueingGateway:
    """A minimal SMTP relay: relays the first `limit` messages it receives (per connection, or
    in all) to `relay` at once; later ones get 250 too and are held (`counting="session"`,
    until `run_queue`) or dropped (`counting="overall"`)."""

    def __init__(self, relay: Endpoint, limit: int, counting: Literal["session", "overall"]):
        self.relay, self.limit, self.counting = relay, limit, counting
        self.received = 0
        self.held: list[tuple[str, str, bytes]] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> QueueingGateway:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def run_queue(self) -> None:
        held, self.held = self.held, []
        for item in held:
            await self._relay(*item)

    async def _relay(self, mail_from: str, rcpt: str, data: bytes) -> None:
        def send() -> None:
            with smtplib.SMTP(self.relay.host, self.relay.port, timeout=10) as smtp:
                smtp.sendmail(mail_from, [rcpt], data)

        await asyncio.to_thread(send)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        in_session = 0
        mail_from = rcpt = ""
        say("220 queueing-gateway ESMTP")
        while line := (await reader.readline()).decode().strip():
            verb = line[:4].upper()
            if verb in ("EHLO", "HELO"):
                say("250 queueing-gateway")
            elif verb == "MAIL":
                mail_from = line.partition(":")[2].strip(" <>")
                say("250 OK")
            elif verb == "RCPT":
                rcpt = line.partition(":")[2].strip(" <>")
                say("250 OK")
            elif verb == "DATA":
                say("354 go ahead")
                await writer.drain()
                data = await reader.readuntil(b"\r\n.\r\n")
                message = data[: -len(b".\r\n")].replace(b"\r\n..", b"\r\n.")
                in_session += 1
                self.received += 1
                count = in_session if self.counting == "session" else self.received
                if count <= self.limit:
                    await self._relay(mail_from, rcpt, message)
                elif self.counting == "session":
                    self.held.append((mail_from, rcpt, message))
                say(f"250 OK id={self.received}")
            elif verb == "RSET":
                say("250 OK")
            elif verb == "QUIT":
                say("221 bye")
                break
            else:
                say("502 not implemented")
            await writer.drain()
        writer.close()


@asynccontextmanager
async def long_lived_sink(ledger: Ledger) -> AsyncIterator[SharedSink]:
    """A sink that outlives the run, as `notifyprobe sink` or `watch` keep one."""
    writer, hub = LedgerWriter(ledger), DeliveryHub()
    sink = Sink(writer, host="127.0.0.1", port=0, domain=DOMAIN, on_delivery=hub)
    await sink.start()
    try:
        yield SharedSink(writer, hub, Endpoint("127.0.0.1", sink.port))
    finally:
        await sink.stop()
        await writer.close()


async def probe_through(
    ledger: Ledger,
    gateway_port: int,
    shared: SharedSink,
    count: int,
    **burst: Unpack[BurstOptions],
) -> ProbeOutcome:
    settings = ProbeSettings(
        gateway=Endpoint("127.0.0.1", gateway_port),
        sink=shared.endpoint,
        burst=BurstSettings(count=count, **burst),
        patience=Patience(settle_s=1.0, timeout_s=5.0),  # the shape is under test, not the wait
    )
    return await run_probe(ledger, settings, shared=shared)


def rejudged(command: list[str], count: int, wait_s: float) -> tuple[int, dict[str, Any]]:
    """Run `notifyprobe verdict ... --json -` until `count` arrived or `wait_s` passed."""
    deadline = time.monotonic() + wait_s
    while True:
        result = probe(*command, "--json", "-")
        report = json.loads(result.stdout)
        if report["delivered"] >= count or time.monotonic() > deadline:
            return result.returncode, report
        time.sleep(0.5)


async def rejudged_until(ledger: Ledger, outcome: ProbeOutcome, delivered: int, wait_s: float):
    """Judge the run again from the ledger until `delivered` arrived or `wait_s` passed."""
    deadline = time.monotonic() + wait_s
    while True:
        verdict = judge_recorded(ledger.load(outcome.record.run.run_id))
        if verdict.delivered >= delivered or time.monotonic() > deadline:
            return verdict
        await asyncio.sleep(0.1)


# -- the lab gateway's queue-per-session mode ---------------------------------------------------


async def test_default_shape_through_a_per_connection_limit_is_healthy(ledger):
    outcome = await probe_lab(ledger, f"queue-per-session:{LIMIT}:60", count=20)
    assert outcome.verdict.pattern is Pattern.HEALTHY, outcome.verdict.summary
    assert outcome.verdict.delivered == 20
    sessions = {n.submission.session for n in outcome.record.burst if n.submission and n.seq}
    assert sessions == {1, 2, 3, 4}  # 20 notifications, 5 per session


async def test_twenty_per_session_through_a_per_connection_limit_is_named_a_warning(ledger):
    outcome = await probe_lab(ledger, f"queue-per-session:{LIMIT}:60", count=20, per_session=20)
    verdict = outcome.verdict
    assert (verdict.pattern, verdict.severity) == (Pattern.QUEUED_PER_SESSION, Severity.WARNING)
    assert (verdict.delivered, verdict.details["k"]) == (10, LIMIT)
    assert [submitted(n).position for n in outcome.record.burst if n.seq] == list(range(1, 21))


SHAPES = [(1, 1, 20), (3, 1, 20), (5, 1, 20), (5, 2, 20), (20, 1, 30)]


@pytest.mark.parametrize(("per_session", "concurrency", "count"), SHAPES)
async def test_loss_after_k_overall_is_degraded_after_k_whatever_the_shape(
    ledger, per_session, concurrency, count
):
    outcome = await probe_lab(
        ledger, "drop-after-k:7", count=count, per_session=per_session, concurrency=concurrency
    )
    assert outcome.verdict.pattern is Pattern.DEGRADED_AFTER_K, outcome.verdict.summary
    assert outcome.verdict.details == {"k": 7}


def test_cli_names_the_limit_then_verdict_counts_all_after_the_queue_run(tmp_path):
    db = tmp_path / "l.db"
    queue_run_s = 6.0  # after the burst is judged (about 2 s), before the test gives up
    with service("sink", "--listen", "127.0.0.1:0", "--db", str(db)) as sink:
        with service(
            "lab",
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--relay",
            f"127.0.0.1:{sink}",
            "--mode",
            f"queue-per-session:{LIMIT}:{queue_run_s:g}",
        ) as gateway:
            result = burst(
                gateway,
                sink,
                db,
                "--no-sink",
                "--count",
                "20",
                "--per-session",
                "20",
                "--settle",
                "1",
            )  # judged before the queue run, as Exim's would be
            assert result.returncode == 1, result.stdout + result.stderr
            assert "queued_per_session" in result.stdout
            assert "shape: 20 notifications · concurrency 1 · 20 per SMTP session" in result.stdout
            printed = re.search(r"^  Re-judge: +notifyprobe (verdict .*)$", result.stdout, re.M)
            assert printed, result.stdout
            command = printed.group(1).split()  # run as printed: `verdict RUN_ID --db PATH`
            assert command[2:] == ["--db", str(db)]
            code, report = rejudged(command, 20, wait_s=3 * queue_run_s)
    assert (report["delivered"], code) in ((20, 0), (20, 1)), report
    assert report["verdict"]["pattern"] in ("healthy", "slow")
    with Ledger(db) as ledger:
        assert ledger.load(report["run_id"]).run.options.per_session == 20


# -- an independent gateway with the same per-connection behaviour -------------------------------


async def test_independent_queueing_gateway_default_shape_is_healthy(ledger):
    async with long_lived_sink(ledger) as shared:
        async with QueueingGateway(shared.endpoint, LIMIT, "session") as gateway:
            outcome = await probe_through(ledger, gateway.port, shared, count=20)
    assert outcome.verdict.pattern is Pattern.HEALTHY, outcome.verdict.summary
    assert gateway.held == []


async def test_independent_queueing_gateway_long_sessions_are_queued_then_all_delivered(ledger):
    async with long_lived_sink(ledger) as shared:
        async with QueueingGateway(shared.endpoint, LIMIT, "session") as gateway:
            outcome = await probe_through(ledger, gateway.port, shared, count=20, per_session=20)
            assert outcome.verdict.pattern is Pattern.QUEUED_PER_SESSION
            assert outcome.verdict.details == {"k": LIMIT, "sessions_cut": 1}
            await gateway.run_queue()
            verdict = await rejudged_until(ledger, outcome, 20, wait_s=10.0)
    assert verdict.delivered == 20, verdict.summary  # held mail is late (maybe slow), not lost
    assert verdict.pattern in (Pattern.HEALTHY, Pattern.SLOW), verdict.summary


@pytest.mark.parametrize("per_session", [1, 5, 20])
async def test_independent_gateway_that_drops_after_k_overall_is_degraded(ledger, per_session):
    async with long_lived_sink(ledger) as shared:
        async with QueueingGateway(shared.endpoint, 7, "overall") as gateway:
            outcome = await probe_through(
                ledger, gateway.port, shared, count=30, per_session=per_session
            )
    assert outcome.verdict.pattern is Pattern.DEGRADED_AFTER_K, outcome.verdict.summary
    assert outcome.verdict.details == {"k": 7}


# -- the option and its older spellings ---------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "per_session"),
    [((), 5), (("--no-reuse",), 1), (("--reuse",), 5), (("--per-session", "3"), 3)],
)
def test_per_session_and_its_reuse_aliases_set_each_notifications_session_and_place(
    tmp_path, options, per_session
):
    sink = unused_port()
    with lab_gateway(sink, "healthy") as gateway:
        result = burst(gateway, sink, tmp_path / "l.db", "--count", "7", *options, "--json", "-")
    assert result.returncode == 0, result.stderr
    submits = [n["submit"] for n in json.loads(result.stdout)["notifications"] if n["seq"]]
    assert [s["session"] for s in submits] == [i // per_session + 1 for i in range(7)]
    assert [s["position"] for s in submits] == [i % per_session + 1 for i in range(7)]
