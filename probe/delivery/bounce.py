"""Delivery reports: read what a returned notification says happened to it (placeholder: RFC 3464
only; the full reader with the non-standard formats replaces it)."""

from __future__ import annotations

from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import Message
from typing import Literal

from probe.correlation import FoundToken, find_tokens_in_bytes
from probe.records import BOUNCE_ACTIONS, BounceAction, printable

BounceFormat = Literal["rfc3464", "exim", "qmail", "exchange", "unknown"]


@dataclass(frozen=True)
class RecipientReport:
    action: BounceAction
    status: str
    diagnostic: str
    remote_mta: str
    recipient: str


@dataclass(frozen=True)
class BounceReport:
    format: BounceFormat
    reporting_mta: str
    recipients: tuple[RecipientReport, ...]
    returned_tokens: tuple[FoundToken, ...]


def looks_like_bounce(mail_from: str, content: bytes) -> bool:
    head = content[:8192].lower()
    return b"report-type=delivery-status" in head.replace(b'"', b"")


def read_bounce(content: bytes) -> BounceReport:
    tokens = tuple(find_tokens_in_bytes(content[: 256 * 1024]))
    try:
        message = message_from_bytes(content[: 256 * 1024], policy=policy.compat32)
        reporting = ""
        recipients: list[RecipientReport] = []
        for part in message.walk():
            if part.get_content_type() != "message/delivery-status":
                continue
            payload = part.get_payload()
            if not isinstance(payload, list) or not payload:
                continue
            blocks: list[Message] = [b for b in payload if isinstance(b, Message)]
            if not blocks:
                continue
            reporting = _value(blocks[0].get("Reporting-MTA", ""))
            for block in blocks[1:]:
                action = str(block.get("Action", "")).strip().lower()
                if action not in BOUNCE_ACTIONS:
                    continue
                recipients.append(
                    RecipientReport(
                        action=next(a for a in BOUNCE_ACTIONS if a == action),
                        status=str(block.get("Status", "")).strip(),
                        diagnostic=printable(_value(block.get("Diagnostic-Code", ""))),
                        remote_mta=_value(block.get("Remote-MTA", "")),
                        recipient=_value(
                            block.get("Original-Recipient") or block.get("Final-Recipient", "")
                        ),
                    )
                )
        fmt: BounceFormat = "rfc3464" if recipients else "unknown"
        return BounceReport(fmt, reporting, tuple(recipients), tokens)
    except Exception:
        return BounceReport("unknown", "", (), tokens)


def _value(field: object) -> str:
    text = " ".join(str(field or "").split())
    kind, sep, rest = text.partition(";")
    return rest.strip() if sep and " " not in kind.strip() else text
