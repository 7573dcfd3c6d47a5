"""A scripted next hop for a real MTA under test: the mail server the gateway relays to.

A gateway that accepts a notification and then cannot pass it on returns it to the sender as a
bounce. To make a real Postfix (or Exim) write one, its next hop is this small aiosmtpd server,
run in a thread, which answers every RCPT as its `mode` says:

- "refuse": 550 5.7.1 for every recipient (the gateway sends a `failed` report);
- "first": accepts the burst's first notification (seq 1, read from the token in its
  recipient), forwards it to `forward_to` (the probe's sink) and refuses every other one with
  the same 550 (a next hop that delivers only the first). By seq, not by arrival: the gateway's
  queue may pass the notifications on in another order than it took them;
- "tempfail": 450 4.7.1 for every recipient (the gateway queues them and, if told to warn,
  sends a `delayed` report).

`Capture` is the other end for the fixture program: an SMTP server that keeps every message.
"""

from __future__ import annotations

import asyncio
import smtplib
import threading
from dataclasses import dataclass, field
from typing import Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from probe.correlation import TOKEN_RE
from tests.ports import unused_port

Mode = Literal["refuse", "first", "tempfail"]
FORWARD_TIMEOUT_S = 10.0


def refusal(rcpt: str) -> str:
    return f"550 5.7.1 <{rcpt}>: Recipient address rejected: notifications not accepted here"


TEMPFAIL = "450 4.7.1 try again later"


def _seq(address: str) -> int | None:
    """The notification's number in its burst, from the token in its address."""
    token = TOKEN_RE.search(address)
    return int(token.group(2)) if token else None


@dataclass
class NextHopHandler:
    mode: Mode
    forward_to: tuple[str, int] | None = None
    answers: list[tuple[str, str]] = field(default_factory=list)  # (rcpt, reply), in order
    forwarded: list[bytes] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self._lock:
            if self.mode == "tempfail":
                reply = TEMPFAIL
            elif self.mode == "first" and _seq(address) == 1:
                envelope.rcpt_tos.append(address)
                reply = "250 2.1.5 OK"
            else:
                reply = refusal(address)
            self.answers.append((address, reply))
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        if self.forward_to is not None:
            try:
                await asyncio.to_thread(self._forward, envelope, content)
            except (OSError, smtplib.SMTPException) as exc:
                return f"451 4.4.0 could not pass it on: {exc}"
        self.forwarded.append(content)
        return "250 2.0.0 OK"

    def _forward(self, envelope: Envelope, content: bytes) -> None:
        assert self.forward_to is not None
        host, port = self.forward_to
        with smtplib.SMTP(host, port, timeout=FORWARD_TIMEOUT_S) as client:
            client.sendmail(envelope.mail_from or "", envelope.rcpt_tos, content)


class NextHop:
    """The next hop on a loopback port, in its own thread: `with NextHop("refuse") as hop:`."""

    def __init__(self, mode: Mode, forward_to: tuple[str, int] | None = None):
        self.handler = NextHopHandler(mode, forward_to)
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=unused_port())

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def __enter__(self) -> NextHop:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


@dataclass(frozen=True)
class Captured:
    mail_from: str
    rcpts: tuple[str, ...]
    content: bytes


@dataclass
class CaptureHandler:
    messages: list[Captured] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.messages.append(Captured(envelope.mail_from or "", tuple(envelope.rcpt_tos), content))
        return "250 2.0.0 kept"


class Capture:
    """An SMTP server that keeps every message it is given (the fixture program's sink)."""

    def __init__(self, port: int | None = None) -> None:
        self.handler = CaptureHandler()
        port = port if port is not None else unused_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=port)

    @property
    def port(self) -> int:
        return int(self.controller.port)

    @property
    def messages(self) -> list[Captured]:
        return self.handler.messages

    def __enter__(self) -> Capture:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
