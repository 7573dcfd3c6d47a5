"""The burst: hand N notifications to the gateway with aiosmtplib and record every reply.

Each notification carries its token in the envelope recipient, the Subject, an X-Probe-Token
header and the body. Every SMTP step is timed and kept as a transcript line; any failure
(refused, reset, timeout, TLS, a 4xx/5xx reply) becomes part of the notification's record,
never an exception out of the burst.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from email.utils import formatdate

import aiosmtplib
from aiosmtplib import SMTP

from probe.correlation import TokenKey, recipient_for, sender_for, split_address
from probe.delivery.breaker import CircuitBreaker
from probe.delivery.settings import BurstSettings
from probe.delivery.tls import ClientSecurity
from probe.errors import ProbeError
from probe.masking import REDACTED, hide_secret
from probe.records import (
    Endpoint,
    ErrorKind,
    SmtpPhase,
    SmtpReply,
    Stage,
    Step,
    Submission,
    printable,
    wire_bytes,
)

ResultCallback = Callable[[int, Submission], None]
SkipCallback = Callable[[int, str], None]  # seq, why it was not attempted
_BASE64ISH = re.compile(r"[A-Za-z0-9+/]{12,}={0,2}")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")
INTERRUPTED = "the probe stopped during this step (watch stop): the gateway was not at fault"
# The most one reply may hold. No real reply comes near (an EHLO reply is a dozen lines); a
# gateway that streams continuation lines or one endless line must cost one step, not memory.
# aiosmtplib bounds what it buffers for one reply itself (32 KiB in 5.x, a line 8 KiB) and
# says "Response too long" with code -1; the line count is ours.
MAX_REPLY_LINES = 100
MAX_REPLY_BYTES = 64 * 1024


class ReplyError(aiosmtplib.SMTPException):
    """A reply that is not SMTP the probe can read: over the cap, malformed, or a code where
    another was due. A protocol error, never a refusal: it says nothing of delivery."""


def bounded(response: aiosmtplib.SMTPResponse) -> aiosmtplib.SMTPResponse:
    """`response`, or ReplyError when it runs past MAX_REPLY_LINES or MAX_REPLY_BYTES."""
    lines = response.message.count("\n") + 1
    size = len(wire_bytes(response.message))
    if lines > MAX_REPLY_LINES or size > MAX_REPLY_BYTES:
        raise ReplyError(
            f"reply over the cap ({lines} lines, {size} bytes; at most {MAX_REPLY_LINES} lines, "
            f"{MAX_REPLY_BYTES // 1024} KiB): {printable(response.message[:80])}…"
        )
    return response


def _not_smtp(exc: aiosmtplib.SMTPResponseException) -> ReplyError | None:
    """The library's own "response" that is not one (code -1: too long, malformed), or a
    reply code that is neither a refusal nor what the step expects."""
    if 400 <= exc.code < 600:
        try:
            bounded(aiosmtplib.SMTPResponse(exc.code, exc.message))
        except ReplyError as error:
            return error
        return None
    if exc.code < 0:
        return ReplyError(f"{printable(exc.message[:200])} (not an SMTP reply)")
    return ReplyError(f"unexpected reply {exc.code} {printable(exc.message[:200])}")


@dataclass(frozen=True)
class Deadline:
    """When a run's time is up (monotonic clock): no SMTP step waits past it, and the
    notifications not started by then are recorded as not attempted, with `reason`."""

    at: float
    reason: str

    def left_s(self) -> float:
        return self.at - time.monotonic()


def ensure_probe_recipient(rcpt: str, domain: str) -> None:
    """The last guard before a recipient is handed to the gateway: probe domain or nothing."""
    local, rcpt_domain = split_address(rcpt)
    if not local or rcpt_domain != domain.lower().rstrip("."):
        raise ProbeError(f"refusing to send to {rcpt!r}: not in the probe domain {domain}")


def compose(token: str, run_id: str, seq: int, count: int, domain: str, date: str) -> bytes:
    """The notification: the token in Subject, header and body, plain ASCII and short lines."""
    return (
        f"From: notifyprobe <{sender_for(token, domain)}>\r\n"
        f"To: <{recipient_for(token, domain)}>\r\n"
        f"Subject: notifyprobe test notification {token} ({seq}/{count})\r\n"
        f"Date: {date}\r\n"
        f"Message-ID: <{token}@{domain}>\r\n"
        f"X-Probe-Token: {token}\r\n"
        f"X-Probe-Run: {run_id}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        "This is a test notification sent by notifyprobe to check that every\r\n"
        "notification is delivered. It is safe to discard.\r\n"
        f"Correlation token: {token}\r\n"
    ).encode("ascii")


class Sender:
    """Submits messages to one SMTP server, at most `per_session` per SMTP session (None: no
    limit), and numbers each submission's session (from `session_ids`) and place in it."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        timeout: float,
        per_session: int | None,
        helo: str | None,
        security: ClientSecurity | None = None,
        session_ids: Iterator[int] | None = None,
        deadline: Deadline | None = None,
    ):
        self.endpoint = endpoint
        self.timeout = timeout
        self.deadline = deadline
        self._shortened_to: float | None = None  # the last step's timeout, when the deadline cut it
        self.cut: Submission | None = None  # the attempt in flight when the task was cancelled
        self.per_session = per_session
        self.helo = helo
        self.security = security or ClientSecurity()
        self._tls_context = self.security.context()
        self._smtp: SMTP | None = None
        self._session_ids = session_ids if session_ids is not None else itertools.count(1)
        self._session = 0
        self._position = 0

    async def submit(self, mail_from: str, rcpt: str, message: bytes) -> Submission:
        if self._smtp is None or not self._smtp.is_connected:
            self._session, self._position = next(self._session_ids), 0
        self._position += 1
        session, position = self._session, self._position
        result = await self._submit(mail_from, rcpt, message)
        if self.per_session is not None and position >= self.per_session:
            await self.close()
        return replace(result, session=session, position=position)

    async def _submit(self, mail_from: str, rcpt: str, message: bytes) -> Submission:
        steps: list[Step] = []
        started = time.time()
        stage: Stage = "connect"

        def reply_step(command: str, response: aiosmtplib.SMTPResponse) -> SmtpReply:
            bounded(response)
            reply = SmtpReply.parse(response.code, self._scrub(response.message, stage))
            steps.append(Step(at=time.time(), command=command, reply=reply))
            return reply

        async def failed(
            stage: Stage, phase: SmtpPhase, exc: BaseException, error: str
        ) -> Submission:
            """No SMTP reply to judge: the error, and the phase when the gateway went silent."""
            kind = _error_kind(exc, stage)
            if kind is ErrorKind.TIMEOUT and self._shortened_to is not None:
                error += f" (in the {self._shortened_to:.1f} s left of the run's time budget)"
            steps.append(Step(at=time.time(), command=_command(phase), error=error))
            await self._drop()
            stalled_at = phase if kind is ErrorKind.TIMEOUT else None
            return Submission(
                started,
                time.time(),
                stage,
                error=error,
                error_kind=kind,
                steps=tuple(steps),
                stalled_at=stalled_at,
            )

        phase = SmtpPhase.CONNECT
        try:
            smtp = self._smtp
            if smtp is None or not smtp.is_connected:
                smtp = await self._open(reply_step, steps)
            phase = SmtpPhase.MAIL
            stage = phase.stage
            reply_step(f"MAIL FROM:<{mail_from}>", await self._armed(smtp).mail(mail_from))
            phase = SmtpPhase.RCPT
            stage = phase.stage
            reply_step(f"RCPT TO:<{rcpt}>", await self._armed(smtp).rcpt(rcpt))
            phase = SmtpPhase.DATA
            stage = phase.stage
            reply_step("DATA", _expect(await self._armed(smtp).execute_command(b"DATA"), 354))
            phase = SmtpPhase.END_OF_DATA
            reply = reply_step(
                f"message ({len(message)} bytes) and .",
                await self._end_of_data(self._armed(smtp), message),
            )
        except asyncio.CancelledError:
            # Stopped from outside (watch stop): keep the attempt, drop the session at once
            # (a QUIT to a hung gateway would wait a whole step timeout), and stop.
            steps.append(Step(at=time.time(), command=_command(phase), error=INTERRUPTED))
            self.abort()
            self.cut = Submission(
                started,
                time.time(),
                stage,
                error=INTERRUPTED,
                error_kind=ErrorKind.INTERRUPTED,
                steps=tuple(steps),
                session=self._session,
                position=self._position,
            )
            raise
        except _Opening as opening:
            stage, exc = opening.stage, opening.error
            if isinstance(exc, aiosmtplib.SMTPResponseException):
                exc = _not_smtp(exc) or exc
            if isinstance(exc, aiosmtplib.SMTPResponseException):
                reply = SmtpReply.parse(exc.code, self._scrub(exc.message, stage))
                steps.append(Step(at=time.time(), command=_command(opening.phase), reply=reply))
                await self._drop()
                return Submission(started, time.time(), stage, reply=reply, steps=tuple(steps))
            return await failed(stage, opening.phase, exc, self._scrub(_error_text(exc), stage))
        except aiosmtplib.SMTPResponseException as exc:
            not_smtp = _not_smtp(exc)
            if not_smtp is not None:
                return await failed(
                    stage, phase, not_smtp, self._scrub(_error_text(not_smtp), stage)
                )
            reply = SmtpReply.parse(exc.code, self._scrub(exc.message, stage))
            steps.append(Step(at=time.time(), command=stage.upper(), reply=reply))
            await self._recover(reply.code)
            return Submission(started, time.time(), stage, reply=reply, steps=tuple(steps))
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            return await failed(stage, phase, exc, self._scrub(_error_text(exc), stage))
        return Submission(started, time.time(), stage, reply=reply, steps=tuple(steps))

    async def _end_of_data(self, smtp: SMTP, message: bytes) -> aiosmtplib.SMTPResponse:
        """The message and its final dot, then the gateway's verdict on it.

        aiosmtplib's `data()` sends DATA and the message in one call, so a stall before the 354
        and a stall after the message look the same; sending the message here names the phase.
        """
        if smtp.protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        body = _LEADING_DOT.sub(b"..", _LINE_END.sub(b"\r\n", message))
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        smtp.protocol.write(body + b".\r\n")
        return _expect(bounded(await smtp.protocol.read_response(timeout=smtp.timeout)), 250)

    def _armed(self, smtp: SMTP) -> SMTP:
        """`smtp` with the timeout of its next step: the step timeout, or less when the run's
        deadline comes sooner (the gateway then had only what was left to answer)."""
        timeout = self.timeout
        self._shortened_to = None
        if self.deadline is not None and self.deadline.left_s() < timeout:
            timeout = self._shortened_to = max(0.01, self.deadline.left_s())
        smtp.timeout = timeout
        return smtp

    async def _open(
        self,
        reply_step: Callable[[str, aiosmtplib.SMTPResponse], SmtpReply],
        steps: list[Step],
    ) -> SMTP:
        """Connect, greet, secure and authenticate: one new session ready for MAIL.

        Any failure comes out as `_Opening` naming the step (connect, ehlo, starttls, auth).
        """
        security = self.security
        implicit = security.tls == "implicit"
        smtp = SMTP(
            hostname=self.endpoint.host,
            port=self.endpoint.port,
            timeout=self.timeout,
            use_tls=implicit,
            start_tls=False,
            tls_context=self._tls_context if implicit else None,
            local_hostname=self.helo,
        )
        self._smtp = smtp
        stage: Stage = "connect"
        try:
            connected = await self._armed(smtp).connect()
            reply_step("connect (implicit TLS)" if implicit else "connect", connected)
            stage = "ehlo"
            reply_step("EHLO", await self._armed(smtp).ehlo())
            if security.tls == "starttls":
                stage = "starttls"
                tls = self._tls_context
                reply_step("STARTTLS", await self._armed(smtp).starttls(tls_context=tls))
                stage = "ehlo"
                reply_step("EHLO", await self._armed(smtp).ehlo())
            if security.user is not None and security.password is not None:
                stage = "auth"
                password = security.password.reveal()
                response = await _login(self._armed(smtp), security.user, password)
                reply = SmtpReply.parse(response.code, self._scrub(response.message, stage))
                steps.append(Step(at=time.time(), command=_command(SmtpPhase.AUTH), reply=reply))
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            raise _Opening(stage, _opening_phase(stage, exc), exc) from exc
        return smtp

    def _scrub(self, text: str, stage: str) -> str:
        """What a server says may echo the credentials: during AUTH keep nothing that looks
        encoded; at any other step remove the password in every form it could be echoed in."""
        password = self.security.password.reveal() if self.security.password else ""
        if stage == "auth" and ((password and password in text) or _BASE64ISH.search(text)):
            return REDACTED
        return hide_secret(text, password)[0]

    async def _recover(self, code: int) -> None:
        """After a refusal, reset the transaction so the connection can carry the next one."""
        smtp = self._smtp
        if smtp is None or self.per_session == 1 or code == 421 or not smtp.is_connected:
            await self._drop()
            return
        try:
            await smtp.rset()
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            await self._drop()

    async def _drop(self) -> None:
        self.abort()

    def abort(self) -> None:
        """Close the session without QUIT: nothing is waited for."""
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    async def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None and smtp.is_connected:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
                smtp.close()


