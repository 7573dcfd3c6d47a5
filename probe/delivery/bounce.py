"""Bounce reading: what a delivery report that came back to the probe says about a notification.

A bounce is evidence, never a delivery: it carries the notification it returns (and so its
token), and a sink that only looked for tokens would count it as delivered. This module only
reads: `looks_like_bounce` tells a report by its shape, `read_bounce` takes out what it says
per recipient (action, RFC 3463 status, diagnostic, remote MTA) and which tokens it returns. It
checks no MAC and decides nothing; with VERP the probe already knows the notification from the
address the report came back to, so the report adds the why.

Reports follow RFC 3464 (multipart/report with a message/delivery-status part: Postfix, Exim 4
since 4.82, sendmail, Exchange in DSN mode) or an older plain-text shape (qmail, old Exim,
Exchange/Outlook text NDRs, Lotus/Domino, sendmail), which is read by pattern. Everything a
sender controls is untrusted: work is bounded (the first MAX_BYTES, capped counts and lengths),
any failure degrades to less information, never an exception, and text is made printable.

flufl.bounce 6.0.0 was weighed and left out: it returns only the sets of bounced addresses
(temporary, permanent), no status, diagnostic or MTA; on fixtures/bounces it called Exim's
delay warning permanent and missed the Exchange NDR; and it needs Python 3.11 (we support 3.10).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import parseaddr
from typing import Literal

from probe.correlation import FoundToken, find_tokens
from probe.records import BOUNCE_ACTIONS, BounceAction, printable

BounceFormat = Literal["rfc3464", "exim", "qmail", "exchange", "unknown"]

MAX_BYTES = 256 * 1024  # what is parsed of a report; a real one is a few KiB plus the original
MAX_PARTS = 64  # MIME parts walked
MAX_RECIPIENTS = 100  # per-recipient blocks read
MAX_TOKENS = 64  # distinct tokens returned
MAX_DIAGNOSTIC = 500  # characters of a diagnostic kept
MAX_FIELD = 255  # characters of an MTA name or an address kept
SNIFF_BYTES = 16 * 1024  # of the body, for `looks_like_bounce`


@dataclass(frozen=True)
class RecipientReport:
    """One per-recipient block of a report: what happened to the message for that address."""

    action: BounceAction  # failed, delayed, delivered, relayed, expanded
    status: str  # RFC 3463 status, e.g. "5.7.1"; "" when none given
    diagnostic: str  # e.g. "smtp; 550 5.7.1 <x>: Recipient address rejected: ..."
    remote_mta: str  # "dns; mx.example" → "mx.example"; "" when absent
    recipient: str  # Original-Recipient, else Final-Recipient address, without "rfc822;"


@dataclass(frozen=True)
class BounceReport:
    format: BounceFormat
    reporting_mta: str
    recipients: tuple[RecipientReport, ...]  # empty when no status could be read
    returned_tokens: tuple[FoundToken, ...]  # in the returned message or quoted by the report


EMPTY = BounceReport("unknown", "", (), ())

_STATUS_RE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY_RE = re.compile(r"(?<![\d.#])([245])\d\d(?:[ -]|$)(?:\s*#?([245]\.\d{1,3}\.\d{1,3})\b)?")
_DAEMON_RE = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mdaemon)$", re.I)
_DAEMON_NAME_RE = re.compile(r"mail delivery (system|subsystem)|mailer[- ]daemon|postmaster", re.I)
_SUBJECT_RE = re.compile(
    r"undeliver|undelivered mail|returned mail|return(ing|ed) message to sender|"
    r"delivery (status notification|failure|has failed|delayed|report|notification)|"
    r"mail delivery (failed|failure|status)|delivery[ _]failure|failure notice|"
    r"non-?deliver|delayed mail|message not delivered|could not send message|"
    r"warning: message .* delayed|mail system error",
    re.I,
)
_BODY_RE = re.compile(
    r"could not be delivered|couldn't be delivered|was not delivered|"
    r"has not yet been delivered|could not deliver|wasn't able to deliver|"
    r"delivery (to the following recipients? )?(has )?failed|"
    r"did not reach (some or all of )?the intended recipient|"
    r"the following (recipient|address)\(?(es|s)?\)? (failed|cannot be reached|could not)|"
    r"qmail-send program|created automatically by mail delivery software|"
    r"delivery status notification|undeliverable|permanent fatal errors|"
    r"transcript of session follows|this is a warning only|still being retried",
    re.I,
)
_DELAY_RE = re.compile(
    r"warning only|not yet been delivered|still (being )?(re)?tr(y|ying|ied)|"
    r"will (continue to )?(be )?retr(y|ied)|delivery (has been )?delayed|\bdelayed\b|"
    r"temporar(y|ily) (failure|problem|error)|could not send message for past",
    re.I,
)
_HASHED_RE = re.compile(
    r"#((?:[245]\d\d[ -])?[245]\.\d{1,3}\.\d{1,3}[^\n]*?)\s*(?:##|>?\s*$)", re.M
)
_QMAIL_TAIL_RE = re.compile(r"\n(?:Giving up on|I'm not going to try again)")
_REMOTE_RE = re.compile(
    r"\bhost ([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])[ \[]|^([A-Za-z0-9.:-]+) does not like", re.M
)
_ADDRESS_RE = re.compile(r"<?([^\s<>@:;,\"']{1,200}@[A-Za-z0-9.-]{1,253})>?")
_SPACES_RE = re.compile(r"\s+")


def looks_like_bounce(mail_from: str, content: bytes) -> bool:
    """A delivery report by its shape: multipart/report; report-type=delivery-status, or a
    common non-standard bounce (null sender or MAILER-DAEMON/postmaster From with a
    bounce-shaped subject/body: Postfix, Exim, qmail, Exchange/Outlook NDRs, Lotus/Domino,
    sendmail). A null sender alone is not enough: auto-replies and the probe's own
    notifications may come with one."""
    try:
        return _looks_like_bounce(mail_from, content)
    except Exception:  # a hostile or broken message is not a report we can read
        return False


def _looks_like_bounce(mail_from: str, content: bytes) -> bool:
    head, _, body = content[:MAX_BYTES].partition(b"\n\n")
    if not body:
        head, _, body = content[:MAX_BYTES].partition(b"\r\n\r\n")
    headers = HeaderParser(policy=compat32).parsestr(head.decode("latin-1"), headersonly=True)
    if _is_dsn(headers):
        return True
    sender = mail_from.strip().strip("<>").strip()
    name, address = parseaddr(str(headers.get("From", "")))
    local = address.rpartition("@")[0] or address
    from_daemon = bool(_DAEMON_RE.match(local)) or bool(_DAEMON_NAME_RE.search(name))
    if sender and not from_daemon:
        return False
    if _SUBJECT_RE.search(_unfold(str(headers.get("Subject", "")))):
        return True
    return bool(_BODY_RE.search(body[:SNIFF_BYTES].decode("latin-1")))


def _is_dsn(message: Message) -> bool:
    if message.get_content_type() != "multipart/report":
        return False
    report_type = message.get_param("report-type")
    return isinstance(report_type, str) and report_type.lower() == "delivery-status"


def read_bounce(content: bytes) -> BounceReport:
    """What a delivery report says, per recipient, and the tokens it returns (MACs not checked).
    Never raises on any input; bounded work (the first MAX_BYTES, capped counts)."""
    try:
        return _read(content[:MAX_BYTES])
    except Exception:  # never raise: keep at least the tokens in the raw bytes
        try:
            tokens = find_tokens(content[:MAX_BYTES].decode("latin-1"))[:MAX_TOKENS]
        except Exception:
            tokens = []
        return BounceReport("unknown", "", (), tuple(tokens))


def _read(data: bytes) -> BounceReport:
    message = message_from_bytes(data, policy=compat32)
    parts = list(_walk(message))
    status_blocks: list[list[tuple[str, str]]] | None = None
    returned: list[str] = []
    texts: list[str] = []
    for part in parts:
        ctype = part.get_content_type()
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            if status_blocks is None:
                status_blocks = _status_blocks(part)
        elif ctype in ("message/rfc822", "message/global", "text/rfc822-headers"):
            returned.append(_as_text(part))
        elif part.get_content_maintype() == "text" or not part.is_multipart():
            texts.append(_as_text(part))
    if status_blocks is None:  # a delivery-status served as text
        for text in texts:
            if re.search(r"(?mi)^action:", text) and re.search(
                r"(?mi)^(final-recipient|status):", text
            ):
                status_blocks = _blocks_from_text(text)
                break
    if status_blocks:
        reporting, recipients = _rfc3464(status_blocks)
        if recipients:
            quoted = [f"{r.recipient} {r.diagnostic}" for r in recipients]
            return BounceReport("rfc3464", reporting, recipients, _tokens(quoted + returned))
    return _plain(message, "\n".join(texts), returned)


def _walk(message: Message) -> Iterator[Message]:
    """The message's parts, depth first, without descending into returned messages."""
    stack = [message]
    seen = 0
    while stack and seen < MAX_PARTS:
        part = stack.pop()
        seen += 1
        yield part
        if part.get_content_maintype() == "message":
            continue
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            stack.extend(reversed([p for p in payload if isinstance(p, Message)]))


