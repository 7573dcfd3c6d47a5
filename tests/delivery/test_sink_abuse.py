"""The sink against hostile and broken clients, over raw sockets.

Every test runs against a live in-process sink with short limits, and the fixture's teardown
proves the sink survived: a normal client still gets 250, and the ledger is intact.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from probe.correlation import TokenKey, recipient_for
from probe.delivery.sink import MAX_TOKENS_PER_MESSAGE, Sink
from probe.delivery.sink_limits import (
    Access,
    ConnectionGate,
    SinkLimits,
    client_network,
)
from probe.ledger import Ledger, LedgerWriter
from probe.records import Run, is_loopback
from tests.conftest import TEST_KEY, with_test_key
from tests.smtp_raw import RawClient

DOMAIN = "probe.invalid"
RUN = "abcabcabc0"
WRONG_KEY = TokenKey(b"not the ledger's secret!")
OTHER_RUN = "0123456789"  # well-formed, but no such run in this ledger: a forged token
LIMITS = SinkLimits(
    max_message_bytes=64 * 1024,
    max_connections=8,
    max_per_client=6,
    max_recipients=3,
    idle_timeout_s=1.0,
    session_timeout_s=1.5,
    max_repeats=5,
)


def token(seq: int, run: str = RUN) -> str:
    return TEST_KEY.token(run, seq)


def rcpt(seq: int, run: str = RUN) -> str:
    return recipient_for(token(seq, run), DOMAIN)


@pytest.fixture
async def sink(tmp_path: Path):
    """A sink with short limits; on teardown, a normal client must still be served."""
    with Ledger(with_test_key(tmp_path / "sink.sqlite3")) as ledger:
        ledger.create_run(Run(RUN, "gw:25", DOMAIN, count=50, started_at=time.time()))
        writer = LedgerWriter(ledger)
        server = Sink(writer, host="127.0.0.1", port=0, domain=DOMAIN, limits=LIMITS)
        await server.start()
        try:
            yield server, ledger
            await assert_still_serving(server, ledger)
        finally:
            await server.stop()
            await writer.close()


async def assert_still_serving(server: Sink, ledger: Ledger) -> None:
    seq = 50
    before = ledger.delivery_count(RUN)
    message = f"Subject: after the abuse {token(seq)}\r\n\r\nstill here\r\n".encode()
    _, reply = await aiosmtplib.send(
        message,
        sender="ops@example.org",
        recipients=[rcpt(seq)],
        hostname="127.0.0.1",
        port=server.port,
        timeout=5,
    )
    assert "Recorded" in reply
    assert ledger.delivery_count(RUN) == before + 1
    with sqlite3.connect(ledger.path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def open_transaction(port: int, *rcpts: str) -> RawClient:
    client, code, _ = await RawClient.connect(port)
    assert code == 220
    assert (await client.command("EHLO abuser.example"))[0] == 250
    assert (await client.command("MAIL FROM:<x@example.org>"))[0] == 250
    for address in rcpts:
        assert (await client.command(f"RCPT TO:<{address}>"))[0] == 250
    return client


async def send_data(client: RawClient, body: bytes) -> tuple[int, str]:
    code, _ = await client.command("DATA")
    assert code == 354
    await client.send(body + b"\r\n.\r\n")
    return await client.reply()


def rows(ledger: Ledger, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(ledger.path) as conn:
        return conn.execute(sql).fetchall()


# -- limits --------------------------------------------------------------------------------


@pytest.mark.real
async def test_message_over_the_size_limit_gets_552_and_the_session_goes_on(sink):
    server, ledger = sink
    client = await open_transaction(server.port, rcpt(1))
    lines = b"\r\n".join([b"x" * 500] * 200)  # 100 kB > 64 kB
    code, _text = await send_data(client, b"Subject: big\r\n\r\n" + lines)
    assert code == 552
    assert (await client.command("NOOP"))[0] == 250
    await client.close()
    assert ledger.delivery_count(RUN) == 0


@pytest.mark.real
async def test_too_many_recipients_gets_452(sink):
    server, _ = sink
    client = await open_transaction(server.port, rcpt(1), rcpt(2), rcpt(3))
    code, text = await client.command(f"RCPT TO:<{rcpt(4)}>")
    assert (code, text.split()[0]) == (452, "4.5.3")
    await client.close()


@pytest.mark.real
async def test_connections_over_the_per_client_cap_get_421_and_are_closed(sink):
    server, _ = sink
    held = [(await RawClient.connect(server.port))[0] for _ in range(LIMITS.max_per_client)]
    extra, code, text = await RawClient.connect(server.port)
    assert code == 421 and "from your address" in text
    assert await extra.closed_by_server()
    assert server.gate.live == LIMITS.max_per_client
    for client in held:
        await client.close()


async def test_connections_over_the_global_cap_get_421():
    gate = ConnectionGate(SinkLimits(max_connections=2, max_per_client=5), Access())
    assert gate.admit("127.0.0.1") is None and gate.admit("127.0.0.2") is None
    refusal = gate.admit("127.0.0.3")
    assert refusal is not None and refusal.startswith("421 4.7.0 Too many connections")
    gate.release("127.0.0.1")
    assert gate.admit("127.0.0.3") is None


@pytest.mark.real
async def test_released_connections_free_their_slots(sink):
    server, _ = sink
    for _ in range(3 * LIMITS.max_per_client):  # more sessions than the cap, one after another
        client, code, _ = await RawClient.connect(server.port)
        assert code == 220
        assert (await client.command("QUIT"))[0] == 221
        await client.close()
    for _ in range(100):  # connection_lost runs just after the close; bounded wait for it
        if server.gate.live == 0:
            break
        await asyncio.sleep(0.01)
    assert server.gate.live == 0


@pytest.mark.real
async def test_idle_client_is_disconnected_after_the_idle_timeout(sink):
    server, _ = sink
    client, _, _ = await RawClient.connect(server.port)
    started = time.monotonic()
    assert await client.closed_by_server(timeout=5)
    assert LIMITS.idle_timeout_s * 0.9 <= time.monotonic() - started < 4


@pytest.mark.real
async def test_one_byte_per_tick_client_is_cut_off_while_others_are_served(sink):
    """Slow-loris: each NOOP resets the idle timer, the session deadline still ends it."""
    server, ledger = sink
    slow, _, _ = await RawClient.connect(server.port)

    async def trickle() -> None:
        for _ in range(200):  # bounded: far more bytes than the session deadline allows
            try:
                await slow.send(b"N")
                await asyncio.sleep(0.02)
                await slow.send(b"O")
                await asyncio.sleep(0.02)
                await slow.send(b"O")
                await asyncio.sleep(0.02)
                await slow.send(b"P\r\n")
            except (ConnectionError, OSError):
                return
            await asyncio.sleep(0.02)

    started = time.monotonic()
    trickler = asyncio.create_task(trickle())
    other = await open_transaction(server.port, rcpt(7))  # served meanwhile
    assert (await send_data(other, f"Subject: {token(7)}\r\n\r\nok".encode()))[0] == 250
    await other.close()
    assert await slow.closed_by_server(timeout=5)
    took = time.monotonic() - started
    trickler.cancel()
    assert took < LIMITS.session_timeout_s + 1.5
    assert ledger.delivery_count(RUN) == 1


@pytest.mark.real
async def test_session_deadline_sends_421_before_closing(sink):
    server, _ = sink
    client, _, _ = await RawClient.connect(server.port)
    replies = []
    for _ in range(LIMITS.max_repeats - 1):  # a command every 0.4 s keeps the idle timer reset
        await asyncio.sleep(0.4)
        replies.append(await client.command("NOOP"))
        if replies[-1][0] != 250:
            break
    code, text = replies[-1]
    assert (code, text.split()[0]) == (421, "4.4.2")
    assert await client.closed_by_server()


@pytest.mark.real
async def test_noop_flood_is_cut_off_with_421(sink):
    server, _ = sink
    client, _, _ = await RawClient.connect(server.port)
    codes = [(await client.command("NOOP"))[0] for _ in range(LIMITS.max_repeats + 1)]
    assert codes[:-1] == [250] * LIMITS.max_repeats and codes[-1] == 421
    assert await client.closed_by_server()


@pytest.mark.real
async def test_command_line_over_512_bytes_gets_500(sink):
    server, _ = sink
    client, _, _ = await RawClient.connect(server.port)
    assert (await client.command("EHLO x"))[0] == 250
    code, text = await client.command("MAIL FROM:<" + "a" * 600 + "@example.org>")
    assert code == 500 and "too long" in text
    code, _ = await client.command(b"X" * 5000)  # longer than the stream buffer
    assert code == 500
    assert (await client.command("NOOP"))[0] == 250
    await client.close()


@pytest.mark.real
async def test_data_line_over_1000_bytes_is_refused_not_stored(sink):
    server, ledger = sink
    client = await open_transaction(server.port, rcpt(2))
    code, text = await send_data(client, f"Subject: {token(2)}\r\n\r\n".encode() + b"y" * 5000)
    assert code == 500 and "too long" in text.lower()
    await client.close()
    assert ledger.delivery_count(RUN) == 0


@pytest.mark.real
async def test_one_megabyte_single_header_line_is_refused(tmp_path):
    """With a size cap above 1 MB the line-length limit is what refuses it."""
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        writer = LedgerWriter(ledger)
        limits = SinkLimits(max_message_bytes=4 * 1024 * 1024)
        async with Sink(writer, host="127.0.0.1", port=0, domain=DOMAIN, limits=limits) as server:
            client = await open_transaction(server.port, rcpt(3))
            header = b"X-Huge: " + b"h" * (1024 * 1024)
            code, _ = await send_data(client, header + b"\r\n\r\nbody")
            assert code == 500
            assert (await client.command("NOOP"))[0] == 250
            await client.close()
        await writer.close()


@pytest.mark.real
async def test_enormous_folded_header_is_parsed_and_the_token_found(sink):
    server, ledger = sink
    client = await open_transaction(server.port, f"someone@{DOMAIN}")
    folded = b"X-Huge: start\r\n" + b"".join(b"\t" + b"f" * 70 + b"\r\n" for _ in range(700))
    body = folded + f"Subject: {token(4)}\r\n\r\nbody".encode()
    assert len(body) > 50_000
    assert (await send_data(client, body))[0] == 250
    await client.close()
    assert rows(ledger, "SELECT seq, found_in FROM deliveries") == [(4, "subject")]


# -- malformed and unusual input -------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"\x00\x00\x00",
        b"\xff\xfe garbage",
        b"MAIL FROM:<<<>>>",
        b"MAIL FROM:",
        b"RCPT TO:<a@probe.invalid>",  # RCPT before MAIL
        b"DATA",  # DATA before RCPT
        b"HELO",
        b"AUTH PLAIN AGFsaWNlAHNlY3JldA==",  # AUTH where none is offered
        b"STARTTLS",  # STARTTLS where none is offered
        b"MAIL FROM:<x@example.org> BODY=9BIT",
        b"MAIL FROM:<x@example.org> SIZE=abc",
        b"\x1b[31mRED\x1b[0m",
    ],
)
@pytest.mark.real
async def test_malformed_command_gets_an_error_reply_and_the_session_survives(sink, line):
    server, _ = sink
    client, _, _ = await RawClient.connect(server.port)
    assert (await client.command("EHLO x"))[0] == 250
    code, _ = await client.command(line)
    assert 400 <= code < 600
    assert (await client.command("RSET"))[0] == 250
    await client.close()


@pytest.mark.real
async def test_relaying_to_another_domain_is_refused(sink):
    server, ledger = sink
    client = await open_transaction(server.port)
    for target in ("victim@example.com", f"x@sub.{DOMAIN}", f"x@{DOMAIN}.evil.example", "x"):
        code, text = await client.command(f"RCPT TO:<{target}>")
        assert code >= 500, (target, code, text)
    code, _ = await client.command("DATA")
    assert code == 503  # no recipient was accepted
    await client.close()
    assert rows(ledger, "SELECT COUNT(*) FROM foreign_messages") == [(0,)]


@pytest.mark.real
async def test_commands_with_bare_lf_still_work(sink):
    server, _ = sink
    client, _, _ = await RawClient.connect(server.port)
    await client.send(b"EHLO bare-lf\n")
    assert (await client.reply())[0] == 250
    await client.send(b"NOOP\n")
    assert (await client.reply())[0] == 250
    await client.close()


@pytest.mark.real
async def test_body_with_bare_lf_nul_and_8bit_bytes_is_recorded(sink):
    server, ledger = sink
    client = await open_transaction(server.port, f"someone@{DOMAIN}")
    body = f"Subject: mixed {token(5)}\n\nnul \x00 here\nlatin-1: ".encode() + b"\xe9\xe8\xff\n"
    assert (await send_data(client, body))[0] == 250
    await client.close()
    assert rows(ledger, "SELECT seq FROM deliveries") == [(5,)]


@pytest.mark.real
async def test_smtputf8_envelope_is_accepted_and_recorded(sink):
    server, ledger = sink
    client, _, _ = await RawClient.connect(server.port)
    assert (await client.command("EHLO utf8"))[0] == 250
    code, _ = await client.command("MAIL FROM:<émetteur@exemple.fr> SMTPUTF8".encode())
    assert code == 250
    assert (await client.command(f"RCPT TO:<{rcpt(6)}>"))[0] == 250
    code, _ = await send_data(client, "Subject: Réunion\r\n\r\nCorps en UTF-8: é".encode())
    assert code == 250
    await client.close()
    assert rows(ledger, "SELECT seq, mail_from FROM deliveries") == [(6, "émetteur@exemple.fr")]


@pytest.mark.real
async def test_broken_mime_with_token_in_raw_bytes_is_recorded(sink):
    server, ledger = sink
    client = await open_transaction(server.port, f"someone@{DOMAIN}")
    body = (
        b"Content-Type: multipart/mixed; boundary=\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"--\r\n\x00\xff not base64 !!! " + token(8).encode() + b"\r\n--"
    )
    assert (await send_data(client, body))[0] == 250
    await client.close()
    assert [seq for (seq,) in rows(ledger, "SELECT seq FROM deliveries")] == [8]


@pytest.mark.real
async def test_forged_missing_and_out_of_range_tokens_are_foreign_not_counted(sink):
    server, ledger = sink
    client = await open_transaction(server.port, f"someone@{DOMAIN}")
    cases = [
        f"Subject: forged {token(1, OTHER_RUN)}\r\n\r\nx",  # a run this ledger never made
        "Subject: no token at all\r\n\r\nx",
        f"Subject: beyond the burst {token(999)}\r\n\r\nx",  # right run, no such notification
        f"Subject: wrong key {WRONG_KEY.token(RUN, 2)}\r\n\r\nx",  # seen run id, no secret
    ]
    for body in cases:
        assert (await send_data(client, body.encode()))[0] == 250
        assert (await client.command("MAIL FROM:<x@example.org>"))[0] == 250
        assert (await client.command(f"RCPT TO:<someone@{DOMAIN}>"))[0] == 250
    await client.close()
    assert ledger.delivery_count(RUN) == 0
    reasons = sorted(r for (r,) in rows(ledger, "SELECT reason FROM foreign_messages"))
    assert reasons == sorted(
        [
            f"unknown token np-{OTHER_RUN}-1",
            "no token",
            f"unknown token np-{RUN}-999",
            "1 token(s) with a wrong MAC",
        ]
    )


@pytest.mark.real
async def test_one_message_naming_a_whole_run_counts_for_a_few_at_most(sink):
    """What a gateway that saw every token could do: one message for all 20 notifications."""
    server, ledger = sink
    client = await open_transaction(server.port, f"someone@{DOMAIN}")
    body = "Subject: all of them\r\n\r\n" + "\r\n".join(token(seq) for seq in range(1, 21))
    assert (await send_data(client, body.encode()))[0] == 250
    await client.close()
    assert ledger.delivery_count(RUN) == MAX_TOKENS_PER_MESSAGE
    reasons = [r for (r,) in rows(ledger, "SELECT reason FROM foreign_messages")]
    assert reasons == [f"20 tokens in one message, only the first {MAX_TOKENS_PER_MESSAGE} counted"]


@pytest.mark.real
async def test_a_message_of_many_forged_tokens_costs_one_foreign_row(sink):
    server, ledger = sink
    client = await open_transaction(server.port, f"someone@{DOMAIN}")
    forged = "\r\n".join(WRONG_KEY.token(RUN, seq) for seq in range(1, 1501))
    assert (await send_data(client, f"Subject: flood\r\n\r\n{forged}".encode()))[0] == 250
    await client.close()
    assert rows(ledger, "SELECT reason FROM foreign_messages") == [
        ("1500 token(s) with a wrong MAC",)
    ]
    assert ledger.delivery_count(RUN) == 0


@pytest.mark.real
async def test_connection_reset_mid_data_stores_nothing_and_breaks_nothing(sink):
    server, ledger = sink
    client = await open_transaction(server.port, rcpt(9))
    assert (await client.command("DATA"))[0] == 354
    await client.send(f"Subject: {token(9)}\r\n\r\nhalf a mess".encode())
    client.writer.transport.abort()  # RST, no end of data
    await asyncio.sleep(0)  # let the sink see the reset before the teardown's client
    assert ledger.delivery_count(RUN) == 0


@pytest.mark.real
async def test_many_abusive_sessions_at_once_leave_the_sink_serving(sink):
    server, _ = sink

    async def abuse(n: int) -> None:
        client, code, _ = await RawClient.connect(server.port)
        if code != 220:
            return
        try:
            await client.send(bytes([n % 256]) * 3000 + b"\r\n\x00\r\nMAIL FROM:<<>\r\n")
            await client.reply(timeout=2)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            await client.close()

    await asyncio.gather(*(abuse(n) for n in range(LIMITS.max_per_client)))


# -- access ----------------------------------------------------------------------------------


def test_loopback_is_always_permitted_and_others_only_when_listed():
    access = Access(allow_remote=True, allowed_clients=(client_network("192.0.2.0/24"),))
    assert access.permits("127.0.0.1") and access.permits("::1")
    assert access.permits("192.0.2.17") and access.permits("::ffff:192.0.2.17")
    assert not access.permits("198.51.100.1") and not access.permits("garbage")


def test_non_loopback_bind_needs_allow_remote_and_a_client_list():
    from probe.errors import UsageError

    with pytest.raises(UsageError, match="--allow-remote"):
        Access().check_bind("0.0.0.0")
    with pytest.raises(UsageError, match="--allow-client"):
        Access(allow_remote=True).check_bind("0.0.0.0")
    Access(allow_remote=True, allowed_clients=(client_network("10.0.0.0/8"),)).check_bind("::")
    Access().check_bind("127.0.0.1")
    assert is_loopback("localhost") and is_loopback("::1") and not is_loopback("sink.example")


async def test_client_outside_the_list_gets_554_and_is_closed():
    gate = ConnectionGate(SinkLimits(), Access(True, (client_network("10.0.0.0/8"),)))
    refusal = gate.admit("192.0.2.1")
    assert refusal is not None and refusal.startswith("554 5.7.1")
    assert gate.live == 0 and gate.admit("10.1.2.3") is None