async def send_burst(
    settings: BurstSettings,
    *,
    run_id: str,
    gateway: Endpoint,
    domain: str,
    key: TokenKey,
    on_result: ResultCallback,
    on_skipped: SkipCallback | None = None,
    security: ClientSecurity | None = None,
    paced: bool = True,
    deadline: Deadline | None = None,
) -> None:
    """Send notifications 1..count over `concurrency` connections at a time, `per_session` per
    SMTP session, spaced by the gap between notifications and never faster than the rate cap
    in all; once the circuit breaker opens, the notifications not yet started go to
    `on_skipped` with the reason instead, as do those not started by the `deadline`.
    Cancelled (watch stop), it reports the attempts in flight as interrupted and waits for
    nothing. `paced=False` only for the benchmark: it measures the engine's own speed, apart
    from that policy."""
    date = formatdate(localtime=True)
    next_seq = iter(range(1, settings.count + 1))
    spacing = settings.spacing_s if paced else 0.0
    session_ids = itertools.count(1)  # shared: sessions are numbered across connections
    breaker = CircuitBreaker(settings.breaker)
    t0 = time.monotonic()

    async def worker() -> None:
        sender = Sender(
            gateway,
            timeout=settings.step_timeout_s,
            per_session=settings.per_session,
            helo=settings.helo,
            security=security,
            session_ids=session_ids,
            deadline=deadline,
        )
        seq = 0
        try:
            for seq in next_seq:
                if spacing > 0 and not breaker.open:
                    delay = t0 + (seq - 1) * spacing - time.monotonic()
                    if deadline is not None:
                        delay = min(delay, deadline.left_s())
                    if delay > 0:
                        await asyncio.sleep(delay)
                skip = breaker.reason
                if skip is None and deadline is not None and deadline.left_s() <= 0:
                    skip = deadline.reason
                if skip is not None:
                    if on_skipped is not None:
                        on_skipped(seq, skip)
                    continue
                token = key.token(run_id, seq)
                rcpt = recipient_for(token, domain)
                ensure_probe_recipient(rcpt, domain)
                message = compose(token, run_id, seq, settings.count, domain, date)
                breaker.started(seq)
                result = await sender.submit(sender_for(token, domain), rcpt, message)
                breaker.record(seq, result)
                on_result(seq, result)
                await breaker.hold(result)
        except asyncio.CancelledError:
            if sender.cut is not None:
                on_result(seq, sender.cut)
            sender.abort()
            raise
        finally:
            await sender.close()

    workers = max(1, min(settings.concurrency, settings.count))
    await asyncio.gather(*(worker() for _ in range(workers)))


