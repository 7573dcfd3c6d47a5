"""The sink on its own: only the probe domain, durable before 250, foreign mail kept apart."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import aiosmtplib
import pytest

from probe.correlation import TokenRef, recipient_for
from probe.delivery.burst import compose
from probe.delivery.sink import Sink
from probe.ledger import Ledger, LedgerWriter
from probe.records import Run
from tests.conftest import TEST_KEY

pytestmark = pytest.mark.real

DOMAIN = "probe.invalid"


class WatchedSink(Sink):
    """The sink, with the tokens it reported as delivered."""

    arrivals: list[TokenRef]


@pytest.fixture
async def sink(ledger):
    arrivals: list[TokenRef] = []
    writer = LedgerWriter(ledger)
    server = WatchedSink(
        writer,
        host="127.0.0.1",
        port=0,
        domain=DOMAIN,
        on_delivery=lambda ref, _: arrivals.append(ref),
    )
    await server.start()
    server.arrivals = arrivals
    yield server
    await server.stop()
    await writer.close()


def new_run(ledger, count: int = 3) -> str:
    run_id = "feedc0ffee"
    ledger.create_run(Run(run_id, "gw:25", DOMAIN, count, time.time()))
    return run_id


async def send(sink: Sink, rcpt: str, message: bytes) -> aiosmtplib.SMTPResponse:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port, start_tls=False) as smtp:
        await smtp.mail("probe-bounce+x@probe.invalid")
        await smtp.rcpt(rcpt)
        return await smtp.data(message)


async def test_recipient_outside_the_probe_domain_is_refused(sink):
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
        await send(sink, "someone@example.com", b"Subject: x\r\n\r\nrelay me\r\n")
    assert refused.value.code == 550


async def test_delivery_is_in_the_ledger_when_250_arrives(sink, ledger):
    run_id = new_run(ledger)
    token = TEST_KEY.token(run_id, 2)
    reply = await send(
        sink, recipient_for(token, DOMAIN), compose(token, run_id, 2, 3, DOMAIN, "x")
    )
    assert reply.code == 250
    assert ledger.delivered_seqs(run_id).keys() == {2}  # committed before the 250 was sent
    assert sink.arrivals == [TokenRef(run_id, 2)]


async def test_token_of_an_unknown_run_is_recorded_as_foreign_not_counted(sink, ledger):
    run_id = new_run(ledger)
    forged = TEST_KEY.token("0000000000", 1)
    reply = await send(sink, recipient_for(forged, DOMAIN), b"Subject: forged\r\n\r\nx\r\n")
    assert reply.code == 250
    assert ledger.delivery_count(run_id) == 0
    assert sink.arrivals == []
    assert foreign_reasons(ledger) == ["unknown token np-0000000000-1"]


async def test_message_without_any_token_is_recorded_as_foreign(sink, ledger):
    await send(sink, f"someone@{DOMAIN}", b"Subject: hello\r\n\r\nno token here\r\n")
    assert foreign_reasons(ledger) == ["no token"]


async def test_a_run_wide_bounce_address_is_kept_with_its_run_but_names_no_notification(
    sink, ledger
):
    run_id = new_run(ledger)
    await send(sink, f"probe-bounce+{run_id}@{DOMAIN}", b"Subject: Undeliverable\r\n\r\nx\r\n")
    record = ledger.load(run_id)
    assert record.unmatched_bounces == 1
    assert not any(n.copies or n.bounces for n in record.notifications)


async def test_stopping_the_sink_ends_sessions_a_relay_keeps_open(ledger):
    writer = LedgerWriter(ledger)
    server = await Sink(writer, host="127.0.0.1", port=0, domain=DOMAIN).start()
    reader, client = await asyncio.open_connection("127.0.0.1", server.port)
    assert (await reader.readline()).startswith(b"220")
    await asyncio.wait_for(server.stop(), timeout=5)  # does not wait for the client to leave
    assert await asyncio.wait_for(reader.read(), timeout=5) == b""  # the session was closed
    client.close()
    await writer.close()


def foreign_reasons(ledger: Ledger) -> list[str]:
    """Why the sink did not count the messages it kept apart, newest first, as stored."""
    with sqlite3.connect(ledger.path) as conn:
        rows = conn.execute("SELECT reason FROM foreign_messages ORDER BY id DESC").fetchall()
    return [reason for (reason,) in rows]
