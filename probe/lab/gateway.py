"""The lab gateway: an SMTP relay with deterministic faults, to rehearse every verdict locally.

It stores and forwards like a real notification gateway (answers 250, then relays in the
background) and can misbehave on purpose: relay only the first message after start (the
MPNotifyPerf.dll symptom), drop after k, lose a seeded random share, delay, deliver in batches
like a queue runner, duplicate, refuse everything, fall silent at a chosen SMTP phase, not listen
at all, or hold every message after the K-th of an SMTP session for a queue runner, as Exim does
after `smtp_accept_queue_per_connection`. `--rewrite` rebuilds each message from a template the
way gateways do, so the token has to survive on its own.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import random
import weakref
from dataclasses import dataclass
from email.header import Header
from email.parser import BytesParser
from email.policy import default as default_policy
from email.utils import formatdate, make_msgid
from typing import Literal, TypeVar, get_args

import structlog
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from probe.delivery import Secret, Sender
from probe.domain import LAB_HOSTNAME, LAB_IDENT
from probe.errors import ProbeError, UsageError
from probe.records import Endpoint, SmtpPhase

log = structlog.get_logger("notifyprobe.lab")

_Queued = tuple[str, tuple[str, ...], bytes]  # envelope sender, recipients, message
STOP_TIMEOUT_S = 5.0

ModeName = Literal[
    "healthy",
    "first-only",
    "drop-after-k",
    "intermittent",
    "slow",
    "batch",
    "duplicate",
    "reject",
    "stall",
    "hang-up",
    "down",
    "queue-per-session",
]
MODES: tuple[ModeName, ...] = get_args(ModeName)
# How first-only refuses: drop (accept and lose), a 4xx or 5xx reply, or bounce (accept, then
# return an RFC 3464 report of a next hop's 550 5.7.1 to the envelope sender).
Refusal = Literal["drop", "4xx", "5xx", "bounce"]
REFUSALS: tuple[Refusal, ...] = get_args(Refusal)
_Choice = TypeVar("_Choice", bound=str)
DEFAULT_QUEUE_RUN_S = 20.0  # `queue-per-session:K` without W: a queue runner every 20 s
# The phases where `stall:PHASE` falls silent and `hang-up:PHASE` closes the connection.
STALL_PHASES = (
    SmtpPhase.GREETING,
    SmtpPhase.EHLO,
    SmtpPhase.MAIL,
    SmtpPhase.RCPT,
    SmtpPhase.DATA,
    SmtpPhase.END_OF_DATA,
)


@dataclass(frozen=True)
class FaultMode:
    """A parsed `--mode`: `first-only[:drop|4xx|5xx|bounce]`, `drop-after-k:K`, `intermittent:P`,
    `slow:SECONDS`, `batch:SECONDS`, `queue-per-session:K[:W]`, `stall:PHASE`, `hang-up:PHASE`,
    or one of `healthy`, `duplicate`, `reject`, `down`.

    `batch:W` is a queue runner that wakes at most every W s: the first notification goes out
    at once, the ones accepted meanwhile wait for the next run, W s later.
    `queue-per-session:K[:W]` holds messages after the K-th of a session; a queue runner
    delivers them every W s. `stall:PHASE` falls silent from that SMTP phase on; `hang-up:PHASE`
    closes the connection there instead (a worker that crashes, a proxy with nothing behind it)."""

    name: ModeName
    k: int = 0
    probability: float = 0.0
    delay_s: float = 0.0  # slow: each message; batch: between two queue runs
    refusal: str = "drop"  # first-only: drop (accept and lose), 4xx or 5xx
    stall_at: SmtpPhase | None = None  # stall: where it stops answering; hang-up: where it hangs up

    def stalls(self, phase: SmtpPhase) -> bool:
        return self.name == "stall" and self.stall_at is phase

    def hangs_up(self, phase: SmtpPhase) -> bool:
        return self.name == "hang-up" and self.stall_at is phase

    @classmethod
    def parse(cls, text: str) -> FaultMode:
        given, _, arg = text.strip().partition(":")
        name = _member(given, MODES)
        try:
            if name in ("healthy", "duplicate", "reject", "down") and not arg:
                return cls(name)
            if name == "first-only":
                refusal = _member(arg or "drop", REFUSALS)
                if refusal is None:
                    raise ValueError("first-only takes drop, 4xx, 5xx or bounce")
                return cls(name, refusal=refusal)
            if name == "drop-after-k" and int(arg) >= 0:
                return cls(name, k=int(arg))
            if name == "intermittent" and 0.0 <= float(arg) <= 1.0:
                return cls(name, probability=float(arg))
            if name == "slow" and float(arg) >= 0.0:
                return cls(name, delay_s=float(arg))
            if name == "batch" and float(arg) > 0.0:
                return cls(name, delay_s=float(arg))
            if name == "queue-per-session":
                k, _, run_every = arg.partition(":")
                every_s = float(run_every) if run_every else DEFAULT_QUEUE_RUN_S
                if int(k) >= 1 and every_s > 0:
                    return cls(name, k=int(k), delay_s=every_s)
            if name in ("stall", "hang-up"):
                wanted = arg.replace("-", "_")
                phase = next((p for p in STALL_PHASES if p.value == wanted), None)
                if phase is None:
                    raise ValueError(f"{name} takes {', '.join(p.value for p in STALL_PHASES)}")
                return cls(name, stall_at=phase)
        except ValueError as exc:
            raise UsageError(f"bad lab mode {text!r}: {exc}") from None
        raise UsageError(
            f"bad lab mode {text!r}: use healthy, first-only[:drop|4xx|5xx|bounce], "
            "drop-after-k:K, intermittent:P, slow:SECONDS, batch:SECONDS, "
            "queue-per-session:K[:W], stall:PHASE, hang-up:PHASE, duplicate, reject or down"
        )


def _member(text: str, choices: tuple[_Choice, ...]) -> _Choice | None:
    return next((choice for choice in choices if choice == text), None)


@dataclass(frozen=True)
class Action:
    """What the gateway does with its n-th message: relay it `copies` times, or refuse it."""

    copies: int = 1
    refuse: str | None = None  # the SMTP reply line when refusing
    delay_s: float = 0.0
    hold: bool = False  # keep it for the next queue run
    bounce: bool = False  # accept it, then send a delivery report back to its sender


def decide(mode: FaultMode, n: int, rng: random.Random, in_session: int = 1) -> Action:
    """The fault model, pure: `n` counts messages since the gateway started (1-based),
    `in_session` those of the current SMTP session."""
    if mode.name == "first-only" and n > 1:
        if mode.refusal == "4xx":
            return Action(refuse="451 4.3.0 Notification service failed to process the message")
        if mode.refusal == "5xx":
            return Action(refuse="554 5.3.0 Notification service failed to process the message")
        return Action(copies=0, bounce=mode.refusal == "bounce")
    if mode.name == "drop-after-k" and n > mode.k:
        return Action(copies=0)
    if mode.name == "intermittent":
        return Action(copies=0 if rng.random() < mode.probability else 1)
    if mode.name == "reject":
        return Action(refuse="550 5.7.1 Notifications are not accepted")
    if mode.name == "duplicate":
        return Action(copies=2)
    if mode.name == "slow":
        return Action(delay_s=mode.delay_s)
    if mode.name == "queue-per-session" and in_session > mode.k:
        return Action(hold=True)
    return Action()


NEXT_HOP_REFUSAL = "550 5.7.1 Recipient address rejected: notifications not accepted here"


def delivery_report(original: bytes, sender: str, rcpt: str, n: int) -> bytes:
    """The RFC 3464 report a gateway returns when its next hop refused a message: a
    human-readable part, the delivery status, and the returned headers."""
    headers, _, _ = original.partition(b"\r\n\r\n")
    boundary = f"lab-report-{n}"
    return (
        (
            f"From: MAILER-DAEMON@lab-gateway.invalid\r\nTo: <{sender}>\r\n"
            "Subject: Undelivered Mail Returned to Sender\r\n"
            f"Date: {formatdate(localtime=True)}\r\nMessage-ID: {make_msgid('lab-report')}\r\n"
            "MIME-Version: 1.0\r\nAuto-Submitted: auto-replied\r\n"
            "Content-Type: multipart/report; report-type=delivery-status;\r\n"
            f' boundary="{boundary}"\r\n'
            f"\r\n--{boundary}\r\nContent-Type: text/plain\r\n\r\n"
            f"The next hop refused your message to <{rcpt}>.\r\n"
            f"\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; lab-gateway.invalid\r\n\r\n"
            f"Final-Recipient: rfc822; {rcpt}\r\nOriginal-Recipient: rfc822; {rcpt}\r\n"
            "Action: failed\r\nStatus: 5.7.1\r\nRemote-MTA: dns; next-hop.lab-gateway.invalid\r\n"
            f"Diagnostic-Code: smtp; {NEXT_HOP_REFUSAL}\r\n"
            f"\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        ).encode()
        + headers
        + f"\r\n\r\n--{boundary}--\r\n".encode()
    )


def rewrite(content: bytes, domain: str) -> tuple[bytes, str]:
    """Rebuild a message the way a template-driven gateway does.

    The envelope recipient becomes a fixed address, the X-Probe-Token header and the
    Message-ID are dropped, the whole Subject becomes folded base64 encoded-words, the body goes
    out as base64 inside a template, and two Received lines are added.
    Returns (message, new recipient).
    """
    original = BytesParser(policy=default_policy).parsebytes(content)
    body = original.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    rcpt = f"notifications@{domain}"
    subject = f"[Notification] {original.get('Subject', '')} — délivré par la passerelle"
    encoded_subject = Header(subject, "utf-8", maxlinelen=60).encode(linesep="\r\n")
    template = f"Template header\n\n{text}\n-- \nTemplate footer\n".encode()
    encoded_body = base64.encodebytes(template).replace(b"\n", b"\r\n")
    headers = (
        "Received: from notify-core (localhost [127.0.0.1])\r\n"
        f"\tby lab-gateway; {formatdate()}\r\n"
        f"Received: from lab-gateway by lab-relay with ESMTP; {formatdate()}\r\n"
        "From: Notification Service <notifications@lab-gateway.invalid>\r\n"
        f"To: {rcpt}\r\n"
        f"Subject: {encoded_subject}\r\n"
        f"Message-ID: {make_msgid(domain='lab-gateway.invalid')}\r\n"
        f"Date: {formatdate(localtime=True)}\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    )
    return headers.encode("ascii") + encoded_body, rcpt


class LabGateway:
    """The lab gateway's aiosmtpd handler and server, plus its relay queue."""

    def __init__(
        self,
        listen: Endpoint,
        relay: Endpoint,
        mode: FaultMode,
        *,
        seed: int = 0,
        rewrite: bool = False,
        relay_connections: int = 16,
        auth: tuple[str, Secret] | None = None,
    ):
        self.listen = listen
        self.auth = auth  # (user, password): require AUTH PLAIN/LOGIN, like a locked-down gateway
        self.relay = relay
        self.mode = mode
        self.rewrite = rewrite
        self._rng = random.Random(seed)
        self._received = 0
        self._queue: asyncio.Queue[_Queued | None] = asyncio.Queue()  # None: worker, stop
        self._relay_connections = relay_connections
        self._workers: list[asyncio.Task[None]] = []
        self._delayed: set[asyncio.Task[None]] = set()
        self._batch: list[_Queued] = []  # batch mode: accepted since the last queue run
        self._batch_waiting = asyncio.Event()
        self._batch_runner: asyncio.Task[None] | None = None
        self._in_session: weakref.WeakKeyDictionary[Session, int] = weakref.WeakKeyDictionary()
        self._held: list[_Queued] = []  # for the next queue run (queue-per-session)
        self._server: asyncio.base_events.Server | None = None
        self._stopping = asyncio.Event()
        self._silent: set[asyncio.StreamWriter] = set()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: object
    ) -> AuthResult:
        user, password = self.auth or ("", Secret(""))
        ok = (
            isinstance(data, LoginPassword)
            and hmac.compare_digest(data.login, user.encode())
            and hmac.compare_digest(data.password, password.reveal().encode())
        )
        return AuthResult(success=ok, handled=False)

    async def hang(self, phase: SmtpPhase) -> None:
        """The `stall` fault: at its phase, say nothing until the gateway stops."""
        if self.mode.stalls(phase):
            await self._stopping.wait()

    async def _silent_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """`stall:greeting`: take the connection, never send the banner. `hang-up:greeting`:
        take it and close it at once."""
        if self.mode.hangs_up(SmtpPhase.GREETING):
            writer.close()
            return
        self._silent.add(writer)
        try:
            with contextlib.suppress(ConnectionError):
                while await reader.read(4096):  # whatever the client says goes unanswered
                    pass
        finally:
            self._silent.discard(writer)
            writer.close()

    # aiosmtpd handler hooks
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self.hang(SmtpPhase.END_OF_DATA)
        if self.mode.hangs_up(SmtpPhase.END_OF_DATA) and server.transport is not None:
            server.transport.close()  # the whole message read, never confirmed
            return "421 4.3.0 closing"  # written to a closed connection: never seen
        self._received += 1
        self._in_session[session] = in_session = self._in_session.get(session, 0) + 1
        action = decide(self.mode, self._received, self._rng, in_session)
        if action.refuse:
            return action.refuse
        content = envelope.original_content or b""
        rcpts = tuple(envelope.rcpt_tos)
        if self.rewrite:
            try:
                _, _, domain = rcpts[0].rpartition("@")
                content, new_rcpt = rewrite(content, domain)
                rcpts = (new_rcpt,)
            except Exception as exc:  # a lab gateway that cannot template still relays as is
                log.warning("lab_rewrite_failed", error=str(exc))
        item = (envelope.mail_from or "", rcpts, content)
        if action.bounce and envelope.mail_from:
            report = delivery_report(content, envelope.mail_from, rcpts[0], self._received)
            self._queue.put_nowait(("", (envelope.mail_from,), report))
        for _ in range(action.copies):
            if action.hold:
                self._held.append(item)
            elif action.delay_s > 0:
                task = asyncio.get_running_loop().create_task(
                    self._enqueue_after(action.delay_s, item)
                )
                self._delayed.add(task)
                task.add_done_callback(self._delayed.discard)
            elif self.mode.name == "batch":
                self._batch.append(item)
                self._batch_waiting.set()
            else:
                self._queue.put_nowait(item)
        return f"250 2.0.0 Queued as lab-{self._received}"

    async def _enqueue_after(self, delay_s: float, item: _Queued) -> None:
        await asyncio.sleep(delay_s)  # the fault itself: a gateway that holds mail back
        self._queue.put_nowait(item)

    async def _run_batches(self) -> None:
        """The queue runner of batch mode: relay everything waiting, then sleep W s."""
        while True:
            await self._batch_waiting.wait()
            self._batch_waiting.clear()
            batch, self._batch = self._batch, []
            for item in batch:
                self._queue.put_nowait(item)
            await asyncio.sleep(self.mode.delay_s)  # the fault itself: a runner on a timer

    async def _queue_runner(self) -> None:
        """Every `delay_s`, hand everything held so far to the relay, like `exim -q20s`."""
        while True:
            await asyncio.sleep(self.mode.delay_s)
            held, self._held = self._held, []
            for item in held:
                self._queue.put_nowait(item)

    async def _relay_worker(self) -> None:
        sender = Sender(self.relay, timeout=30.0, per_session=None, helo="lab-gateway")
        try:
            while (item := await self._queue.get()) is not None:
                mail_from, rcpts, content = item
                try:
                    for rcpt in rcpts:
                        result = await sender.submit(mail_from, rcpt, content)
                        if not result.accepted:
                            log.warning("lab_relay_failed", outcome=result.describe())
                finally:
                    self._queue.task_done()
        finally:
            await sender.close()

    async def start(self) -> LabGateway:
        if self.mode.name == "down":
            return self
        loop = asyncio.get_running_loop()

        def factory() -> SMTP:
            if self.auth is None:
                return _LabSMTP(self, hostname=LAB_HOSTNAME, ident=LAB_IDENT)
            return _LabSMTP(
                self,
                hostname=LAB_HOSTNAME,
                ident=LAB_IDENT,
                authenticator=self._authenticate,
                auth_required=True,
                auth_require_tls=False,
            )

        try:
            if self.mode.stalls(SmtpPhase.GREETING) or self.mode.hangs_up(SmtpPhase.GREETING):
                self._server = await asyncio.start_server(
                    self._silent_session, self.listen.host, self.listen.port
                )
            else:
                self._server = await loop.create_server(factory, self.listen.host, self.listen.port)
        except OSError as exc:
            raise ProbeError(
                f"lab gateway cannot listen on {self.listen}: {exc.strerror}"
            ) from None
        port = self._server.sockets[0].getsockname()[1]
        self.listen = Endpoint(self.listen.host, port)
        self._workers = [
            loop.create_task(self._relay_worker()) for _ in range(self._relay_connections)
        ]
        if self.mode.name == "batch":
            self._batch_runner = loop.create_task(self._run_batches())
        if self.mode.name == "queue-per-session":
            runner = loop.create_task(self._queue_runner())
            self._delayed.add(runner)  # cancelled on stop, like the other timers
        return self

    async def stop(self) -> None:
        self._stopping.set()
        for writer in list(self._silent):
            writer.close()
        for task in [*self._delayed, *([self._batch_runner] if self._batch_runner else [])]:
            task.cancel()
        if self._server is not None:
            self._server.close()
        for _ in self._workers:
            self._queue.put_nowait(None)
        if self._workers:
            _, late = await asyncio.wait(self._workers, timeout=STOP_TIMEOUT_S)
            for task in late:
                task.cancel()

    async def __aenter__(self) -> LabGateway:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class _LabSMTP(SMTP):
    """aiosmtpd's server, silent before answering EHLO, MAIL, RCPT or DATA in `stall` mode, and
    closing the connection instead of answering them in `hang-up` mode."""

    event_handler: LabGateway

    async def _answers(self, phase: SmtpPhase) -> bool:
        """Whether the command of `phase` gets its answer: not when the gateway hangs up there
        (the connection is closed) or stalls (it waits until the gateway stops)."""
        if self.event_handler.mode.hangs_up(phase):
            if self.transport is not None:
                self.transport.close()
            return False
        await self.event_handler.hang(phase)
        return True

    async def smtp_EHLO(self, hostname: str) -> None:
        if await self._answers(SmtpPhase.EHLO):
            await super().smtp_EHLO(hostname)

    async def smtp_MAIL(self, arg: str | None) -> None:
        if await self._answers(SmtpPhase.MAIL):
            await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if await self._answers(SmtpPhase.RCPT):
            await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg: str) -> None:
        if await self._answers(SmtpPhase.DATA):
            await super().smtp_DATA(arg)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (used for `down` and for the demo's sockets)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


__all__ = [
    "MODES",
    "STALL_PHASES",
    "Action",
    "FaultMode",
    "LabGateway",
    "decide",
    "free_port",
    "rewrite",
]
