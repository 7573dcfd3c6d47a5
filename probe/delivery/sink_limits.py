"""What the sink tolerates from a client, and who may connect at all.

The sink runs next to production mail, so nothing a client does may hold it hostage: every
resource a session can consume (bytes, recipients, connections, time) has a cap with a clear SMTP
reply. aiosmtpd enforces the message size, the line lengths and the idle timeout itself; this
module adds what it lacks: connection caps (global and per client address), an access list, and
a whole-session deadline that cuts off a slow-loris client feeding one byte at a time.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from dataclasses import dataclass
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP

from probe.errors import UsageError
from probe.records import is_loopback

log = structlog.get_logger("notifyprobe.sink")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
TOO_MANY_FROM_CLIENT = "421 4.7.0 Too many connections from your address, try again later"
ACCESS_DENIED = "554 5.7.1 Access denied: this sink accepts probe mail from listed clients only"
SESSION_EXPIRED = "421 4.4.2 Session time limit reached, closing"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"


@dataclass(frozen=True)
class SinkLimits:
    """Caps on what one client or all clients together may use. Defaults suit a gateway
    relaying a 10,000-notification burst over a few dozen connections."""

    max_message_bytes: int = 10 * 1024 * 1024  # larger DATA → 552
    max_connections: int = 100  # live sessions, all clients → 421
    max_per_client: int = 50  # live sessions from one address → 421
    max_recipients: int = 100  # per transaction → 452
    idle_timeout_s: float = 60.0  # no complete command (or DATA not finished) for this long
    session_timeout_s: float = 900.0  # whole session, however busy: slow-loris cut-off
    max_repeats: int = 50  # NOOP, HELP, VRFY, EXPN, EHLO/HELO, RSET-free chatter per session

    def command_call_limit(self) -> dict[str, int]:
        """aiosmtpd per-command budgets: chatter is bounded, mail transactions are not."""
        chatter = ("NOOP", "HELP", "VRFY", "EXPN", "EHLO", "HELO", "STARTTLS", "AUTH")
        limits = dict.fromkeys(chatter, self.max_repeats)
        limits["*"] = 1_000_000
        return limits


@dataclass(frozen=True)
class Access:
    """Who may connect. Loopback always may (the probe's own control message comes from it).

    Listening on a non-loopback address needs `allow_remote` and at least one client network:
    the sink must never become an open mail drop on the network by accident.
    """

    allow_remote: bool = False
    allowed_clients: tuple[IPNetwork, ...] = ()

    def check_bind(self, host: str) -> None:
        if is_loopback(host):
            return
        if not self.allow_remote:
            raise UsageError(
                f"refusing to listen on non-loopback address {host}: give --allow-remote and "
                "--allow-client CIDR for each gateway that may deliver to the sink"
            )
        if not self.allowed_clients:
            raise UsageError(
                f"listening on {host} needs at least one --allow-client CIDR (the gateways)"
            )

    def permits(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address.is_loopback:
            return True
        return any(address in net for net in self.allowed_clients)


def client_network(text: str) -> IPNetwork:
    """An --allow-client value: an address or a CIDR network."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise UsageError(f"not an address or CIDR network: {text!r}") from None


class ConnectionGate:
    """Counts live sessions, globally and per client address, and decides admission."""

    def __init__(self, limits: SinkLimits, access: Access):
        self.limits = limits
        self.access = access
        self.live = 0
        self.per_client: Counter[str] = Counter()
        self.refused = 0
        self.sessions: set[asyncio.BaseTransport] = set()  # admitted and still open

    def admit(self, ip: str) -> str | None:
        """None to admit (and count) the connection, or the reply line that refuses it."""
        if not self.access.permits(ip):
            refusal = ACCESS_DENIED
        elif self.live >= self.limits.max_connections:
            refusal = TOO_MANY_CONNECTIONS
        elif self.per_client[ip] >= self.limits.max_per_client:
            refusal = TOO_MANY_FROM_CLIENT
        else:
            self.live += 1
            self.per_client[ip] += 1
            return None
        self.refused += 1
        log.warning("sink_connection_refused", client=ip, reply=refusal[:3], live=self.live)
        return refusal

    def release(self, ip: str) -> None:
        self.live -= 1
        self.per_client[ip] -= 1
        if self.per_client[ip] <= 0:
            del self.per_client[ip]


class GuardedSMTP(SMTP):
    """aiosmtpd's SMTP with admission control and a whole-session deadline.

    A refused connection gets one reply line and is closed before aiosmtpd starts a session.
    """

    def __init__(self, handler: Any, *, gate: ConnectionGate, **kwargs: Any):
        limits = gate.limits
        super().__init__(
            handler,
            data_size_limit=limits.max_message_bytes,
            timeout=limits.idle_timeout_s,
            command_call_limit=limits.command_call_limit(),
            **kwargs,
        )
        self._gate = gate
        self._client: str | None = None  # set once admitted: released on connection_lost
        self._refused = False
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None and self._original_transport is None
        if first:  # not the second call that STARTTLS makes for the TLS transport
            peer = transport.get_extra_info("peername")
            ip = peer[0] if isinstance(peer, tuple) and peer else str(peer or "")
            refusal = self._gate.admit(ip)
            if refusal is not None:
                self._refused = True
                assert isinstance(transport, asyncio.WriteTransport)  # every TCP or TLS one is
                transport.write(refusal.encode("ascii") + b"\r\n")
                transport.close()
                return
            self._client = ip
            self._gate.sessions.add(transport)
            self._deadline = self.loop.call_later(
                self._gate.limits.session_timeout_s, self._session_expired
            )
        super().connection_made(transport)

    def _session_expired(self) -> None:
        if self.transport is None:
            return
        assert isinstance(self.transport, asyncio.WriteTransport)  # every TCP or TLS one is
        log.warning("sink_session_expired", client=self._client)
        try:
            self.transport.write(SESSION_EXPIRED.encode("ascii") + b"\r\n")
        finally:
            self.transport.close()

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._client is not None:
            self._gate.release(self._client)
            self._client = None
        if self._original_transport is not None:
            self._gate.sessions.discard(self._original_transport)
        if self.transport is not None:
            self._gate.sessions.discard(self.transport)
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self._refused:
            return False
        return super().eof_received()
