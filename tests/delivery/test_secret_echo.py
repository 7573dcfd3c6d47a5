"""A gateway that echoes the AUTH exchange in later replies: the probe keeps none of it."""

from __future__ import annotations

import asyncio
import base64

import pytest

from probe.correlation import recipient_for
from probe.delivery.burst import Sender
from probe.delivery.credentials import Secret
from probe.delivery.tls import ClientSecurity
from probe.records import Endpoint

pytestmark = pytest.mark.real

PASSWORD = "s3cret-Passw0rd!"


async def echoing_gateway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every command; repeats the AUTH PLAIN blob and the raw password in MAIL/RCPT."""
    blob = ""
    writer.write(b"220 gw ESMTP\r\n")
    while line := await reader.readline():
        verb = line.split()[0].upper() if line.split() else b""
        if verb == b"EHLO":
            writer.write(b"250-gw\r\n250 AUTH PLAIN\r\n")
        elif verb == b"AUTH":
            blob = line.split()[2].decode()
            writer.write(b"235 2.7.0 welcome\r\n")
        elif verb == b"MAIL":
            writer.write(f"250 2.1.0 sender ok, you logged in with {blob}\r\n".encode())
        elif verb == b"RCPT":
            writer.write(f"250-2.1.5 ok\r\n250 2.1.5 password {PASSWORD} noted\r\n".encode())
        elif verb == b"DATA":
            writer.write(b"354 go\r\n")
            while (await reader.readline()) not in (b".\r\n", b""):
                pass
            writer.write(
                f"250 2.0.0 queued as {base64.b64encode(PASSWORD.encode()).decode()}\r\n".encode()
            )
        elif verb == b"QUIT":
            writer.write(b"221 bye\r\n")
            break
        else:
            writer.write(b"250 ok\r\n")
        await writer.drain()
    writer.close()


async def test_an_echoed_password_never_reaches_the_submission_record() -> None:
    server = await asyncio.start_server(echoing_gateway, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    security = ClientSecurity(user="ops", password=Secret(PASSWORD))
    try:
        sender = Sender(
            Endpoint("127.0.0.1", port), timeout=5, per_session=1, helo=None, security=security
        )
        result = await sender.submit(
            "ops@probe.invalid", recipient_for("np-x", "probe.invalid"), b"Subject: x\r\n\r\nx\r\n"
        )
    finally:
        server.close()
        await server.wait_closed()
    assert result.accepted, result.describe()
    recorded = repr(result)
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    plain = base64.b64encode(f"\0ops\0{PASSWORD}".encode()).decode()
    assert PASSWORD not in recorded and encoded not in recorded and plain not in recorded
    assert "[redacted]" in recorded and "sender ok, you logged in with" in recorded
