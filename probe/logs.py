"""Structured logs: readable key=value lines on a terminal, JSON lines with --log-json.

Logs go to stderr so stdout stays clean for `--json -`. Nothing secret is ever passed to a
logger; the redaction processor is a second line of defence for keys that look like secrets.
"""

from __future__ import annotations

import logging
import sys

import structlog

SECRET_KEYS = ("password", "passwd", "secret", "token_secret", "auth")


def _redact(_: object, __: str, event: dict[str, object]) -> dict[str, object]:
    for key in list(event):
        if any(word in key.lower() for word in SECRET_KEYS):
            event[key] = "[redacted]"
    return event


def configure(*, json_lines: bool | None = False, level: str | None = "warning") -> None:
    numeric = logging.getLevelName((level or "warning").upper())
    if not isinstance(numeric, int):
        numeric = logging.WARNING
    renderer = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # aiosmtpd logs every connection at INFO on the stdlib "mail.log" logger: keep it quiet.
    logging.getLogger("mail.log").setLevel(max(numeric, logging.WARNING))
