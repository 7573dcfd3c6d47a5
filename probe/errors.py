"""Errors the probe reports as a one-line message with exit code 3 (UNKNOWN)."""

from __future__ import annotations


class ProbeError(Exception):
    """The probe itself could not do its job: bad input, a busy port, an unreadable ledger.

    The CLI prints `str(error)` on one line and exits 3; it never shows a traceback for these.
    """


class UsageError(ProbeError):
    """An argument or a configuration value is wrong."""