def _as_text(part: Message) -> str:
    payload = part.get_payload()
    if isinstance(payload, list):
        return "\n\n".join(
            m.as_string(policy=compat32) if isinstance(m, Message) else "" for m in payload
        )
    raw = part.get_payload(decode=True)
    if isinstance(raw, bytes):
        charset = part.get_content_charset() or "latin-1"
        try:
            return raw.decode(charset, "replace")
        except LookupError:
            return raw.decode("latin-1")
    return str(payload)


def _status_blocks(part: Message) -> list[list[tuple[str, str]]]:
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = [m for m in payload[: MAX_RECIPIENTS + 1] if isinstance(m, Message)]
        if blocks:
            return [[(k, str(v)) for k, v in m.items()] for m in blocks]
    return _blocks_from_text(_as_text(part))


def _blocks_from_text(text: str) -> list[list[tuple[str, str]]]:
    blocks = re.split(r"\r?\n[ \t]*\r?\n", text.strip())[: MAX_RECIPIENTS + 1]
    parser = HeaderParser(policy=compat32)
    return [[(k, str(v)) for k, v in parser.parsestr(b.strip() + "\n").items()] for b in blocks]


def _rfc3464(blocks: list[list[tuple[str, str]]]) -> tuple[str, tuple[RecipientReport, ...]]:
    reporting = ""
    recipients: list[RecipientReport] = []
    for block in blocks:
        fields = {key.lower(): _unfold(value) for key, value in reversed(block)}
        if "reporting-mta" in fields and not reporting:
            reporting = _typed(fields["reporting-mta"])
        report = _recipient_block(fields)
        if report is not None:
            recipients.append(report)
    return reporting, tuple(recipients[:MAX_RECIPIENTS])


