"""Monitoring-plugin output: one line `NOTIFYPROBE <STATE> - <summary> | perfdata`.

Nagios, Icinga, Checkmk and Zabbix (and Windows agents such as NSClient++) read a plugin's first
line of stdout and its exit code (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN). Perfdata follows the
plugin format `'label'=value[UOM];warn;crit;min;max`. Pure formatting: no clock, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from probe.diagnosis import Diagnosis, PossibleIssue, next_hop_line
from probe.records import RunRecord
from probe.verdict import Severity, Verdict, seq_ranges

STATE_WORD = {
    Severity.OK: "OK",
    Severity.WARNING: "WARNING",
    Severity.CRITICAL: "CRITICAL",
    Severity.UNKNOWN: "UNKNOWN",
}

_LIMIT_RE = re.compile(
    r"^\s*(loss)\s*=\s*(\d+(?:\.\d+)?)\s*%?\s*$|^\s*(latency)\s*=\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$",
    re.I,
)


@dataclass(frozen=True)
class PluginThresholds:
    """One threshold level: loss in percent and the slowest delivery in seconds, each optional.

    Plugin semantics: a value *above* the limit raises the state (Nagios range `N` = 0..N).
    """

    loss_pct: float | None = None
    latency_s: float | None = None

    @classmethod
    def parse(cls, text: str) -> PluginThresholds:
        """`loss=5%,latency=2s` (either part optional; latency also in `ms`)."""
        loss: float | None = None
        latency: float | None = None
        for part in (p for p in text.split(",") if p.strip()):
            match = _LIMIT_RE.match(part)
            if not match:
                raise ValueError(
                    f"bad threshold {part.strip()!r}: use loss=PERCENT%, latency=SECONDS[s|ms]"
                )
            if match.group(1):
                loss = float(match.group(2))
                if loss > 100:
                    raise ValueError(f"loss threshold above 100%: {part.strip()!r}")
            else:
                latency = float(match.group(4))
                if (match.group(5) or "s").lower() == "ms":
                    latency /= 1000.0
        return cls(loss_pct=loss, latency_s=latency)


@dataclass(frozen=True)
class Measures:
    """What the thresholds are compared with, derived from the judged run."""

    sent: int
    accepted: int
    delivered: int
    loss_pct: float | None  # None when nothing was sent
    latency_max_s: float | None  # None when nothing arrived
    latency_median_s: float | None

    @classmethod
    def of(cls, record: RunRecord, verdict: Verdict) -> Measures:
        latencies = sorted(
            n.latency_s for n in record.burst if n.attempted and n.latency_s is not None
        )
        loss = 100.0 * (verdict.sent - verdict.delivered) / verdict.sent if verdict.sent else None
        median = None
        if latencies:
            mid = len(latencies) // 2
            median = (
                latencies[mid] if len(latencies) % 2 else (latencies[mid - 1] + latencies[mid]) / 2
            )
        return cls(
            sent=verdict.sent,
            accepted=verdict.accepted,
            delivered=verdict.delivered,
            loss_pct=loss,
            latency_max_s=latencies[-1] if latencies else None,
            latency_median_s=median,
        )


@dataclass(frozen=True)
class PluginResult:
    state: Severity
    line: str


def threshold_state(
    m: Measures, warning: PluginThresholds, critical: PluginThresholds
) -> tuple[Severity, list[str]]:
    """The state the thresholds alone give, and a short phrase for each one crossed."""
    crossed: list[str] = []
    state = Severity.OK
    for level, limits in ((Severity.CRITICAL, critical), (Severity.WARNING, warning)):
        if limits.loss_pct is not None and m.loss_pct is not None and m.loss_pct > limits.loss_pct:
            crossed.append(f"loss {m.loss_pct:.0f}% > {level.name.lower()} {limits.loss_pct:g}%")
            state = max(state, level)
            break
    for level, limits in ((Severity.CRITICAL, critical), (Severity.WARNING, warning)):
        worst = m.latency_max_s
        if limits.latency_s is not None and worst is not None and worst > limits.latency_s:
            crossed.append(f"latency {worst:.3f}s > {level.name.lower()} {limits.latency_s:g}s")
            state = max(state, level)
            break
    return state, crossed


def plugin_result(
    record: RunRecord,
    verdict: Verdict,
    warning: PluginThresholds = PluginThresholds(),
    critical: PluginThresholds = PluginThresholds(),
) -> PluginResult:
    """The plugin line and state: the worse of the verdict's severity and the thresholds.

    An UNKNOWN verdict (the probe could not judge) stays UNKNOWN: thresholds on a run that
    cannot be judged would blame the gateway for the probe's own trouble.
    """
    m = Measures.of(record, verdict)
    limits_state, crossed = threshold_state(m, warning, critical)
    if verdict.severity is Severity.UNKNOWN:
        state = Severity.UNKNOWN
    else:
        state = Severity(max(verdict.severity, limits_state))
    summary = f"{verdict.pattern.value}: {verdict.summary}"
    if crossed:
        summary += "; " + ", ".join(crossed)
    return PluginResult(
        state,
        f"NOTIFYPROBE {STATE_WORD[state]} - {_clean(summary)} | {perfdata(m, warning, critical)}",
    )


def diagnosis_lines(diagnosis: Diagnosis | None, possible: Sequence[PossibleIssue]) -> list[str]:
    """The plugin's long output (lines after the first): a firm diagnosis in one line with its
    runbook, or each possible known issue in one line with what would confirm it."""
    if diagnosis is not None:
        return [
            _clean(
                f"diagnosis: [{diagnosis.signature}] {diagnosis.title} "
                f"({diagnosis.confidence.word} confidence): {diagnosis.cause}; "
                f"what to do: {diagnosis.runbook}"
            )
        ]
    return [_clean(f"possible known issue: {p.line}") for p in possible]


def next_hop_lines(verdict: Verdict) -> list[str]:
    """The plugin's long output about the losses a next hop refused: where, and what to check
    (no issue of the gateway is offered for those)."""
    line = next_hop_line(verdict)
    return [_clean(f"refused beyond the gateway: {line}")] if line else []


def bounce_lines(record: RunRecord) -> list[str]:
    """The plugin's long output about what came back: one line per distinct report, with the
    notifications it names, so a pager shows the status and the diagnostic."""
    groups: dict[str, list[int]] = {}
    for n in record.burst:
        if (n.bounced or n.delayed) and n.bounce is not None:
            groups.setdefault(n.bounce.describe(), []).append(n.seq)
    return [_clean(f"seq {seq_ranges(seqs)}: {text}") for text, seqs in groups.items()]


def unknown_line(message: str) -> str:
    """The line for a probe that could not run at all (bad config, busy port)."""
    return f"NOTIFYPROBE UNKNOWN - {_clean(message)}"


def perfdata(m: Measures, warning: PluginThresholds, critical: PluginThresholds) -> str:
    total = str(m.sent)
    items = [
        _perf("sent", str(m.sent), "", None, None, "0", ""),
        _perf("accepted", str(m.accepted), "", None, None, "0", total),
        _perf("delivered", str(m.delivered), "", None, None, "0", total),
        _perf("loss", _num(m.loss_pct), "%", warning.loss_pct, critical.loss_pct, "0", "100"),
        _perf(
            "latency_max",
            _num(m.latency_max_s),
            "s",
            warning.latency_s,
            critical.latency_s,
            "0",
            "",
        ),
        _perf("latency_median", _num(m.latency_median_s), "s", None, None, "0", ""),
    ]
    return " ".join(items)


def _perf(
    label: str,
    value: str,
    uom: str,
    warn: float | None,
    crit: float | None,
    low: str,
    high: str,
) -> str:
    unit = uom if value != "U" else ""
    fields = [f"'{label}'={value}{unit}", _num(warn, ""), _num(crit, ""), low, high]
    return ";".join(fields).rstrip(";")


def _num(value: float | None, missing: str = "U") -> str:
    if value is None:
        return missing
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def _clean(text: str) -> str:
    """One line, and no `|`: everything after a pipe would be read as perfdata."""
    return " ".join(text.replace("|", "/").split())
