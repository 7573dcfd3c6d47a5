"""Correlation tokens: how one notification is recognised after it crossed the gateway.

A token is ``np-<run id>-<sequence>``. It is plain lower-case ASCII with no characters that a
mail system escapes, so it survives in a local part, a Subject, a header and a body alike.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from probe.records import FoundIn

RUN_ID_HEX = 10
TOKEN_RE = re.compile(rf"np-([0-9a-f]{{{RUN_ID_HEX}}})-(\d{{1,6}})(?!\d)", re.I)
TOKEN_BYTES_RE = re.compile(TOKEN_RE.pattern.encode(), re.I)
RUN_ID_RE = re.compile(rf"[0-9a-f]{{{RUN_ID_HEX}}}")
LOCAL_PREFIX = "probe+"
BOUNCE_PREFIX = "probe-bounce+"


@dataclass(frozen=True, order=True)
class TokenRef:
    """A parsed token: which run and which notification of it."""

    run_id: str
    seq: int

    def __str__(self) -> str:
        return f"np-{self.run_id}-{self.seq}"


_DOMAIN_RE = re.compile(r"(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9-]{1,63}")


def probe_domain(text: str) -> str:
    """The probe domain, normalised (lower case, no trailing dot); ValueError if it is not one."""
    value = text.strip().lower().rstrip(".")
    if not _DOMAIN_RE.fullmatch(value):
        raise ValueError(f"not a domain name: {text!r}")
    return value


def new_run_id() -> str:
    return secrets.token_hex(RUN_ID_HEX // 2)


def is_run_id(text: str) -> bool:
    return RUN_ID_RE.fullmatch(text) is not None


def make_token(run_id: str, seq: int) -> str:
    return str(TokenRef(run_id, seq))


def recipient_for(token: str, domain: str) -> str:
    return f"{LOCAL_PREFIX}{token}@{domain}"


def sender_for(run_id: str, domain: str) -> str:
    """The envelope sender: bounces for this run come back to the sink, marked as bounces."""
    return f"{BOUNCE_PREFIX}{run_id}@{domain}"


def find_tokens(text: str) -> list[TokenRef]:
    """Every distinct token in `text`, in order of first appearance."""
    return _unique(TokenRef(m.group(1).lower(), int(m.group(2))) for m in TOKEN_RE.finditer(text))


def find_tokens_in_bytes(data: bytes) -> list[TokenRef]:
    return _unique(
        TokenRef(m.group(1).decode().lower(), int(m.group(2)))
        for m in TOKEN_BYTES_RE.finditer(data)
    )


def split_address(address: str) -> tuple[str, str]:
    """(local part, lower-cased domain) of an address; the domain is '' when there is none."""
    address = address.strip().strip("<>")
    local, at, domain = address.rpartition("@")
    if not at:
        return address, ""
    return local, domain.lower().rstrip(".")


def _unique(refs: Iterable[TokenRef]) -> list[TokenRef]:
    seen: dict[TokenRef, None] = {}
    for ref in refs:
        seen.setdefault(ref, None)
    return list(seen)


def locate_tokens(rcpts: Iterable[str], content: bytes) -> list[tuple[TokenRef, FoundIn]]:
    """Find the tokens a received message carries, and where each one survived.

    The envelope recipient is trusted first: gateways that rebuild a message from a template
    usually keep it. Only when no recipient carries a token is the message itself parsed:
    the X-Probe-Token header, the (decoded) Subject, the decoded text parts, then the raw bytes.
    """
    found: dict[TokenRef, FoundIn] = {}
    for rcpt in rcpts:
        local, _ = split_address(rcpt)
        if local.lower().startswith(LOCAL_PREFIX):
            for ref in find_tokens(local):
                found.setdefault(ref, "envelope")
    if found:
        return list(found.items())
    try:
        message = BytesParser(policy=policy.default).parsebytes(content)
        for value in message.get_all("X-Probe-Token", []):
            for ref in find_tokens(str(value)):
                found.setdefault(ref, "header")
        for ref in find_tokens(str(message.get("Subject", ""))):
            found.setdefault(ref, "subject")
        for text in _text_parts(message):
            for ref in find_tokens(text):
                found.setdefault(ref, "body")
    except Exception:  # a hostile or broken message: fall back to the raw bytes below
        pass
    if not found:
        for ref in find_tokens_in_bytes(content):
            found.setdefault(ref, "raw")
    return list(found.items())


def _text_parts(message: EmailMessage) -> Iterator[str]:
    for part in message.walk():
        if part.get_content_maintype() != "text":
            continue
        try:
            yield part.get_content()
        except (LookupError, ValueError, AssertionError):
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                yield payload.decode("latin-1")
