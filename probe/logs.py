"""Structured logs: readable key=value lines on a terminal, JSON lines with --log-json.

Logs go to stderr so stdout stays clean for `--json -`. Nothing secret is ever passed to a
logger; the redaction processor is a second line of defence for keys that look like secrets.
"""

from __future__ import annotations

import logging
import sys
from collections import deque
from typing import Any

import structlog
from structlog.typing import EventDict

LOG_LEVELS = ("debug", "info", "warning", "error")  # what --log-level and log_level accept
SECRET_KEYS = ("password", "passwd", "secret", "token_secret", "auth")
_PLAIN = (str, int, float, bool, type(None))  # event values kept as they are; others as str()


def _redact(_: object, __: str, event: EventDict) -> EventDict:
    for key in list(event):
        if any(word in key.lower() for word in SECRET_KEYS):
            event[key] = "[redacted]"
    return event


class LogCapture:
    """The process's own log events (info and up), kept in memory for the evidence bundle.

    Bounded: a long run keeps its newest events.
    """

    def __init__(self, limit: int = 5000):
        self._events: deque[dict[str, Any]] = deque(maxlen=limit)

    def __call__(self, _: object, __: str, event: EventDict) -> EventDict:
        self._events.append({k: v if isinstance(v, _PLAIN) else str(v) for k, v in event.items()})
        return event

    def clear(self) -> None:
        self._events.clear()

    def events(self) -> list[dict[str, Any]]:
        return list(self._events)

    def events_of(self, run_id: str) -> list[dict[str, Any]]:
        """The events that name one run: what its bundle keeps when several runs share the
        process (watch)."""
        return [e for e in self._events if e.get("run_id") == run_id]


CAPTURE = LogCapture()
_LEVELS = {
    "debug": 10,
    "info": 20,
    "warn": 30,
    "warning": 30,
    "error": 40,
    "exception": 40,
    "critical": 50,
}


def _threshold(numeric: int) -> structlog.types.Processor:
    """Drop what is below the user's level for display, after it was captured."""

    def processor(_: object, method: str, event: EventDict) -> EventDict:
        if _LEVELS.get(method, 30) < numeric:
            raise structlog.DropEvent
        return event

    return processor


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
            CAPTURE,
            _threshold(numeric),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(min(numeric, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # aiosmtpd logs every connection at INFO on the stdlib "mail.log" logger: keep it quiet.
    logging.getLogger("mail.log").setLevel(max(numeric, logging.WARNING))