async def send_control(
    sink: Endpoint, key: TokenKey, run_id: str, domain: str, timeout: float, count: int
) -> Submission:
    """Sequence 0 straight to the sink: proves in this very run that the sink records mail."""
    sender = Sender(sink, timeout=timeout, per_session=1, helo=None)
    token = key.token(run_id, 0)
    rcpt = recipient_for(token, domain)
    ensure_probe_recipient(rcpt, domain)
    message = compose(token, run_id, 0, count, domain, formatdate(localtime=True))
    return await sender.submit(sender_for(token, domain), rcpt, message)


async def _login(smtp: SMTP, user: str, password: str) -> aiosmtplib.SMTPResponse:
    """One AUTH attempt, PLAIN if offered, else LOGIN: a refused password is a 535 to report,
    not a cue to try every mechanism the server lists."""
    methods = smtp.server_auth_methods
    if "plain" in methods:
        return await smtp.auth_plain(user, password)
    if "login" in methods:
        return await smtp.auth_login(user, password)
    offered = " ".join(methods).upper() or "none"
    raise aiosmtplib.SMTPException(f"gateway offers no AUTH PLAIN or LOGIN (offers: {offered})")


class _Opening(Exception):
    """A failure while opening a session, with the step and the phase it happened in."""

    def __init__(self, stage: Stage, phase: SmtpPhase, error: BaseException):
        super().__init__(stage)
        self.stage = stage
        self.phase = phase
        self.error = error


