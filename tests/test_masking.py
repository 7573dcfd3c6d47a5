"""Hiding a secret wherever a gateway could echo it: raw, in base64, in a legacy encoding."""

from __future__ import annotations

import base64

from probe.masking import REDACTED, hide_secret

PASSWORD = "Kennwort-pässlich-7f1c"  # not ASCII: a Windows gateway may echo it in cp1252


def test_a_secret_echoed_in_cp1252_bytes_is_found_raw_and_in_base64() -> None:
    cp1252 = PASSWORD.encode("cp1252")
    as_received = f"250 ok {cp1252.decode('utf-8', 'surrogateescape')} ok"  # as aiosmtplib
    assert hide_secret(as_received, PASSWORD) == (f"250 ok {REDACTED} ok", 1)
    blob = base64.b64encode(b"\0ops\0" + cp1252).decode()
    assert hide_secret(f"235 {blob}", PASSWORD) == (f"235 {REDACTED}", 1)


def test_a_secret_is_still_found_as_itself_and_nothing_else_is_touched() -> None:
    assert hide_secret(f"550 {PASSWORD}", PASSWORD) == (f"550 {REDACTED}", 1)
    assert hide_secret("nothing here", PASSWORD) == ("nothing here", 0)
    assert hide_secret("ascii only", "ascii-secret") == ("ascii only", 0)
