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


def hide_secret(text: str, secret: str) -> tuple[str, int]:
    """`text` with every trace of `secret` replaced by REDACTED, and how many were found.

    Raw, and inside any base64 run that decodes to bytes holding it: the AUTH PLAIN blob
    (`\\0user\\0password`), AUTH LOGIN, or any other, at whatever alignment the secret sits
    in the encoded bytes. A server that echoes a credential in a later reply must not get it
    into the ledger or a bundle that way.
    """
    if not secret:
        return text, 0
    found = text.count(secret)
    text = text.replace(secret, REDACTED)
    raw = secret.encode("utf-8")

    def encoded(match: re.Match[str]) -> str:
        nonlocal found
        run = match.group(0)
        try:
            decoded = base64.b64decode(run + "=" * (-len(run) % 4), validate=False)
        except (binascii.Error, ValueError):
            return run
        if raw not in decoded:
            return run
        found += 1
        return REDACTED

    return _BASE64_RUN.sub(encoded, text), found