def _opening_phase(stage: str, exc: BaseException) -> SmtpPhase:
    """aiosmtplib's connect() covers the TCP handshake and the banner; a wait for the banner
    that timed out is the one whose cause is a read timeout, and one the gateway hung up on
    the one whose cause is a disconnection (the TCP connection was made)."""
    if stage == "connect":
        waited_for_banner = isinstance(
            exc.__cause__, (aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPServerDisconnected)
        )
        return SmtpPhase.GREETING if waited_for_banner else SmtpPhase.CONNECT
    return SmtpPhase(stage)


def _expect(response: aiosmtplib.SMTPResponse, code: int) -> aiosmtplib.SMTPResponse:
    """`response` when it has `code`; a 4xx/5xx is a refusal; any other code is a protocol
    error (a 250 to DATA is no invitation to send the message, and accepts nothing)."""
    if response.code == code or (code == 250 and 200 <= response.code < 300):
        return response
    raise aiosmtplib.SMTPDataError(response.code, response.message)


def _command(phase: SmtpPhase) -> str:
    """The transcript's client line for a step that ended without a reply."""
    return phase.command


def _error_kind(exc: BaseException, stage: Stage) -> ErrorKind:
    if isinstance(exc, ReplyError):
        return ErrorKind.PROTOCOL
    if stage == "starttls" or _caused_by(exc, ssl.SSLError):
        return ErrorKind.TLS
    if isinstance(exc, (aiosmtplib.SMTPTimeoutError, asyncio.TimeoutError, TimeoutError)):
        return ErrorKind.TIMEOUT
    if _caused_by(exc, aiosmtplib.SMTPServerDisconnected) or _caused_by(exc, ConnectionResetError):
        # A connection was made, then closed or reset: a hang-up, even at connect (a port
        # where nothing listens answers the handshake with ECONNREFUSED, never a reset).
        return ErrorKind.RESET
    if _caused_by(exc, socket.gaierror):
        return ErrorKind.DNS
    if isinstance(exc, (aiosmtplib.SMTPConnectError, ConnectionRefusedError)) or stage == "connect":
        return ErrorKind.CONNECTION_REFUSED
    if isinstance(exc, OSError):
        return ErrorKind.RESET
    return ErrorKind.PROTOCOL


def _caused_by(exc: BaseException | None, kind: type[BaseException]) -> bool:
    for _ in range(5):  # aiosmtplib wraps the OS error in its own; a short bounded walk
        if exc is None:
            return False
        if isinstance(exc, kind):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return printable(" ".join(text.split())[:300])  # it may quote the gateway
