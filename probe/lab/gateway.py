"""The lab gateway: an SMTP relay with deterministic faults, to rehearse every verdict locally.

It stores and forwards like a real notification gateway (answers 250, then relays in the
background) and can misbehave on purpose: relay only the first message after start (the
MPNotifyPerf.dll symptom), drop after k, lose a seeded random share, delay, duplicate, refuse
everything, or not listen at all. `--rewrite` rebuilds each message from a template the way
gateways do, so the token has to survive on its own.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import random
from dataclasses import dataclass
from email.header import Header
from email.parser import BytesParser
from email.policy import default as default_policy
from email.utils import formatdate, make_msgid
from typing import Literal, TypeVar, get_args

import structlog
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from probe.delivery.burst import Sender
from probe.delivery.credentials import Secret
from probe.errors import ProbeError, UsageError
from probe.records import Endpoint

log = structlog.get_logger("notifyprobe.lab")

_Queued = tuple[str, tuple[str, ...], bytes]  # envelope sender, recipients, message
STOP_TIMEOUT_S = 5.0

ModeName = Literal[
    "healthy", "first-only", "drop-after-k", "intermittent", "slow", "duplicate", "reject", "down"
]
MODES: tuple[ModeName, ...] = get_args(ModeName)
Refusal = Literal["drop", "4xx", "5xx"]  # how first-only refuses; drop: accept and lose
REFUSALS: tuple[Refusal, ...] = get_args(Refusal)
_Choice = TypeVar("_Choice", bound=str)


@dataclass(frozen=True)
class FaultMode:
    """A parsed `--mode`: `first-only[:drop|4xx|5xx]`, `drop-after-k:K`, `intermittent:P`,
    `slow:SECONDS`, or one of `healthy`, `duplicate`, `reject`, `down`."""

    name: ModeName
    k: int = 0
    probability: float = 0.0
    delay_s: float = 0.0
    refusal: Refusal = "drop"

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
                    raise ValueError("first-only takes drop, 4xx or 5xx")
                return cls(name, refusal=refusal)
            if name == "drop-after-k" and int(arg) >= 0:
                return cls(name, k=int(arg))
            if name == "intermittent" and 0.0 <= float(arg) <= 1.0:
                return cls(name, probability=float(arg))
            if name == "slow" and float(arg) >= 0.0:
                return cls(name, delay_s=float(arg))
        except ValueError as exc:
            raise UsageError(f"bad lab mode {text!r}: {exc}") from None
        raise UsageError(
            f"bad lab mode {text!r}: use healthy, first-only[:drop|4xx|5xx], drop-after-k:K, "
            "intermittent:P, slow:SECONDS, duplicate, reject or down"
        )


def _member(text: str, choices: tuple[_Choice, ...]) -> _Choice | None:
    return next((choice for choice in choices if choice == text), None)


@dataclass(frozen=True)
class Action:
    """What the gateway does with its n-th message: relay it `copies` times, or refuse it."""

    copies: int = 1
    refuse: str | None = None  # the SMTP reply line when refusing
    delay_s: float = 0.0


def decide(mode: FaultMode, n: int, rng: random.Random) -> Action:
    """The fault model, pure: `n` counts messages since the gateway started (1-based)."""
    if mode.name == "first-only" and n > 1:
        if mode.refusal == "4xx":
            return Action(refuse="451 4.3.0 Notification service failed to process the message")
        if mode.refusal == "5xx":
            return Action(refuse="554 5.3.0 Notification service failed to process the message")
        return Action(copies=0)
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
    return Action()


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
        self._server: asyncio.base_events.Server | None = None
        self.relayed = 0

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

    # aiosmtpd handler hooks
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self._received += 1
        action = decide(self.mode, self._received, self._rng)
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
        for _ in range(action.copies):
            if action.delay_s > 0:
                task = asyncio.get_running_loop().create_task(
                    self._enqueue_after(action.delay_s, item)
                )
                self._delayed.add(task)
                task.add_done_callback(self._delayed.discard)
            else:
                self._queue.put_nowait(item)
        return f"250 2.0.0 Queued as lab-{self._received}"

    async def _enqueue_after(self, delay_s: float, item: _Queued) -> None:
        await asyncio.sleep(delay_s)  # the fault itself: a gateway that holds mail back
        self._queue.put_nowait(item)

    async def _relay_worker(self) -> None:
        sender = Sender(self.relay, timeout=30.0, reuse=True, helo="lab-gateway")
        try:
            while (item := await self._queue.get()) is not None:
                mail_from, rcpts, content = item
                try:
                    for rcpt in rcpts:
                        result = await sender.submit(mail_from, rcpt, content)
                        if result.accepted:
                            self.relayed += 1
                        else:
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
                return SMTP(self, hostname="lab-gateway", ident="notifyprobe lab gateway")
            return SMTP(
                self,
                hostname="lab-gateway",
                ident="notifyprobe lab gateway",
                authenticator=self._authenticate,
                auth_required=True,
                auth_require_tls=False,
            )

        try:
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
        return self

    async def stop(self) -> None:
        for task in list(self._delayed):
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


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (used for `down` and for the demo's sockets)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


__all__ = ["MODES", "Action", "FaultMode", "LabGateway", "decide", "free_port", "rewrite"]
