"""Hiding a secret in text: raw, and inside any base64 run that holds it (an AUTH exchange).

Shared by what records a transcript (delivery) and what writes a report or a bundle
(reporting): one secret, one way of hiding it, wherever it could surface.
"""

from __future__ import annotations

import base64
import binascii
import re

REDACTED = "[redacted]"
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{4,}={0,2}")


# What a gateway on Windows may echo a non-ASCII secret in, beside UTF-8: its bytes then reach the
# probe as text decoded with surrogateescape (as aiosmtplib gives them), and the report shows
# them read as Windows-1252, so the secret itself.
LEGACY_ENCODINGS = ("cp1252", "latin-1")


def hide_secret(text: str, secret: str) -> tuple[str, int]:
    """`text` with every trace of `secret` replaced by REDACTED, and how many were found.

    Raw, and inside any base64 run that decodes to bytes holding it: the AUTH PLAIN blob
    (`\\0user\\0password`), AUTH LOGIN, or any other, at whatever alignment the secret sits
    in the encoded bytes. A server that echoes a credential in a later reply must not get it
    into the ledger or a bundle that way, in UTF-8 or in a legacy encoding (LEGACY_ENCODINGS).
    """
    if not secret:
        return text, 0
    spellings, blobs = _spellings(secret)
    found = 0
    for spelling in spellings:
        found += text.count(spelling)
        text = text.replace(spelling, REDACTED)

    def encoded(match: re.Match[str]) -> str:
        nonlocal found
        run = match.group(0)
        try:
            decoded = base64.b64decode(run + "=" * (-len(run) % 4), validate=False)
        except (binascii.Error, ValueError):
            return run
        if not any(blob in decoded for blob in blobs):
            return run
        found += 1
        return REDACTED

    return _BASE64_RUN.sub(encoded, text), found


def _spellings(secret: str) -> tuple[list[str], list[bytes]]:
    """The secret as text may hold it (itself, and its legacy bytes as surrogateescape text),
    and the bytes it may be sent as."""
    spellings, blobs = [secret], [secret.encode("utf-8")]
    for encoding in LEGACY_ENCODINGS:
        try:
            data = secret.encode(encoding)
        except UnicodeEncodeError:
            continue
        if data not in blobs:
            blobs.append(data)
            spellings.append(data.decode("utf-8", "surrogateescape"))
    return spellings, blobs
