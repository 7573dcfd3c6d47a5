"""Small hostile SMTP gateways for the tests: each speaks one broken or foreign dialect.

Every one is a plain asyncio server on loopback, run in a thread of its own so that
`notifyprobe burst` can be run against it as a subprocess, exactly as a user runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
CHUNK = b"x" * 65536


async def _lines(reader: asyncio.StreamReader) -> bytes:
    return await reader.readline()


async def _dialogue(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    replies: dict[bytes, bytes],
    greeting: bytes,
) -> None:
    """Greet, then answer each command by its verb; DATA's message is read to its dot."""
    writer.write(greeting)
    while line := await reader.readline():
        verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper()
        writer.write(replies.get(verb, b"250 2.0.0 OK\r\n"))
        await writer.drain()
        if verb == b"DATA" and replies.get(verb, b"").startswith(b"354"):
            while await reader.readline() not in (b".\r\n", b""):
                pass
            writer.write(replies.get(b".", b"250 2.0.0 OK\r\n"))
        if verb == b"QUIT":
            break
    writer.close()


async def endless_continuation(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """EHLO answered by `250-` lines that never end."""
    writer.write(b"220 gw ESMTP\r\n")
    await reader.readline()
    with contextlib.suppress(ConnectionError):
        while not writer.is_closing():
            writer.write(b"250-PIPELINING and on and on\r\n" * 512)
            await writer.drain()


async def huge_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A greeting of one line 64 MB long."""
    writer.write(b"220 ")
    with contextlib.suppress(ConnectionError):
        for _ in range(64 * 1024 * 1024 // len(CHUNK)):
            if writer.is_closing():
                return
            writer.write(CHUNK)
            await writer.drain()
        writer.write(b"\r\n")


async def control_bytes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Replies carrying NUL, ESC, BEL and 0xFF; every notification refused with them."""
    await _dialogue(
        reader,
        writer,
        {
            b"EHLO": b"250-gw \x1b]0;owned\x07\r\n250 8BITMIME\x00\r\n",
            b"RCPT": b"554 5.7.1 \x1b[2J\x00\x07\xff not for you\r\n",
        },
        b"220 gw \x1b[31mready\x07\xff\r\n",
    )


async def greeting_421(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"421 4.3.2 Service not available, closing transmission channel\r\n")
    await writer.drain()
    writer.close()


async def closes_during_data(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 gw ESMTP\r\n")
    while line := await reader.readline():
        verb = line[:4].upper()
        if verb == b"DATA":
            writer.write(b"354 go ahead\r\n")
            await writer.drain()
            await reader.readline()
            break  # gone mid-message
        writer.write(b"250 OK\r\n")
        await writer.drain()
    writer.close()


async def hangs_up_at_data(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Greets and answers every command, then closes the connection on DATA, before its 354."""
    writer.write(b"220 gw ESMTP\r\n")
    while line := await reader.readline():
        if line[:4].upper() == b"DATA":
            break
        writer.write(b"250-gw\r\n250 OK\r\n" if line[:4].upper() == b"EHLO" else b"250 OK\r\n")
        await writer.drain()
    writer.close()


async def resets_at_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Takes the TCP connection, then resets it (RST, no FIN) before any greeting: a worker
    that dies at once, a proxy with nothing behind it."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def garbage_after_starttls(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await _dialogue(
        reader,
        writer,
        {
            b"EHLO": b"250-gw\r\n250 STARTTLS\r\n",
            b"STARTTLS": b"220 2.0.0 Ready to start TLS\r\n" + b"\x00\xff garbage \x1b[2J" * 64,
        },
        b"220 gw ESMTP\r\n",
    )


def cp1252_relay(sink_port: int) -> Handler:
    """A working gateway localised in Windows-1252: every reply in it, and it relays every
    message to the sink, greeting the sink with a cp1252 name too."""
    german = {
        b"EHLO": "250-Mailserver für Benachrichtigungen grüßt\r\n250 8BITMIME\r\n",
        b"MAIL": "250 2.1.0 Absender in Ordnung\r\n",
        b"RCPT": "250 2.1.5 Empfänger in Ordnung\r\n",
        b"DATA": "354 Nachricht eingeben, mit <CRLF>.<CRLF> beenden\r\n",
        b"RSET": "250 2.0.0 Zurückgesetzt\r\n",
        b"QUIT": "221 2.0.0 Auf Wiederhören\r\n",
    }
    replies = {verb: text.encode("cp1252") for verb, text in german.items()}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write("220 Mailserver für Benachrichtigungen bereit\r\n".encode("cp1252"))
        sender, rcpts = b"", list[bytes]()
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"MAIL":
                sender, rcpts = line.split(b":", 1)[1].strip(), []
            elif verb == b"RCPT":
                rcpts.append(line.split(b":", 1)[1].strip())
            writer.write(replies.get(verb, b"250 OK\r\n"))
            await writer.drain()
            if verb == b"DATA":
                body = b""
                while (chunk := await reader.readline()) not in (b".\r\n", b""):
                    body += chunk
                await _relay(sink_port, sender, rcpts, body)
                writer.write("250 2.0.0 In Warteschlange eingereiht\r\n".encode("cp1252"))
            if verb == b"QUIT":
                break
        writer.close()

    return handle


CP1252_HOST = "gw.example.net"  # the name a cp1252_refusing gateway greets with and names
CP1252_ADDRESS = "192.0.2.7"  # and the address it names


def cp1252_refusal(rcpt: bytes, password: str) -> bytes:
    """The text of cp1252_refusing's RCPT reply, after its code, as it sends it."""
    return (
        "5.7.1 Empfänger ".encode("cp1252")
        + rcpt
        + f" über {CP1252_HOST} [{CP1252_ADDRESS}]:25 abgelehnt, Kennwort {password} ÿ".encode(
            "cp1252"
        )
    )


def cp1252_refusing(password: str) -> Handler:
    """A gateway localised in Windows-1252 that logs the probe in (AUTH PLAIN) and refuses every
    recipient with a reply that is not UTF-8 and does not read as cp1252 text either (it ends on
    0xFF): it names the gateway, the recipient and an address, and echoes the password it was
    given in cp1252."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"220 {CP1252_HOST} ESMTP für Benachrichtigungen\r\n".encode("cp1252"))
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                reply = f"250-{CP1252_HOST} grüßt\r\n250 AUTH PLAIN\r\n".encode("cp1252")
            elif verb == b"AUTH":
                reply = b"235 2.7.0 Angemeldet\r\n"
            elif verb == b"RCPT":
                rcpt = line.split(b":", 1)[1].strip()
                reply = b"550 " + cp1252_refusal(rcpt, password) + b"\r\n"
            elif verb == b"QUIT":
                reply = b"221 2.0.0 Auf Wiederh\xf6ren\r\n"
            else:
                reply = b"250 2.0.0 OK\r\n"
            writer.write(reply)
            await writer.drain()
            if verb == b"QUIT":
                break
        writer.close()

    return handle


async def _relay(port: int, sender: bytes, rcpts: list[bytes], body: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        while (line := await reader.readline())[3:4] == b"-":
            pass
        return line

    await reply()
    for command in (
        b"EHLO gateway-f\xfcr-benachrichtigungen",
        b"MAIL FROM:" + sender,
        *(b"RCPT TO:" + r for r in rcpts),
        b"DATA",
    ):
        writer.write(command + b"\r\n")
        await reply()
    writer.write(body + b".\r\n")
    await reply()
    writer.write(b"QUIT\r\n")
    await reply()
    writer.close()


@contextlib.contextmanager
def serving(handler: Handler) -> Iterator[int]:
    """`handler` listening on a free loopback port, in a thread; yields the port."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    port: list[int] = []

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, OSError):
            await handler(reader, writer)

    async def main() -> asyncio.base_events.Server:
        server = await asyncio.start_server(guarded, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        started.set()
        return server

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(main(), loop).result(10)
    started.wait(10)
    try:
        yield port[0]
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
