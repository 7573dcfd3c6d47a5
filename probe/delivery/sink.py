"""The sink: an aiosmtpd server that receives the probe's notifications and records them.

It accepts recipients in the probe domain only (it is never a relay), finds the correlation
token in whatever survived the gateway, and answers 250 only once the delivery is committed to
the ledger, so a message the sink acknowledged is never lost.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from probe.correlation import BOUNCE_PREFIX, FoundToken, TokenRef, locate_tokens, split_address
from probe.delivery.sink_limits import (
    TOO_MANY_RECIPIENTS,
    Access,
    ConnectionGate,
    GuardedSMTP,
    SinkLimits,
)
from probe.errors import ProbeError
from probe.ledger import LedgerWriter
from probe.records import FoundIn, ReceivedMessage, found_in, printable

log = structlog.get_logger("notifyprobe.sink")

DeliveryCallback = Callable[[TokenRef, float], None]
PARSE_IN_THREAD_BYTES = 256 * 1024  # parse larger messages off the loop: others keep being served
MAX_TOKENS_PER_MESSAGE = 4  # a rewriting gateway may repeat a few; a whole run is a forgery


class SinkHandler:
    """aiosmtpd handler: RCPT checks the domain, DATA records tokens durably before 250."""

    def __init__(
        self,
        writer: LedgerWriter,
        domain: str,
        on_delivery: DeliveryCallback | None,
        max_recipients: int = SinkLimits.max_recipients,
    ):
        self.writer = writer
        self.key = writer.ledger.token_key
        self.domain = domain.lower().rstrip(".")
        self.on_delivery = on_delivery
        self.max_recipients = max_recipients
        self.received = 0

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        _, domain = split_address(address)
        if domain != self.domain:
            return f"550 5.7.1 Relaying denied: this sink accepts only @{self.domain}"
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        message = ReceivedMessage(
            received_at=time.time(),
            peer=_peer(session),
            mail_from=printable(envelope.mail_from or ""),
            rcpts=tuple(printable(r) for r in envelope.rcpt_tos),
            size=len(content),
            helo=printable(session.host_name or ""),
        )
        if len(content) > PARSE_IN_THREAD_BYTES:
            found = await asyncio.to_thread(locate_tokens, list(envelope.rcpt_tos), content)
        else:
            found = locate_tokens(envelope.rcpt_tos, content)
        tokens, not_counted = self.authentic(found)
        writes: list[asyncio.Future[bool] | asyncio.Future[None]] = [
            self.writer.record_delivery(ref, where, message) for ref, where in tokens
        ]
        bounce_run = _bounce_run(envelope.rcpt_tos)
        if bounce_run is not None:
            writes.append(self.writer.record_foreign("bounce", message, bounce_run))
        elif not_counted:
            writes.append(self.writer.record_foreign(not_counted, message))
        elif not tokens:
            writes.append(self.writer.record_foreign("no token", message))
        try:
            results = await asyncio.gather(*writes)
        except ProbeError as exc:
            log.error("ledger_write_failed", error=str(exc))
            return "451 4.3.0 Cannot record the message now, try again later"
        self.received += 1
        for (ref, _), known in zip(tokens, results, strict=False):
            if known is True and self.on_delivery is not None:
                self.on_delivery(ref, message.received_at)
        return "250 2.0.0 Recorded"

    def authentic(
        self, found: list[tuple[FoundToken, str]]
    ) -> tuple[list[tuple[TokenRef, FoundIn]], str]:
        """The tokens to count (MAC checked, at most MAX_TOKENS_PER_MESSAGE) and, when some were
        not counted, one line that says why: one row per message, however many tokens it held.
        A gateway delivers one notification per message; a message naming many is forged or
        broken, and counting them all would let one message stand for a whole run."""
        signed = [(f.ref, found_in(where)) for f, where in found if self.key.verify(f)]
        forged = len(found) - len(signed)
        reasons = [f"{forged} token(s) with a wrong MAC"] if forged else []
        if len(signed) > MAX_TOKENS_PER_MESSAGE:
            reasons.append(
                f"{len(signed)} tokens in one message, "
                f"only the first {MAX_TOKENS_PER_MESSAGE} counted"
            )
        return signed[:MAX_TOKENS_PER_MESSAGE], "; ".join(reasons)

    async def handle_exception(self, error: Exception) -> str:
        """A bug or hostile input must cost one reply, never the session's details in a log."""
        log.error("sink_session_error", error=type(error).__name__)
        return "451 4.3.0 Internal error, try again later"


class Sink:
    """The sink server on the current event loop, with its own group-commit ledger writer."""

    def __init__(
        self,
        writer: LedgerWriter,
        *,
        host: str,
        port: int,
        domain: str,
        on_delivery: DeliveryCallback | None = None,
        limits: SinkLimits | None = None,
        access: Access | None = None,
        tls_context: ssl.SSLContext | None = None,
    ):
        self.host, self.port, self.domain = host, port, domain
        self.writer = writer
        self.limits = limits or SinkLimits()
        self.access = access or Access()
        self.tls_context = tls_context  # offered through STARTTLS, never required
        self.gate = ConnectionGate(self.limits, self.access)
        self.handler = SinkHandler(self.writer, domain, on_delivery, self.limits.max_recipients)
        self._server: asyncio.base_events.Server | None = None

    def _protocol(self) -> SMTP:
        return GuardedSMTP(
            self.handler,
            gate=self.gate,
            hostname="notifyprobe-sink",
            ident="notifyprobe sink",
            enable_SMTPUTF8=True,
            tls_context=self.tls_context,
        )

    async def start(self) -> Sink:
        self.access.check_bind(self.host)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(self._protocol, self.host, self.port)
        except OSError as exc:
            raise ProbeError(
                f"sink cannot listen on {self.host}:{self.port}: {exc.strerror}"
            ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        log.debug("sink_listening", address=self.address, domain=self.domain)
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def stop(self) -> None:
        """Stop listening, end open sessions (a relay may keep one cached), flush the ledger."""
        if self._server is not None:
            self._server.close()
            for transport in list(self.gate.sessions):
                transport.close()
            await self._server.wait_closed()
        await self.writer.drain()

    async def __aenter__(self) -> Sink:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _peer(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "")


def _bounce_run(rcpts: list[str]) -> str | None:
    for rcpt in rcpts:
        local, _ = split_address(rcpt)
        if local.lower().startswith(BOUNCE_PREFIX):
            return local[len(BOUNCE_PREFIX) :].lower()
    return None
