"""Correlation tokens: how one notification is recognised after it crossed the gateway.

A token is ``np-<run id>-<sequence>-<mac>``. It is plain lower-case ASCII with no characters
that a mail system escapes, so it survives in a local part, a Subject, a header and a body
alike. Run ids are not secret: anyone who sees one notification knows its run. The MAC, keyed by
the ledger's own secret (`TokenKey`), is what stops that person from forging the others: a
token whose MAC does not check is never counted as a delivery.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

RUN_ID_HEX = 10
MAC_CHARS = 8  # base32: 40 bits, out of reach of guessing within any mail flow
TOKEN_RE = re.compile(rf"np-([0-9a-f]{{{RUN_ID_HEX}}})-(\d{{1,6}})-([a-z2-7]{{{MAC_CHARS}}})", re.I)
TOKEN_BYTES_RE = re.compile(TOKEN_RE.pattern.encode(), re.I)
LOCAL_PREFIX = "probe+"
BOUNCE_PREFIX = "probe-bounce+"


@dataclass(frozen=True, order=True)
class TokenRef:
    """A parsed token: which run and which notification of it."""

    run_id: str
    seq: int

    def __str__(self) -> str:
        return f"np-{self.run_id}-{self.seq}"


@dataclass(frozen=True)
class FoundToken:
    """A token as found in a message: which notification it names, and the MAC it carries."""

    ref: TokenRef
    mac: str


class TokenKey:
    """The secret that signs this ledger's tokens: only the probe that holds it can mint one."""

    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise ValueError("a token key needs at least 16 bytes")
        self._secret = secret

    @classmethod
    def generate(cls) -> TokenKey:
        return cls(secrets.token_bytes(32))

    def mac(self, run_id: str, seq: int) -> str:
        digest = hmac.new(self._secret, f"{run_id}-{seq}".encode(), hashlib.sha256).digest()
        return base64.b32encode(digest).decode()[:MAC_CHARS].lower()

    def token(self, run_id: str, seq: int) -> str:
        return f"np-{run_id}-{seq}-{self.mac(run_id, seq)}"

    def verify(self, found: FoundToken) -> bool:
        return hmac.compare_digest(found.mac, self.mac(found.ref.run_id, found.ref.seq))

    def __repr__(self) -> str:
        return "TokenKey(<secret>)"


_DOMAIN_RE = re.compile(r"(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9-]{1,63}")


def probe_domain(text: str) -> str:
    """The probe domain, normalised (lower case, no trailing dot); ValueError if it is not one."""
    value = text.strip().lower().rstrip(".")
    if not _DOMAIN_RE.fullmatch(value):
        raise ValueError(f"not a domain name: {text!r}")
    return value


def new_run_id() -> str:
    return secrets.token_hex(RUN_ID_HEX // 2)


def recipient_for(token: str, domain: str) -> str:
    return f"{LOCAL_PREFIX}{token}@{domain}"


def sender_for(token: str, domain: str) -> str:
    """A notification's own envelope sender (VERP, as mailing-list managers use it): a bounce
    comes back to the sink at an address that names the notification it returns, whatever
    format the report is in."""
    return f"{BOUNCE_PREFIX}{token}@{domain}"


def is_bounce_address(address: str) -> bool:
    """An address of the probe's envelope senders: what arrives there is a report, not mail."""
    local, _ = split_address(address)
    return local.lower().startswith(BOUNCE_PREFIX)


def bounce_address_tokens(rcpts: Iterable[str]) -> list[FoundToken]:
    """The tokens named by the bounce addresses among `rcpts` (MACs not checked here)."""
    found: list[FoundToken] = []
    for rcpt in rcpts:
        if is_bounce_address(rcpt):
            found.extend(find_tokens(split_address(rcpt)[0]))
    return _unique(found)


def bounce_address_run(rcpts: Iterable[str]) -> str | None:
    """The run a bounce address names, whether or not its token checks (a report that names no
    notification is still kept with its run), or in the older run-wide form
    (`probe-bounce+<run>`)."""
    for rcpt in rcpts:
        if not is_bounce_address(rcpt):
            continue
        local = split_address(rcpt)[0][len(BOUNCE_PREFIX) :].lower()
        tokens = find_tokens(local)
        if tokens:
            return tokens[0].ref.run_id
        if re.fullmatch(rf"[0-9a-f]{{{RUN_ID_HEX}}}", local):
            return local
    return None


def find_tokens(text: str) -> list[FoundToken]:
    """Every distinct token in `text`, in order of first appearance (MACs not checked here)."""
    return _unique(_found(*m.groups()) for m in TOKEN_RE.finditer(text))


def find_tokens_in_bytes(data: bytes) -> list[FoundToken]:
    return _unique(_found(*(g.decode() for g in m.groups())) for m in TOKEN_BYTES_RE.finditer(data))


def _found(run_id: str, seq: str, mac: str) -> FoundToken:
    return FoundToken(TokenRef(run_id.lower(), int(seq)), mac.lower())


def split_address(address: str) -> tuple[str, str]:
    """(local part, lower-cased domain) of an address; the domain is '' when there is none."""
    address = address.strip().strip("<>")
    local, at, domain = address.rpartition("@")
    if not at:
        return address, ""
    return local, domain.lower().rstrip(".")


def _unique(found: Iterable[FoundToken]) -> list[FoundToken]:
    seen: dict[FoundToken, None] = {}
    for token in found:
        seen.setdefault(token, None)
    return list(seen)


def locate_tokens(rcpts: Iterable[str], content: bytes) -> list[tuple[FoundToken, str]]:
    """Find the tokens a received message carries, and where each one survived.

    The envelope recipient is trusted first: gateways that rebuild a message from a template
    usually keep it. Only when no recipient carries a token is the message itself parsed:
    the X-Probe-Token header, the (decoded) Subject, the decoded text parts, then the raw bytes.
    """
    found: dict[FoundToken, str] = {}
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
