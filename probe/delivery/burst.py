"""The burst: hand N notifications to the gateway with aiosmtplib and record every reply.

Each notification carries its token in the envelope recipient, the Subject, an X-Probe-Token
header and the body. Every SMTP step is timed and kept as a transcript line; any failure
(refused, reset, timeout, TLS, a 4xx/5xx reply) becomes part of the notification's record,
never an exception out of the burst.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate

import aiosmtplib
from aiosmtplib import SMTP

from probe.correlation import make_token, recipient_for, sender_for, split_address
from probe.delivery.credentials import REDACTED
from probe.delivery.tls import ClientSecurity
from probe.errors import ProbeError
from probe.records import Endpoint, ErrorKind, SmtpReply, Stage, Step, Submission

ResultCallback = Callable[[int, Submission], None]
DEFAULT_MAX_RATE = 200.0  # notifications per second, all connections together
MAX_RATE_CAP = 1_000.0  # msgs/s: above this a probe is a load test, not a probe
MAX_COUNT = 10_000  # notifications in one burst, whoever asks (burst, watch, postflight)
_BASE64ISH = re.compile(r"[A-Za-z0-9+/]{12,}={0,2}")


@dataclass(frozen=True)
class BurstPlan:
    """What to send and how: the knobs of `notifyprobe burst`."""

    run_id: str
    gateway: Endpoint
    domain: str
    count: int = 10
    concurrency: int = 1
    reuse: bool = True
    interval_s: float = 0.0
    step_timeout_s: float = 10.0
    helo: str | None = None
    security: ClientSecurity | None = None
    max_rate: float = DEFAULT_MAX_RATE  # cap: a probe must never turn into a mail bomb

    @property
    def spacing_s(self) -> float:
        """Seconds between the starts of two notifications: the interval, or the rate cap."""
        return max(self.interval_s, 1.0 / self.max_rate if self.max_rate > 0 else 0.0)


def ensure_probe_recipient(rcpt: str, domain: str) -> None:
    """The last guard before a recipient is handed to the gateway: probe domain or nothing."""
    local, rcpt_domain = split_address(rcpt)
    if not local or rcpt_domain != domain.lower().rstrip("."):
        raise ProbeError(f"refusing to send to {rcpt!r}: not in the probe domain {domain}")


def compose(run_id: str, seq: int, count: int, domain: str, date: str) -> bytes:
    """The notification: the token in Subject, header and body, plain ASCII and short lines."""
    token = make_token(run_id, seq)
    return (
        f"From: notifyprobe <{sender_for(run_id, domain)}>\r\n"
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
    """Submits messages to one SMTP server, reusing one connection or opening one per message."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        timeout: float,
        reuse: bool,
        helo: str | None,
        security: ClientSecurity | None = None,
    ):
        self.endpoint = endpoint
        self.timeout = timeout
        self.reuse = reuse
        self.helo = helo
        self.security = security or ClientSecurity()
        self._tls_context = self.security.context()
        self._smtp: SMTP | None = None

    async def submit(self, mail_from: str, rcpt: str, message: bytes) -> Submission:
        steps: list[Step] = []
        started = time.time()
        stage: Stage = "connect"

        def reply_step(command: str, response: aiosmtplib.SMTPResponse) -> SmtpReply:
            reply = SmtpReply.parse(response.code, response.message)
            steps.append(Step(at=time.time(), command=command, reply=reply))
            return reply

        try:
            smtp = self._smtp
            if smtp is None or not smtp.is_connected:
                smtp = await self._open(reply_step, steps)
            stage = "mail"
            reply_step(f"MAIL FROM:<{mail_from}>", await smtp.mail(mail_from))
            stage = "rcpt"
            reply_step(f"RCPT TO:<{rcpt}>", await smtp.rcpt(rcpt))
            stage = "data"
            reply = reply_step(f"DATA ({len(message)} bytes)", await smtp.data(message))
        except _Opening as opening:
            stage, exc = opening.stage, opening.error
            if isinstance(exc, aiosmtplib.SMTPResponseException):
                reply = SmtpReply.parse(exc.code, self._scrub(exc.message, stage))
                steps.append(Step(at=time.time(), command=_command(stage), reply=reply))
                await self._drop()
                return Submission(started, time.time(), stage, reply=reply, steps=tuple(steps))
            error = self._scrub(_error_text(exc), stage)
            steps.append(Step(at=time.time(), command=_command(stage), error=error))
            await self._drop()
            return Submission(
                started,
                time.time(),
                stage,
                error=error,
                error_kind=_error_kind(exc, stage),
                steps=tuple(steps),
            )
        except aiosmtplib.SMTPResponseException as exc:
            reply = SmtpReply.parse(exc.code, exc.message)
            steps.append(Step(at=time.time(), command=stage.upper(), reply=reply))
            await self._recover(reply.code)
            return Submission(started, time.time(), stage, reply=reply, steps=tuple(steps))
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            kind = _error_kind(exc, stage)
            error = _error_text(exc)
            steps.append(Step(at=time.time(), command=stage.upper(), error=error))
            await self._drop()
            return Submission(
                started, time.time(), stage, error=error, error_kind=kind, steps=tuple(steps)
            )
        if not self.reuse:
            await self.close()
        return Submission(started, time.time(), stage, reply=reply, steps=tuple(steps))

    async def _open(
        self, reply_step: Callable[[str, aiosmtplib.SMTPResponse], SmtpReply], steps: list[Step]
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
            reply_step("connect (implicit TLS)" if implicit else "connect", await smtp.connect())
            stage = "ehlo"
            reply_step("EHLO", await smtp.ehlo())
            if security.tls == "starttls":
                stage = "starttls"
                reply_step("STARTTLS", await smtp.starttls(tls_context=self._tls_context))
                stage = "ehlo"
                reply_step("EHLO", await smtp.ehlo())
            if security.user is not None and security.password is not None:
                stage = "auth"
                response = await _login(smtp, security.user, security.password.reveal())
                reply = SmtpReply.parse(response.code, self._scrub(response.message, stage))
                steps.append(Step(at=time.time(), command=_command(stage), reply=reply))
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            raise _Opening(stage, exc) from exc
        return smtp

    def _scrub(self, text: str, stage: Stage) -> str:
        """What a server says during AUTH may echo the credentials: keep none of it."""
        if stage != "auth":
            return text
        password = self.security.password.reveal() if self.security.password else ""
        if (password and password in text) or _BASE64ISH.search(text):
            return REDACTED
        return text

    async def _recover(self, code: int) -> None:
        """After a refusal, reset the transaction so the connection can carry the next one."""
        smtp = self._smtp
        if smtp is None or not self.reuse or code == 421 or not smtp.is_connected:
            await self._drop()
            return
        try:
            await smtp.rset()
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            await self._drop()

    async def _drop(self) -> None:
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


async def send_burst(plan: BurstPlan, on_result: ResultCallback) -> None:
    """Send notifications 1..count over `concurrency` connections, paced by `interval_s` and
    never faster than `max_rate` in all."""
    date = formatdate(localtime=True)
    mail_from = sender_for(plan.run_id, plan.domain)
    next_seq = iter(range(1, plan.count + 1))
    spacing = plan.spacing_s
    t0 = time.monotonic()

    async def worker() -> None:
        sender = Sender(
            plan.gateway,
            timeout=plan.step_timeout_s,
            reuse=plan.reuse,
            helo=plan.helo,
            security=plan.security,
        )
        try:
            for seq in next_seq:
                if spacing > 0:
                    delay = t0 + (seq - 1) * spacing - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                token = make_token(plan.run_id, seq)
                rcpt = recipient_for(token, plan.domain)
                ensure_probe_recipient(rcpt, plan.domain)
                message = compose(plan.run_id, seq, plan.count, plan.domain, date)
                result = await sender.submit(mail_from, rcpt, message)
                on_result(seq, result)
        finally:
            await sender.close()

    workers = max(1, min(plan.concurrency, plan.count))
    await asyncio.gather(*(worker() for _ in range(workers)))


async def send_control(
    sink: Endpoint, run_id: str, domain: str, timeout: float, count: int
) -> Submission:
    """Sequence 0 straight to the sink: proves in this very run that the sink records mail."""
    sender = Sender(sink, timeout=timeout, reuse=False, helo=None)
    token = make_token(run_id, 0)
    rcpt = recipient_for(token, domain)
    ensure_probe_recipient(rcpt, domain)
    message = compose(run_id, 0, count, domain, formatdate(localtime=True))
    return await sender.submit(sender_for(run_id, domain), rcpt, message)


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
    """A failure while opening a session, with the step it happened in."""

    def __init__(self, stage: Stage, error: BaseException):
        super().__init__(stage)
        self.stage = stage
        self.error = error


def _command(stage: Stage) -> str:
    return "AUTH [redacted]" if stage == "auth" else stage.upper()


def _error_kind(exc: BaseException, stage: Stage) -> ErrorKind:
    if stage == "starttls" or _caused_by_tls(exc):
        return ErrorKind.TLS
    if isinstance(exc, (aiosmtplib.SMTPTimeoutError, asyncio.TimeoutError, TimeoutError)):
        return ErrorKind.TIMEOUT
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return ErrorKind.RESET
    if isinstance(exc, (aiosmtplib.SMTPConnectError, ConnectionRefusedError)) or stage == "connect":
        return ErrorKind.REFUSED
    if isinstance(exc, OSError):
        return ErrorKind.RESET
    return ErrorKind.PROTOCOL


def _caused_by_tls(exc: BaseException | None) -> bool:
    for _ in range(5):  # aiosmtplib wraps the ssl error in its own; a short bounded walk
        if exc is None:
            return False
        if isinstance(exc, ssl.SSLError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())[:300]
