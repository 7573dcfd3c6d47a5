"""Plain records that cross module lines: what was sent, what the gateway said, what arrived.

They carry no behaviour beyond derived properties, so the verdict can be a pure function of them
and the ledger can store and reload them without loss.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any, Literal, get_args

Stage = Literal["connect", "ehlo", "starttls", "auth", "mail", "rcpt", "data"]
FoundIn = Literal["envelope", "header", "subject", "body", "raw"]  # where the token survived
RunStatus = Literal["running", "done", "interrupted"]
# What a delivery report (RFC 3464 Action field) says happened to a notification it returns.
BounceAction = Literal["failed", "delayed", "delivered", "relayed", "expanded"]
BOUNCE_ACTIONS: tuple[BounceAction, ...] = get_args(BounceAction)
FOUND_IN: tuple[FoundIn, ...] = get_args(FoundIn)

_ENHANCED_RE = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\s+")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_UNESCAPE_RE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4})")
# Letters and typography a Windows-1252 reply spells with bytes that are not UTF-8: a gateway
# localised in cp1252 ("für", "Warteschlange – bereit") reads better so decoded than escaped.
_CP1252_TYPOGRAPHY = frozenset("€‚„…†‡‰‹›‘’“”•–—™°§«»¡¿·´¨")
# A temporary refusal that names a rate or connection limit: the gateway's policy toward the
# probe's client, not a fault. Wording a 4.7.x or a 421 reply must carry to count ...
_LIMIT_WORDING = re.compile(
    r"\brate\b|\brate[- ]?limit|\blimit(?:s|ed|ing)?\b|\bexceed|\bthrottl|\btoo much\b"
    r"|\btoo many (?!(?:protocol |syntax |bad |invalid |unknown |unrecognized |failed )?"
    r"(?:errors|commands|hops)\b)",
    re.IGNORECASE,
)
# ... and the texts of the known limits, whatever their status: Postfix anvil ("450 4.7.1
# Error: too much mail from 192.0.2.1", "421 4.7.0 host Error: too many connections from ..."),
# Exim (the ratelimit ACL's "Sender rate ..."; smtp_accept_max_per_host "Too many concurrent
# SMTP connections"), Exchange receive connectors ("421 4.3.2 The maximum number of concurrent
# server connections has exceeded a limit", "421 4.4.2 Message submission rate for this client
# has exceeded the configured limit", "452 4.5.3 Too many recipients").
_KNOWN_LIMITS = re.compile(
    r"too (?:much mail|many (?:connections|recipients|messages|new tls sessions|concurrent))"
    r"|exceeded (?:a|the configured) limit|(?:sender|message|submission|connection) rate"
    r"|rate ?limit",
    re.IGNORECASE,
)
_ENDPOINT_RE = re.compile(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([^:\s\[\]]+):(\d{1,5})")


def found_in(text: str) -> FoundIn:
    """`text` as a FoundIn: `correlation` names the places with plain strings, since it sits
    beside this module and may not import it."""
    for place in FOUND_IN:
        if text == place:
            return place
    raise ValueError(f"a token is found in one of {', '.join(FOUND_IN)}, not {text!r}")


def printable(text: str) -> str:
    """`text` as it may be stored and shown: control bytes (an ESC from a hostile HELO or reply
    would drive the reader's terminal) written as \\xNN, line breaks kept. A byte that was not
    UTF-8 (decoded with surrogateescape, as aiosmtplib and aiosmtpd do) is written \\xNN too: a
    lone surrogate cannot be stored by SQLite or written to a UTF-8 terminal."""
    return _CONTROL_RE.sub(_escape_char, text)


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the byte it stands for
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}" if code > 0xFF else f"\\x{code:02x}"


def wire_bytes(text: str) -> bytes:
    """The bytes a gateway sent, from the text aiosmtplib or aiosmtpd decoded them into (UTF-8
    with surrogateescape). Lossless for what they decode; any other lone surrogate is kept as
    its UTF-8 form."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def escape_bytes(data: bytes) -> str:
    """`data` as text, reversibly (`unescape_bytes` gives the bytes back): UTF-8 text as is but
    a backslash doubled, every control or non-UTF-8 byte \\xNN, a C1 control character \\uNNNN.
    Storable and safe to show anywhere."""
    text = data.decode("utf-8", "surrogateescape").replace("\\", "\\\\")
    return _CONTROL_RE.sub(
        lambda m: (
            f"\\u{ord(m.group(0)):04x}" if 0x80 <= ord(m.group(0)) <= 0x9F else _escape_char(m)
        ),
        text,
    )


def unescape_bytes(text: str) -> bytes:
    """The bytes `escape_bytes` wrote as `text`."""
    out = bytearray()
    last = 0
    for match in _UNESCAPE_RE.finditer(text):
        out += text[last : match.start()].encode("utf-8")
        token = match.group(1)
        if token == "\\":
            out += b"\\"
        elif token[0] == "x":
            out.append(int(token[1:], 16))
        else:
            out += chr(int(token[1:], 16)).encode("utf-8", "surrogatepass")
        last = match.end()
    return bytes(out + text[last:].encode("utf-8"))


def display_text(data: bytes) -> str:
    """What a gateway sent, as a person should read it: UTF-8 when it is, else Windows-1252
    when every byte outside ASCII then reads as a letter or typography (a localised Windows
    gateway), else with the bytes that are not UTF-8 as \\xNN. Control bytes always \\xNN."""
    try:
        return printable(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    try:
        legacy = data.decode("cp1252")
    except UnicodeDecodeError:
        legacy = ""
    if legacy and all(c < "\x80" or _reads_as_text(c) for c in legacy):
        return printable(legacy)
    return printable(data.decode("utf-8", "surrogateescape"))


def _reads_as_text(char: str) -> bool:
    return (char.isalpha() and char != "ÿ") or char in _CP1252_TYPOGRAPHY


@dataclass(frozen=True)
class Endpoint:
    """Where to reach an SMTP server: the gateway under test, a sink, a lab gateway."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """HOST:PORT or [IPv6]:PORT; ValueError says what is wrong."""
        match = _ENDPOINT_RE.fullmatch(text.strip())
        if not match:
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        port = int(match.group(2) or match.group(4))
        if port > 65535:
            raise ValueError(f"port out of range in {text!r}")
        return cls(match.group(1) or match.group(3), port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def is_loopback(host: str) -> bool:
    """A loopback name or address (`localhost`, 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ErrorKind(str, Enum):
    """Why a submission got no SMTP reply to judge."""

    CONNECTION_REFUSED = "connection_refused"  # nothing listening there, or no route
    DNS = "dns"  # the gateway's host name did not resolve
    RESET = "reset"  # the gateway closed or reset the connection
    TIMEOUT = "timeout"  # a step took longer than the per-step timeout
    TLS = "tls"  # TLS negotiation failed
    PROTOCOL = "protocol"  # the gateway said something that is not SMTP
    INTERRUPTED = "interrupted"  # the probe itself stopped mid-step (watch stop): says nothing

    @property
    def is_connect_failure(self) -> bool:
        return self in (ErrorKind.CONNECTION_REFUSED, ErrorKind.DNS, ErrorKind.TLS)

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")

    @classmethod
    def _missing_(cls, value: object) -> ErrorKind | None:
        """Ledgers written before "refused" was kept for SMTP refusals alone."""
        return cls.CONNECTION_REFUSED if value == "refused" else None


class SmtpPhase(str, Enum):
    """Where in the SMTP dialogue the probe was waiting: the phase a stall is named by."""

    CONNECT = "connect"  # the TCP (and implicit TLS) handshake
    GREETING = "greeting"  # the 220 banner
    EHLO = "ehlo"
    STARTTLS = "starttls"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"  # the DATA command, before 354
    END_OF_DATA = "end_of_data"  # the message was sent, the final reply never came

    @property
    def label(self) -> str:
        return self.value.replace("_", " ") if self is not SmtpPhase.EHLO else "EHLO"

    @property
    def stage(self) -> Stage:
        """The SMTP step this phase belongs to: the banner is part of connecting, the final
        reply part of DATA. Every `Stage` is the stage of some phase (tests/test_records.py)."""
        return _STAGE_OF.get(self, "connect")

    @property
    def command(self) -> str:
        """The transcript's client line for a step of this phase that ended without a reply:
        the burst writes it, and a hang-up's phase is read back from it."""
        special = {
            SmtpPhase.AUTH: "AUTH [redacted]",
            SmtpPhase.GREETING: "(connected, waiting for the greeting)",
            SmtpPhase.END_OF_DATA: "message and .",
        }
        return special.get(self, self.label.upper())


_STAGE_OF: dict[SmtpPhase, Stage] = {
    SmtpPhase.CONNECT: "connect",
    SmtpPhase.GREETING: "connect",
    SmtpPhase.EHLO: "ehlo",
    SmtpPhase.STARTTLS: "starttls",
    SmtpPhase.AUTH: "auth",
    SmtpPhase.MAIL: "mail",
    SmtpPhase.RCPT: "rcpt",
    SmtpPhase.DATA: "data",
    SmtpPhase.END_OF_DATA: "data",
}


@dataclass(frozen=True)
class SmtpReply:
    """One SMTP reply: code, RFC 3463 enhanced status when present, and text.

    `text` is for reading (see `display_text`: no control byte, cp1252 decoded where that
    reads better); `raw` keeps the reply's bytes, reversibly escaped (`unescape_bytes`), when
    `text` is not already exactly them: nothing a gateway says is lost.
    """

    code: int
    text: str
    enhanced: str | None = None
    raw: str = ""

    @classmethod
    def parse(cls, code: int, message: str) -> SmtpReply:
        data = wire_bytes(message)
        text = display_text(data.strip())
        raw = escape_bytes(data)
        match = _ENHANCED_RE.match(text)
        return cls(
            code=code,
            text=text,
            enhanced=match.group(1) if match else None,
            raw="" if raw == text else raw,
        )

    @property
    def wire(self) -> bytes:
        """The reply's text as the gateway sent it (the lines joined by LF, as aiosmtplib
        gives them)."""
        return unescape_bytes(self.raw or self.text)

    @property
    def names_limit(self) -> bool:
        """A temporary refusal that names a rate or connection limit (the gateway throttles the
        probe's client): a 4.7.x or 421 reply worded so, or the text of a known MTA's limit. A
        permanent (5xx) refusal is policy, whatever it says."""
        if not 400 <= self.code < 500:
            return False
        if _KNOWN_LIMITS.search(self.text):
            return True
        policy = self.code == 421 or (self.enhanced or "").startswith("4.7.")
        return policy and _LIMIT_WORDING.search(self.text) is not None

    @property
    def reply_class(self) -> str:
        """'2xx', '4xx' or '5xx': how monitoring groups replies."""
        return f"{self.code // 100}xx"

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True)
class Step:
    """One line of the client-side transcript: the command sent and the reply (or error)."""

    at: float
    command: str
    reply: SmtpReply | None = None
    error: str | None = None


@dataclass(frozen=True)
class Submission:
    """How handing one notification to the gateway went.

    `stage` names the last SMTP step attempted. `reply` is the
    reply that decided the outcome: the DATA reply on success, the refusing reply otherwise.
    `session` numbers the SMTP sessions of a burst from 1 and `position` is the notification's
    place in its session (1 = the first); both None in runs recorded before they were kept.
    `stalled_at` is set when the gateway stopped answering: the phase it fell silent in.
    """

    started_at: float
    finished_at: float
    stage: Stage
    reply: SmtpReply | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None
    steps: tuple[Step, ...] = ()
    session: int | None = None
    position: int | None = None
    stalled_at: SmtpPhase | None = None

    @property
    def answered(self) -> bool:
        """The gateway gave an SMTP reply to judge (2xx, 4xx or 5xx), not silence or an error."""
        return self.reply is not None

    @property
    def stalled(self) -> bool:
        """An SMTP server took the connection, then went silent. Silence at the TCP handshake
        proves no server is there: that is unreachable, not stalled."""
        return self.stalled_at is not None and self.stalled_at is not SmtpPhase.CONNECT

    @property
    def unreachable(self) -> bool:
        """No SMTP session could be opened: refused, no route, TLS, or silence at connect."""
        if self.reply is not None or self.stalled or self.interrupted:
            return False
        if self.error_kind is ErrorKind.PROTOCOL:  # something answered, not in SMTP
            return False
        if self.hung_up:  # something took the TCP connection, then closed it
            return False
        return self.stage == "connect" or (
            self.error_kind is not None and self.error_kind.is_connect_failure
        )

    @property
    def interrupted(self) -> bool:
        """Cut off by the probe's own stop, not by anything the gateway did or failed to do."""
        return self.error_kind is ErrorKind.INTERRUPTED

    @property
    def accepted(self) -> bool:
        return self.stage == "data" and self.reply is not None and 200 <= self.reply.code < 300

    @property
    def refused(self) -> bool:
        """The gateway answered with a 4xx/5xx reply (it was reachable, it said no)."""
        return self.reply is not None and self.reply.code >= 400

    @property
    def not_smtp(self) -> bool:
        """The gateway answered with something that is not SMTP: a reply over the cap, a line
        without a code (a protocol error), or, in runs kept before those were, a reply that
        neither accepts nor refuses (aiosmtplib's -1, a 354 or 221 where a verdict was due).
        Neither a refusal nor silence."""
        if self.error_kind is ErrorKind.PROTOCOL:
            return True
        return self.reply is not None and self.reply.code < 400 and not self.accepted

    @property
    def hung_up(self) -> bool:
        """The gateway took the TCP connection, then closed or reset it before it answered
        this step: neither a refusal, nor silence (a stall), nor an unreachable gateway."""
        return self.reply is None and self.error_kind is ErrorKind.RESET

    @property
    def hung_up_at(self) -> SmtpPhase | None:
        """The phase the gateway hung up in, read from the transcript's last line (DATA, before
        the 354, apart from the end of DATA, after the final dot); from `stage` in runs kept
        without a transcript. None when it did not hang up."""
        if not self.hung_up:
            return None
        if self.steps and self.steps[-1].error is not None:
            for phase in SmtpPhase:
                if phase.command == self.steps[-1].command:
                    return phase
        return SmtpPhase.GREETING if self.stage == "connect" else SmtpPhase(self.stage)

    @property
    def reply_is_permanent(self) -> bool:
        """A 5xx refusal: do not retry as is. A 4xx one is temporary: the gateway says later."""
        return self.reply is not None and self.reply.code >= 500

    def describe(self) -> str:
        if self.reply is not None:
            return f"{self.stage.upper()} {self.reply}"
        if self.stalled_at is not None:
            return f"no answer at {self.stalled_at.label} ({self.error})"
        return f"{self.stage} {self.error_kind.label if self.error_kind else 'error'}: {self.error}"


@dataclass(frozen=True)
class Delivery:
    """One copy of a notification that reached the sink."""

    run_id: str
    seq: int
    received_at: float
    # "live": counted by a running probe as it arrived, for its provisional verdict; the ledger
    # row of the same copy says where the token was found.
    found_in: FoundIn | Literal["live"]
    peer: str = ""
    message_id: str = ""
    size: int = 0


BouncedBy = Literal["verp", "token"]  # how a report named its notification: the address it came
# back to (the notification's own envelope sender), or only a token in what it returned


@dataclass(frozen=True)
class Bounce:
    """A delivery report about one notification: what a mail server on the way said happened
    to it (RFC 3464 fields, or their equivalents read from a non-standard bounce).

    A bounce is evidence, never a delivery: a notification that came back did not arrive.
    """

    run_id: str
    seq: int
    received_at: float
    action: BounceAction
    status: str = ""  # RFC 3463, e.g. "5.7.1"; "" when the report gave none
    diagnostic: str = ""  # e.g. "smtp; 550 5.7.1 Recipient address rejected"
    remote_mta: str = ""  # the server that refused or delayed it
    reporting_mta: str = ""  # the server that wrote the report
    recipient: str = ""  # the notification's recipient, as the report quotes it
    named_by: BouncedBy = "verp"
    confirmed: bool = False  # the returned headers or the recipient carry the same token
    format: str = ""  # rfc3464, or the non-standard format it was read from

    def describe(self) -> str:
        """One line: the status and the reason, then who said it."""
        reason = self.diagnostic or "no diagnostic given"
        status = f"{self.status} " if self.status else ""
        where = f" at {self.remote_mta}" if self.remote_mta else ""
        by = f", reported by {self.reporting_mta}" if self.reporting_mta else ""
        return f"{self.action} {status}({reason}){where}{by}"


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """What the sink knows of one received message, whatever token it carries."""

    received_at: float
    peer: str = ""
    mail_from: str = ""
    rcpts: tuple[str, ...] = ()
    message_id: str = ""
    subject: str = ""
    size: int = 0
    helo: str = ""  # the name the sending MTA gave in HELO/EHLO


@dataclass(frozen=True)
class Notification:
    """One test notification of a run: what was sent, what the gateway said, what arrived."""

    run_id: str
    seq: int
    token: str
    submission: Submission | None = None  # None: never attempted (run cut off, or planned)
    deliveries: tuple[Delivery, ...] = ()
    not_attempted: str | None = None  # why the probe chose not to send it (circuit breaker)
    bounces: tuple[Bounce, ...] = ()  # delivery reports that came back about it, oldest first

    @property
    def is_control(self) -> bool:
        """Sequence 0 goes straight to the sink: it proves the probe's own sink works."""
        return self.seq == 0

    @property
    def attempted(self) -> bool:
        return self.submission is not None

    @property
    def copies(self) -> int:
        return len(self.deliveries)

    @property
    def delivered_at(self) -> float | None:
        return min((d.received_at for d in self.deliveries), default=None)

    @property
    def bounce(self) -> Bounce | None:
        """The report that decides what happened to it: the latest failure, else the latest
        delay (a failure after a delay ends the retries; a delay after a failure changes
        nothing). None when no report said it failed or was delayed."""
        for action in ("failed", "delayed"):
            last = [b for b in self.bounces if b.action == action]
            if last:
                return last[-1]
        return None

    @property
    def bounced(self) -> bool:
        """A report said delivery failed and it never arrived: not lost, returned."""
        bounce = self.bounce
        return not self.deliveries and bounce is not None and bounce.action == "failed"

    @property
    def delayed(self) -> bool:
        """A report said delivery is delayed (the next hop will retry) and it has not arrived."""
        bounce = self.bounce
        return not self.deliveries and bounce is not None and bounce.action == "delayed"

    @property
    def latency_s(self) -> float | None:
        if self.delivered_at is None or self.submission is None:
            return None
        return max(0.0, self.delivered_at - self.submission.started_at)


StartKind = Literal["process", "service"]


@dataclass(frozen=True)
class ProcessStart:
    """When a gateway process (or service) was started, as seen around a run: a restart
    between two runs is what the first-only signature counts from."""

    kind: StartKind
    name: str  # as asked for (the service name, or the process name pattern)
    pid: int
    started_at: float

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "name": self.name,
            "pid": self.pid,
            "started_at": self.started_at,
        }


class WindowSource(str, Enum):
    DEFAULT = "default"
    LEARNED = "learned"
    OPTION = "option"


@dataclass(frozen=True)
class SettleWindow:
    """The window a run used, and why: kept in the run's options, shown in every report."""

    seconds: float
    source: WindowSource
    runs: int = 0  # fully delivered runs of this gateway the window was learned from
    reason: str = ""

    def describe(self) -> str:
        return f"{self.seconds:.3g} s, {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "source": self.source.value,
            "runs": self.runs,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: object) -> SettleWindow | None:
        """A window as `to_dict` kept it; None when there is none or it does not read."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                seconds=float(data["seconds"]),
                source=WindowSource(data["source"]),
                runs=int(data.get("runs", 0)),
                reason=str(data.get("reason", "")),
            )
        except (KeyError, TypeError, ValueError):
            return None


INSECURE_WARNING = (
    "TLS certificate verification is OFF (--insecure): the gateway is not authenticated"
)


@dataclass(frozen=True)
class RunSecurity:
    """What a run keeps of its TLS and AUTH: modes and names, never the password."""

    tls: str = "none"
    ca_file: str | None = None
    insecure: bool = False
    auth_user: str | None = None


@dataclass(frozen=True)
class RunOptions:
    """How a run was made, as the ledger keeps it with the run (JSON, read back only here): what
    the reports show, what judges it again (`slow_after_s`), what `watch` finds its runs by
    (`target`), what a bundle rebuilds the burst command from."""

    target: str = ""  # the watch target this run belongs to; "" for a one-off burst
    security: RunSecurity = field(default_factory=RunSecurity)
    max_rate: float = 0.0
    concurrency: int = 1
    per_session: int | None = None
    notification_gap_s: float = 0.0
    step_timeout_s: float = 0.0
    breaker: int = 0
    own_sink: bool = True
    control: bool = True
    timeout_s: float = 0.0
    slow_after_s: float = 5.0
    budget_s: float | None = None  # the longest the whole run could take (watch)
    lab: bool = False  # the gateway was a lab gateway this process started (the demo)
    settle: SettleWindow | None = None  # None for runs recorded before windows were kept

    def to_json(self) -> str:
        data = asdict(self)
        data["settle"] = self.settle.to_dict() if self.settle is not None else None
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> RunOptions:
        """The options as kept; a field missing or of another type (a ledger written by another
        version) takes its default, so an old run still loads and is judged as it was."""
        try:
            data = json.loads(text or "{}")
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        defaults = cls()
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in ("security", "settle") or f.name not in data:
                continue
            value, default = data[f.name], getattr(defaults, f.name)
            if _same_kind(value, default, f.type):
                values[f.name] = float(value) if isinstance(default, float) else value
        security = data.get("security")
        if isinstance(security, dict):
            values["security"] = RunSecurity(
                tls=str(security.get("tls") or "none"),
                ca_file=str(security["ca_file"]) if security.get("ca_file") else None,
                insecure=security.get("insecure") is True,
                auth_user=str(security["auth_user"]) if security.get("auth_user") else None,
            )
        return cls(**values, settle=SettleWindow.from_dict(data.get("settle")))


def _same_kind(value: object, default: object, annotation: object) -> bool:
    """A kept value fits a field: booleans stay booleans, numbers numbers, text text; None
    only where the field takes None."""
    if value is None:
        return "None" in str(annotation)
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, (int, float)) or "int" in str(annotation) or "float" in str(annotation):
        return isinstance(value, (int, float))
    return isinstance(value, str)


@dataclass(frozen=True)
class RunGlance:
    """A past run at a glance, as the outage story walks back through a target's runs: its
    verdict as the ledger keeps it now (the latest correction, else the one given at its end),
    how many of its notifications reached the sink, the gateway's greeting in its first
    session, and the gateway's process starts seen around it."""

    run_id: str
    started_at: float
    finished_at: float | None
    verdict: dict[str, object] | None  # None: never judged
    delivered: int
    greeting: str | None = None
    starts: tuple[ProcessStart, ...] = ()


