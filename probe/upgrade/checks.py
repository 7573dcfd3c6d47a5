"""One upgrade check's outcome, and the single verdict many checks add up to.

Preflight, postflight and drift each run a list of independent checks; an operator needs every
one of them (what was found, why it matters, what to do) and one answer with an exit code a
script or a monitoring system can act on. A check that could not run is `not_run` and counts for
nothing: the reason says why, so a skipped check is never mistaken for a passed one, and a run in
which no check could run is `not_run` as a whole (exit 3), never a pass. Every view (text, JSON,
nagios, the bundle's reports) opens with that one status, then the status of each part
(delivery, modules, leftovers, versions, reboot, …), so no view can lead with a part's pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, get_args


class Status(str, Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    NOT_RUN = "not_run"


# What a check is about, in the order every view lists the parts: postflight's delivery verdict,
# modules, leftovers, versions and reboot; preflight's files in use, reboot and backup; drift's.
Part = Literal[
    "delivery",
    "modules",
    "leftovers",
    "versions",
    "files in use",
    "reboot",
    "backup",
    "files",
    "registry",
    "share",
    "",
]
PART_ORDER: tuple[Part, ...] = tuple(part for part in get_args(Part) if part)

_RANK = {Status.NOT_RUN: 0, Status.PASS: 0, Status.WARN: 1, Status.FAIL: 2}
_WORD = {Status.PASS: "pass", Status.WARN: "WARN", Status.FAIL: "FAIL", Status.NOT_RUN: "not run"}


@dataclass(frozen=True)
class Check:
    """One finding: `name` says what was checked, `reason` what was seen, `fix` what to do."""

    name: str
    status: Status
    reason: str
    fix: str = ""
    evidence: tuple[str, ...] = ()
    part: Part = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "part": self.part or None,
            "status": self.status.value,
            "reason": self.reason,
            "fix": self.fix or None,
            "evidence": list(self.evidence),
        }


def overall(checks: Iterable[Check]) -> Status:
    """The worst status of the checks that ran. When none ran (all skipped, or none at all)
    it is `not_run`: nothing was found wrong, but nothing was found right either."""
    ran = [c.status for c in checks if c.status is not Status.NOT_RUN]
    if not ran:
        return Status.NOT_RUN
    return max(ran, key=_RANK.__getitem__)


def exit_code(status: Status) -> int:
    """Monitoring-plugin convention: 0 pass, 1 warn, 2 fail, 3 unknown (nothing could be
    checked, like the probe's own failure)."""
    return 3 if status is Status.NOT_RUN else _RANK[status]


def parts(checks: Sequence[Check]) -> dict[str, Status]:
    """Each part's own status (the worst of its checks), in the fixed order of the views."""
    named = [p for p in PART_ORDER if any(c.part == p for c in checks)]
    return {p: overall(c for c in checks if c.part == p) for p in named}


def headline(title: str, checks: Sequence[Check]) -> str:
    """`notifyprobe postflight meetingplace: FAIL · …`: the first line of the text report and the
    summary every other view repeats."""
    status = overall(checks)
    counts = {s: sum(1 for c in checks if c.status is s) for s in Status}
    return (
        f"notifyprobe {title}: {_WORD[status].upper()} · {counts[Status.PASS]} pass, "
        f"{counts[Status.WARN]} warn, {counts[Status.FAIL]} fail, {counts[Status.NOT_RUN]} not run"
    )


def parts_line(checks: Sequence[Check]) -> str | None:
    found = parts(checks)
    if not found:
        return None
    return "parts: " + " · ".join(f"{p} {_WORD[s].lower()}" for p, s in found.items())


def report_dict(command: str, checks: Sequence[Check], **extra: Any) -> dict[str, Any]:
    """The JSON report: its overall status first, then each part's, then the rest."""
    status = overall(checks)
    return {
        "status": status.value,
        "command": command,
        "exit_code": exit_code(status),
        "parts": {p: s.value for p, s in parts(checks).items()},
        **extra,
        "checks": [c.to_dict() for c in checks],
    }


def report_text(title: str, checks: Sequence[Check], tables: Sequence[str] = ()) -> str:
    lines = [headline(title, checks)]
    if (line := parts_line(checks)) is not None:
        lines.append(f"  {line}")
    for check in checks:
        lines.append(f"  {_WORD[check.status]:<8} {check.name}: {check.reason}")
        lines.extend(f"           {line}" for line in check.evidence)
        if check.fix and check.status in (Status.WARN, Status.FAIL):
            lines.append(f"           fix: {check.fix}")
    lines.extend(tables)
    return "\n".join(lines)


PLUGIN_STATE = {
    Status.PASS: "OK",
    Status.WARN: "WARNING",
    Status.FAIL: "CRITICAL",
    Status.NOT_RUN: "UNKNOWN",
}


def report_nagios(title: str, checks: Sequence[Check]) -> str:
    """The monitoring-plugin view: `NOTIFYPROBE <STATE> - <command>: <status> …`, the worst
    checks named, one long-output line per check that is not a pass, perfdata by status."""
    status = overall(checks)
    bad = [c for c in checks if c.status in (Status.FAIL, Status.WARN)]
    bad.sort(key=lambda c: -_RANK[c.status])
    summary = f"{title}: {_WORD[status].lower()}"
    if (line := parts_line(checks)) is not None:
        summary += f" ({line.removeprefix('parts: ')})"
    if bad:
        summary += f"; {bad[0].name}: {bad[0].reason}"
    counts = {s: sum(1 for c in checks if c.status is s) for s in Status}
    perf = " ".join(f"'{s.value}'={counts[s]};;;0;{len(checks)}" for s in Status)
    long_output = [
        _one_line(f"{_WORD[c.status]} {c.name}: {c.reason}" + (f"; fix: {c.fix}" if c.fix else ""))
        for c in bad
    ]
    first = f"NOTIFYPROBE {PLUGIN_STATE[status]} - {_one_line(summary)} | {perf}"
    return "\n".join([first, *long_output])


def _one_line(text: str) -> str:
    """No newline and no `|` (everything after a pipe is read as perfdata)."""
    return " ".join(text.replace("|", "/").split())
