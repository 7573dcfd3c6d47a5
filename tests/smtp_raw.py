"""A raw SMTP client for abuse tests: sends exactly the bytes given, reads replies as they come."""

from __future__ import annotations

import asyncio
import contextlib

REPLY_TIMEOUT_S = 5.0


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, *, greeting: bool = True) -> tuple[RawClient, int, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
        client = cls(reader, writer)
        code, text = await client.reply() if greeting else (0, "")
        return client, code, text

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self, timeout: float = REPLY_TIMEOUT_S) -> tuple[int, str]:
        """One (possibly multi-line) reply; (0, '') when the server closed the connection."""
        lines: list[str] = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                return 0, "\n".join(lines)
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(text[4:])
            if text[3:4] != "-":
                return int(text[:3]), "\n".join(lines)

    async def command(self, line: bytes | str) -> tuple[int, str]:
        data = line.encode() if isinstance(line, str) else line
        await self.send(data + b"\r\n")
        return await self.reply()

    async def closed_by_server(self, timeout: float = REPLY_TIMEOUT_S) -> bool:
        """True once the server closes: everything it still sends is read and dropped."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), timeout):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            return True
        except asyncio.TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