@dataclass(frozen=True)
class Run:
    """One burst: where it went, how many notifications, and how it ended."""

    run_id: str
    gateway: str
    domain: str
    count: int
    started_at: float
    sink: str = ""
    finished_at: float | None = None
    status: RunStatus = "running"
    options: RunOptions = field(default_factory=RunOptions)
    failure: str = ""  # a ledger write of the run failed: the probe's fault, said with its cause


@dataclass(frozen=True)
class DeliveryHistory:
    """What a gateway's past fully delivered runs showed: what its settle window is learned from."""

    runs: int = 0
    max_latency_s: float = 0.0  # slowest first delivery, from its submission
    max_gap_s: float = 0.0  # longest time between two consecutive first deliveries of one run


@dataclass(frozen=True)
class RunRecord:
    """A run with its notifications, as the ledger holds it: the input of the verdict."""

    run: Run
    notifications: tuple[Notification, ...]
    # Reports that came back to this run but named none of its notifications (an old-style
    # run-wide sender, or tokens that did not check): kept as evidence, judged nothing by.
    unmatched_bounces: int = 0

    @property
    def control(self) -> Notification | None:
        return next((n for n in self.notifications if n.is_control), None)

    @property
    def burst(self) -> tuple[Notification, ...]:
        return tuple(n for n in self.notifications if not n.is_control)
