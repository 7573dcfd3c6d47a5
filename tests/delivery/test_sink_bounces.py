"""The sink and what comes back: a bounce is evidence, never a delivery.

A returned notification carries its own token (in the returned headers, in the quoted
recipient) with a valid MAC. Counting it would turn a next hop's refusal into a delivery: every
test here sends such a report over SMTP to a real sink and checks what the ledger holds.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiosmtplib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.correlation import TokenRef, recipient_for, sender_for
from probe.delivery.burst import compose
from probe.delivery.sink import Sink
from probe.lab.gateway import delivery_report
from probe.ledger import Ledger, LedgerWriter
from probe.records import BounceAction, Run
from tests.conftest import TEST_KEY, with_test_key

pytestmark = pytest.mark.real

DOMAIN = "probe.invalid"
RUN = "b0b0cafe01"


class WatchedSink(Sink):
    """The sink, with the tokens it reported as delivered and as bounced."""

    arrivals: list[TokenRef]
    bounces: list[tuple[TokenRef, BounceAction]]


@pytest.fixture
async def sink(ledger):
    writer = LedgerWriter(ledger)
    arrivals: list[TokenRef] = []
    bounces: list[tuple[TokenRef, BounceAction]] = []
    server = WatchedSink(
        writer,
        host="127.0.0.1",
        port=0,
        domain=DOMAIN,
        on_delivery=lambda ref, _: arrivals.append(ref),
        on_bounce=lambda ref, _, action: bounces.append((ref, action)),
    )
    await server.start()
    server.arrivals, server.bounces = arrivals, bounces
    yield server
    await server.stop()
    await writer.close()


def new_run(ledger: Ledger, count: int = 3) -> None:
    ledger.create_run(Run(RUN, "gw:25", DOMAIN, count, time.time()))


def notification(seq: int) -> bytes:
    return compose(TEST_KEY.token(RUN, seq), RUN, seq, 3, DOMAIN, "Thu, 3 Dec 2026 10:00:00 +0000")


def report(seq: int, action: str = "failed", status: str = "5.7.1") -> bytes:
    """What a gateway sends back when its next hop refused notification `seq`."""
    token = TEST_KEY.token(RUN, seq)
    text = delivery_report(
        notification(seq), sender_for(token, DOMAIN), recipient_for(token, DOMAIN), seq
    )
    return text.replace(b"Action: failed", f"Action: {action}".encode()).replace(
        b"Status: 5.7.1", f"Status: {status}".encode()
    )


async def send(sink: Sink, mail_from: str, rcpt: str, message: bytes) -> int:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port, start_tls=False) as smtp:
        await smtp.mail(mail_from)
        await smtp.rcpt(rcpt)
        return (await smtp.data(message)).code


async def test_a_report_to_a_notifications_own_sender_is_its_bounce_not_its_delivery(sink, ledger):
    new_run(ledger)
    token = TEST_KEY.token(RUN, 2)
    assert await send(sink, "", sender_for(token, DOMAIN), report(2)) == 250
    n = ledger.load(RUN).notifications[2]
    assert n.copies == 0 and n.bounced
    assert n.bounce is not None and n.bounce.status == "5.7.1"
    assert n.bounce.named_by == "verp" and n.bounce.confirmed  # the returned headers agree
    assert "Recipient address rejected" in n.bounce.diagnostic
    assert n.bounce.remote_mta == "next-hop.lab-gateway.invalid"
    assert sink.arrivals == [] and sink.bounces == [(TokenRef(RUN, 2), "failed")]


async def test_a_delay_report_marks_the_notification_delayed(sink, ledger):
    new_run(ledger)
    token = TEST_KEY.token(RUN, 1)
    await send(sink, "", sender_for(token, DOMAIN), report(1, "delayed", "4.4.1"))
    n = ledger.load(RUN).notifications[1]
    assert n.delayed and not n.bounced and n.copies == 0
    assert sink.bounces == [(TokenRef(RUN, 1), "delayed")]


async def test_a_report_shaped_message_to_the_recipient_is_never_a_delivery(sink, ledger):
    """A gateway that rewrote the envelope sender may send the report anywhere in the probe
    domain: its shape alone makes it a bounce, named by the token it returns."""
    new_run(ledger)
    token = TEST_KEY.token(RUN, 3)
    await send(sink, "", recipient_for(token, DOMAIN), report(3))
    n = ledger.load(RUN).notifications[3]
    assert n.copies == 0 and n.bounced and n.bounce is not None
    assert n.bounce.named_by == "token"
    assert sink.arrivals == []


async def test_a_forged_bounce_address_names_no_notification(sink, ledger):
    new_run(ledger)
    forged = f"np-{RUN}-2-aaaaaaaa"
    await send(
        sink,
        "",
        sender_for(forged, DOMAIN),
        report(2).replace(TEST_KEY.token(RUN, 2).encode(), forged.encode()),
    )
    record = ledger.load(RUN)
    assert not record.notifications[2].bounces and record.unmatched_bounces == 1


async def test_an_auto_reply_to_the_bounce_address_is_neither_delivery_nor_bounce(sink, ledger):
    new_run(ledger)
    token = TEST_KEY.token(RUN, 1)
    reply = b"Subject: Out of office\r\n\r\nI am away. " + token.encode() + b"\r\n"
    await send(sink, f"someone@{DOMAIN}", sender_for(token, DOMAIN), reply)
    n = ledger.load(RUN).notifications[1]
    assert n.copies == 0 and not n.bounces


async def test_the_returned_message_is_kept_for_the_evidence_bundle(sink, ledger):
    new_run(ledger)
    token = TEST_KEY.token(RUN, 2)
    await send(sink, "", sender_for(token, DOMAIN), report(2))
    [(_, content)] = ledger.returned_messages(RUN)
    assert b"message/delivery-status" in content and token.encode() in content


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seq=st.integers(1, 3),
    body=st.binary(max_size=300),
    sender_null=st.booleans(),
    tokens_in=st.sets(st.sampled_from(["subject", "header", "body", "envelope"])),
)
def test_no_message_to_the_bounce_address_ever_counts_as_a_delivery(
    tmp_path_factory, seq, body, sender_null, tokens_in
):
    """Whatever it carries: valid tokens in every place a delivery is read from, any bytes,
    any sender. (One ledger per example: hypothesis reruns the body, a fixture would not.)"""
    db = with_test_key(tmp_path_factory.mktemp("ledger") / "ledger.sqlite3")
    token = TEST_KEY.token(RUN, seq)
    headers = [b"Subject: notifyprobe " + token.encode()] if "subject" in tokens_in else []
    headers += [b"X-Probe-Token: " + token.encode()] if "header" in tokens_in else []
    message = b"\r\n".join(headers) + b"\r\n\r\n" + body
    message += b"\r\nCorrelation token: " + token.encode() if "body" in tokens_in else b""
    rcpts = [sender_for(token, DOMAIN)]
    rcpts += [recipient_for(token, DOMAIN)] if "envelope" in tokens_in else []

    async def exchange() -> None:
        with Ledger(db) as ledger:
            new_run(ledger)
            writer = LedgerWriter(ledger)
            async with Sink(writer, host="127.0.0.1", port=0, domain=DOMAIN) as server:
                async with aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port) as smtp:
                    await smtp.sendmail("" if sender_null else f"x@{DOMAIN}", rcpts, message)
            await writer.close()
            assert ledger.delivery_count(RUN) == 0

    asyncio.run(exchange())


FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "bounces"
FIXTURE_RUN, FIXTURE_SEQ = "0123456789", 7


@pytest.mark.parametrize(
    ("name", "action", "status"),
    [
        ("postfix-failed.eml", "failed", "5.7.1"),
        ("postfix-delayed.eml", "delayed", "4.7.1"),
        ("exim-failed.eml", "failed", "5.7.1"),
        ("exim-plain-failed.eml", "failed", "5.7.1"),
        ("exim-plain-delayed.eml", "delayed", ""),
        ("qmail-failed.eml", "failed", "5.7.1"),
        ("exchange-failed.eml", "failed", "5.7.1"),
    ],
)
async def test_every_known_bounce_format_reaches_its_notification_as_a_bounce(
    sink, ledger, name, action, status
):
    ledger.create_run(Run(FIXTURE_RUN, "gw:25", DOMAIN, 7, time.time()))
    token = TEST_KEY.token(FIXTURE_RUN, FIXTURE_SEQ)
    content = (FIXTURES / name).read_bytes()
    assert await send(sink, "", sender_for(token, DOMAIN), content) == 250
    n = ledger.load(FIXTURE_RUN).notifications[FIXTURE_SEQ]
    assert n.copies == 0 and n.bounce is not None
    assert n.bounce.action == action and n.bounce.confirmed
    assert n.bounce.status.startswith(status)
