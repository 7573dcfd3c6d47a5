"""The sink: an aiosmtpd server that receives the probe's notifications and records them.

It accepts recipients in the probe domain only (it is never a relay), finds the correlation
token in whatever survived the gateway, and answers 250 only once the delivery is committed to
the ledger, so a message the sink acknowledged is never lost.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from probe.correlation import (
    FoundToken,
    TokenRef,
    bounce_address_run,
    bounce_address_tokens,
    is_bounce_address,
    locate_tokens,
    split_address,
)
from probe.delivery.bounce import BounceReport, RecipientReport, looks_like_bounce, read_bounce
from probe.delivery.sink_limits import (
    TOO_MANY_RECIPIENTS,
    Access,
    ConnectionGate,
    GuardedSMTP,
    SinkLimits,
)
from probe.errors import ProbeError
from probe.ledger import LedgerWriter, Returned
from probe.records import (
    Bounce,
    BounceAction,
    BouncedBy,
    FoundIn,
    ReceivedMessage,
    found_in,
    printable,
)

log = structlog.get_logger("notifyprobe.sink")
T = TypeVar("T")

DeliveryCallback = Callable[[TokenRef, float], None]
BounceCallback = Callable[[TokenRef, float, BounceAction], None]
PARSE_IN_THREAD_BYTES = 256 * 1024  # parse larger messages off the loop: others keep being served
MAX_TOKENS_PER_MESSAGE = 4  # a rewriting gateway may repeat a few; a whole run is a forgery
RECORDED = "250 2.0.0 Recorded"
CANNOT_RECORD = "451 4.3.0 Cannot record the message now, try again later"


class SinkHandler:
    """aiosmtpd handler: RCPT checks the domain, DATA records tokens durably before 250.

    A message that comes back to a notification's envelope sender, or that is shaped as a
    delivery report, is a bounce: read for what it says about the notifications it names and
    never counted as a delivery, whatever tokens it carries (a returned notification carries
    its own).
    """

    def __init__(
        self,
        writer: LedgerWriter,
        domain: str,
        on_delivery: DeliveryCallback | None,
        max_recipients: int = SinkLimits.max_recipients,
        on_bounce: BounceCallback | None = None,
    ):
        self.writer = writer
        self.key = writer.ledger.token_key
        self.domain = domain.lower().rstrip(".")
        self.on_delivery = on_delivery
        self.on_bounce = on_bounce
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
        rcpts = list(envelope.rcpt_tos)
        if any(is_bounce_address(r) for r in rcpts) or looks_like_bounce(
            message.mail_from, content
        ):
            return await self._returned(rcpts, content, message)
        found = await _parsed(partial(locate_tokens, rcpts), content)
        tokens, not_counted = self.authentic(found)
        writes: list[asyncio.Future[bool] | asyncio.Future[None]] = [
            self.writer.record_delivery(ref, where, message) for ref, where in tokens
        ]
        if not_counted:
            writes.append(self.writer.record_foreign(not_counted, message))
        elif not tokens:
            writes.append(self.writer.record_foreign("no token", message))
        results = await self._committed(writes)
        if results is None:
            return CANNOT_RECORD
        self.received += 1
        for (ref, _), known in zip(tokens, results, strict=False):
            if known is True and self.on_delivery is not None:
                self.on_delivery(ref, message.received_at)
        return RECORDED

    async def _returned(self, rcpts: list[str], content: bytes, message: ReceivedMessage) -> str:
        """A bounce: what it says of each notification it names, kept with the message."""
        report = await _parsed(read_bounce, content)
        named = self.named_by_bounce(rcpts, report)
        reason = "bounce naming no known notification"
        is_report = bool(report.recipients) or looks_like_bounce(message.mail_from, content)
        if not is_report and message.mail_from not in ("", "<>"):
            # An answer to the probe's sender that reports nothing (an auto-reply): kept, but
            # no evidence of what became of the notification.
            named, reason = [], "bounce address: not a delivery report"
        bounces = tuple(
            _bounce(ref, by, report, message.received_at, self.key.token(ref.run_id, ref.seq))
            for ref, by in named
        )
        run_id = named[0][0].run_id if named else bounce_address_run(rcpts)
        returned = Returned(message, content, report.format, run_id, bounces, reason)
        results = await self._committed([self.writer.record_returned(returned)])
        if results is None:
            return CANNOT_RECORD
        self.received += 1
        known = results[0] if isinstance(results[0], list) else []
        for bounce, is_known in zip(bounces, known, strict=False):
            if is_known and self.on_bounce is not None:
                self.on_bounce(
                    TokenRef(bounce.run_id, bounce.seq), bounce.received_at, bounce.action
                )
        return RECORDED

    def named_by_bounce(
        self, rcpts: list[str], report: BounceReport
    ) -> list[tuple[TokenRef, BouncedBy]]:
        """The notifications a bounce is about, MAC checked: named by the bounce address it
        came back to (VERP), else only by the tokens in what it returned."""
        verp = [f.ref for f in bounce_address_tokens(rcpts) if self.key.verify(f)]
        if verp:
            return [(ref, "verp") for ref in verp[:MAX_TOKENS_PER_MESSAGE]]
        returned = [f.ref for f in report.returned_tokens if self.key.verify(f)]
        return [(ref, "token") for ref in dict.fromkeys(returned)][:MAX_TOKENS_PER_MESSAGE]

    async def _committed(self, writes: list[asyncio.Future[Any]]) -> list[Any] | None:
        """The writes' results once durable; None (logged) when the ledger refused them."""
        try:
            return list(await asyncio.gather(*writes))
        except ProbeError as exc:
            log.error("ledger_write_failed", error=str(exc))
            return None

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
        on_bounce: BounceCallback | None = None,
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
        self.handler = SinkHandler(
            self.writer, domain, on_delivery, self.limits.max_recipients, on_bounce
        )
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
            busy = ""
            if exc.errno == errno.EADDRINUSE:
                busy = (
                    " (another sink or check holds it: run one long-lived `notifyprobe sink "
                    f"--listen {self.host}:{self.port} --db LEDGER` and check with `burst "
                    "--no-sink --db LEDGER`)"
                )
            raise ProbeError(
                f"sink cannot listen on {self.host}:{self.port}: {exc.strerror}{busy}"
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


async def _parsed(parse: Callable[[bytes], T], content: bytes) -> T:
    """`parse(content)`, off the event loop for a large message: other sessions keep being
    served while it is read."""
    if len(content) > PARSE_IN_THREAD_BYTES:
        return await asyncio.to_thread(parse, content)
    return parse(content)


def _peer(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "")


def _bounce(
    ref: TokenRef, named_by: BouncedBy, report: BounceReport, received_at: float, token: str
) -> Bounce:
    """What `report` says of the notification `ref` (whose full token is `token`): the block
    that quotes its recipient, else the only block, else the first failure. A report with no
    block that could be read is a failure with no status: it came back, it did not arrive."""
    mine = [r for r in report.recipients if token in r.recipient.lower()]
    block: RecipientReport | None = (
        mine[0]
        if mine
        else report.recipients[0]
        if len(report.recipients) == 1
        else next((r for r in report.recipients if r.action == "failed"), None)
    )
    confirmed = bool(mine) or any(f.ref == ref for f in report.returned_tokens)
    if block is None:
        return Bounce(
            ref.run_id,
            ref.seq,
            received_at,
            "failed",
            diagnostic="the report gave no delivery status that could be read",
            reporting_mta=report.reporting_mta,
            named_by=named_by,
            confirmed=confirmed,
            format=report.format,
        )
    return Bounce(
        ref.run_id,
        ref.seq,
        received_at,
        block.action,
        status=block.status,
        diagnostic=printable(block.diagnostic),
        remote_mta=printable(block.remote_mta),
        reporting_mta=printable(report.reporting_mta),
        recipient=printable(block.recipient),
        named_by=named_by,
        confirmed=confirmed,
        format=report.format,
    )