def _recipient_block(fields: dict[str, str]) -> RecipientReport | None:
    status_match = _STATUS_RE.search(fields.get("status", ""))
    status = status_match.group(0) if status_match else ""
    status = _specific(status, fields.get("diagnostic-code", ""))
    action = _action(fields.get("action", ""), status)
    recipient = _typed(fields.get("original-recipient", "")) or _typed(
        fields.get("final-recipient", "")
    )
    if action is None or not (recipient or status or "action" in fields):
        return None
    return RecipientReport(
        action=action,
        status=status,
        diagnostic=_clean(fields.get("diagnostic-code", ""), MAX_DIAGNOSTIC),
        remote_mta=_typed(fields.get("remote-mta", "")),
        recipient=recipient,
    )


def _specific(status: str, diagnostic: str) -> str:
    """A generic `X.0.0` (Exim writes `5.0.0` whatever the next hop said) refined by the status
    the next hop's own reply in the diagnostic gives, when it is of the same class."""
    if not re.fullmatch(r"[245]\.0\.0", status):
        return status
    quoted = _STATUS_RE.search(diagnostic)
    if quoted is not None and quoted.group(1) == status[0]:
        return quoted.group(0)
    return status


def _action(text: str, status: str) -> BounceAction | None:
    word = text.strip().split(" ", 1)[0].lower() if text.strip() else ""
    for action in BOUNCE_ACTIONS:
        if word == action:
            return action
    return _action_of_status(status) if status else None


def _action_of_status(status: str) -> BounceAction:
    if status.startswith("2"):
        return "delivered"
    return "delayed" if status.startswith("4") else "failed"


def _typed(value: str) -> str:
    """'dns; mx.example' → 'mx.example', 'rfc822;a@b' → 'a@b' (RFC 3464 typed fields)."""
    kind, semicolon, rest = value.partition(";")
    return _clean((rest if semicolon else kind).strip().strip("<>"), MAX_FIELD)


def _unfold(value: str) -> str:
    return _SPACES_RE.sub(" ", value).strip()


