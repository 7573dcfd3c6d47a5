"""The burst settings, defined once: size, shape over SMTP sessions, pace, and the caps.

`notifyprobe burst` and `postflight` options, `watch` target keys and the benchmark all build one
`BurstSettings`; its defaults are the documented defaults everywhere, and the anti-mail-bomb caps
are checked here, so no caller can get around them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from probe.delivery.breaker import DEFAULT_BREAKER
from probe.errors import UsageError

DEFAULT_MAX_RATE = 200.0  # notifications per second, all connections together
MAX_RATE_CAP = 1_000.0  # msgs/s: above this a probe is a load test, not a probe
MAX_COUNT = 10_000  # notifications in one burst, whoever asks (burst, watch, postflight)


def _help(text: str) -> dict[str, str]:
    return {"help": text}


# The notification gap (seconds between the starts of two notifications of one burst) is
# `--gap` and the watch key `gap`; its older spellings, still accepted, are kept here alone.
# (A watch's `interval` is the time between two bursts: another concept, another word.)
GAP_FLAG, GAP_KEY = "--gap", "gap"
OLD_GAP_SPELLINGS = {"--interval": GAP_FLAG, "pacing": GAP_KEY}


@dataclass(frozen=True)
class BurstSettings:
    """How one burst is sent. Each field's help is the one the CLI shows."""

    count: int = field(default=10, metadata=_help("notifications"))
    concurrency: int = field(default=1, metadata=_help("SMTP connections used at once"))
    per_session: int = field(
        default=5,
        metadata=_help(
            "notifications per SMTP session, then a new session: a gateway sees ordinary "
            "traffic, not one long session tripping its per-connection limit"
        ),
    )
    notification_gap_s: float = field(  # the notification gap: `--gap`, watch key `gap`
        default=0.0, metadata=_help("seconds between the starts of two notifications")
    )
    step_timeout_s: float = field(
        default=10.0,
        metadata=_help(
            "longest wait for each SMTP reply; a gateway silent that long has stalled at that phase"
        ),
    )
    breaker: int = field(
        default=DEFAULT_BREAKER,
        metadata=_help(
            "circuit breaker: once N notifications in a row got no SMTP answer to judge "
            "(stalled, connection refused, hung up, a reply that is not SMTP), do not attempt "
            "the rest; they are recorded as not attempted, neither refused nor lost (0: never "
            "stop)"
        ),
    )
    max_rate: float = field(
        default=DEFAULT_MAX_RATE,
        metadata=_help(
            f"never submit faster than this, all connections together (at most {MAX_RATE_CAP:g})"
        ),
    )
    control: bool = field(
        default=True, metadata=_help("send a control message straight to the sink")
    )
    helo: str | None = field(default=None, metadata=_help("the name given in EHLO"))

    def __post_init__(self) -> None:
        """The anti-mail-bomb caps, for every caller: burst, watch, postflight, demo."""
        if not 1 <= self.count <= MAX_COUNT:
            raise UsageError(f"count {self.count} (--count) is outside 1..{MAX_COUNT}")
        if self.concurrency < 1 or self.per_session < 1:
            raise UsageError("concurrency and notifications per session must be at least 1")
        if not 0 < self.max_rate <= MAX_RATE_CAP:
            raise UsageError(
                f"max rate {self.max_rate:g}/s (--max-rate) must be above 0 and at most "
                f"{MAX_RATE_CAP:g}"
            )
        if self.breaker < 0:
            raise UsageError(f"breaker {self.breaker} (--breaker) cannot be negative")
        if self.notification_gap_s < 0 or self.step_timeout_s <= 0:
            raise UsageError("the gap between notifications and the step timeout must be positive")

    @property
    def spacing_s(self) -> float:
        """Seconds between the starts of two notifications: the gap, or the rate cap."""
        return max(self.notification_gap_s, 1.0 / self.max_rate)

    @classmethod
    def describe(cls, name: str) -> str:
        """A field's help with its default, as `--help` shows it."""
        (f,) = (f for f in fields(cls) if f.name == name)
        default = "none" if f.default is None else format(f.default, "g")
        if isinstance(f.default, bool):
            default = "yes" if f.default else "no"
        return f"{f.metadata['help']} (default: {default})"