def _clean(text: str, limit: int) -> str:
    text = printable(_unfold(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tokens(texts: Iterable[str]) -> tuple[FoundToken, ...]:
    seen: dict[FoundToken, None] = {}
    for text in texts:
        for token in find_tokens(text):
            seen.setdefault(token, None)
            if len(seen) >= MAX_TOKENS:
                return tuple(seen)
    return tuple(seen)


# --- Plain-text bounces, read by pattern -------------------------------------------------------

_COPY_RE = re.compile(
    r"^(-+ ?below this line is a copy of the message|-+ ?this is a copy of the message|"
    r"-+ ?(original message|returned message|the original message)|"
    r"original message headers|-+ ?original message follows)",
    re.I | re.M,
)
_QMAIL_RE = re.compile(r"qmail-send program at ([^\s.][^\s]*?)\.?\s", re.I)
_EXIM_RE = re.compile(r"created automatically by mail delivery software", re.I)
_EXCHANGE_RE = re.compile(
    r"#[45]\d\d[ -][245]\.\d{1,3}\.\d{1,3}|#[245]\.\d{1,3}\.\d{1,3}|"
    r"diagnostic information for administrators|did not reach (some or all of )?the intended",
    re.I,
)


def _plain(message: Message, text: str, returned: list[str]) -> BounceReport:
    subject = _unfold(str(message.get("Subject", "")))
    copy = _COPY_RE.search(text)
    report_text, original = (text[: copy.start()], text[copy.start() :]) if copy else (text, "")
    fmt: BounceFormat
    if _QMAIL_RE.search(report_text) or "qmail-send" in report_text.lower():
        fmt, blocks = "qmail", _qmail_blocks(report_text)
    elif _EXCHANGE_RE.search(report_text):
        fmt, blocks = "exchange", _exchange_blocks(report_text)
    elif _EXIM_RE.search(report_text):
        fmt, blocks = "exim", _exim_blocks(report_text)
    else:
        fmt, blocks = "unknown", _generic_blocks(report_text)
    delayed = bool(_DELAY_RE.search(subject)) or bool(_DELAY_RE.search(report_text[:4000]))
    recipients = tuple(
        r for r in (_plain_recipient(address, body, delayed) for address, body in blocks) if r
    )[:MAX_RECIPIENTS]
    tokens = _tokens([report_text, original, *returned])
    return BounceReport(fmt, _plain_reporting_mta(message, report_text), recipients, tokens)


def _plain_recipient(address: str, body: str, delayed: bool) -> RecipientReport | None:
    reply = _REPLY_RE.search(body)
    enhanced = _STATUS_RE.search(body)
    if enhanced is not None:
        status = enhanced.group(0)
    elif reply is not None:
        status = f"{reply.group(1)}.0.0"
    else:
        status = ""
    if not (status or address):
        return None
    action: BounceAction = "delayed" if delayed else "failed"
    remote = _REMOTE_RE.search(body)
    return RecipientReport(
        action=action,
        status=status,
        diagnostic=_clean(_diagnostic(body, reply), MAX_DIAGNOSTIC),
        remote_mta=_clean((remote.group(1) or remote.group(2)).strip("[]"), MAX_FIELD)
        if remote
        else "",
        recipient=_clean(address, MAX_FIELD),
    )


def _diagnostic(body: str, reply: re.Match[str] | None) -> str:
    """From the remote's reply code to the end of the block (Exchange: between # and ##)."""
    hashed = _HASHED_RE.search(body)
    if hashed is not None:
        return hashed.group(1)
    if reply is not None:
        return _QMAIL_TAIL_RE.split(body[reply.start() :], 1)[0]
    said = re.search(r"(?:said|error|reason)\s*:\s*(.+)", body, re.I | re.S)
    return said.group(1) if said else _unfold(body)


def _qmail_blocks(text: str) -> list[tuple[str, str]]:
    """qmail: '<addr>:' on its own line, then the reason, up to a blank line."""
    found = re.findall(r"(?m)^<([^<>\s]+@[^<>\s]+)>:\s*\n((?:.+\n?)*)", text)
    return [(address, body) for address, body in found]


def _exim_blocks(text: str) -> list[tuple[str, str]]:
    """Exim: the address indented two spaces, the reason indented further, per paragraph."""
    found = re.findall(r"(?m)^ {2}(\S+@\S+)\s*\n((?:(?: {3,}|\t).*\n?)*)", text)
    return [(address.strip("<>"), body) for address, body in found]


def _exchange_blocks(text: str) -> list[tuple[str, str]]:
    """Exchange/Outlook: an address line, then the reason with a '#550 5.7.1 ...##' code."""
    blocks: list[tuple[str, str]] = []
    for match in re.finditer(r"#(?:[245]\d\d[ -])?[245]\.\d{1,3}\.\d{1,3}[^\n]*", text):
        before = text[max(0, match.start() - 600) : match.start()]
        addresses = _ADDRESS_RE.findall(before)
        blocks.append((addresses[-1] if addresses else "", match.group(0)))
    return blocks


def _generic_blocks(text: str) -> list[tuple[str, str]]:
    """Anything else (Postfix, sendmail or Domino without a DSN part): the first reply code."""
    reply = _REPLY_RE.search(text)
    if reply is None:
        return []
    line_start = text.rfind("\n", 0, reply.start()) + 1
    paragraph = text[line_start : text.find("\n\n", reply.start()) % (len(text) + 1)]
    addresses = _ADDRESS_RE.findall(text[max(0, line_start - 600) : reply.end()])
    return [(addresses[-1] if addresses else "", paragraph)]


def _plain_reporting_mta(message: Message, text: str) -> str:
    for pattern in (_QMAIL_RE, re.compile(r"generating server:\s*(\S+)", re.I)):
        match = pattern.search(text)
        if match:
            return _clean(match.group(1), MAX_FIELD)
    _, address = parseaddr(str(message.get("From", "")))
    return _clean(address.rpartition("@")[2], MAX_FIELD)
