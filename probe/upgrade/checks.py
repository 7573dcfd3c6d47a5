"""One upgrade check's outcome, and the single verdict many checks add up to.

Preflight, postflight and drift each run a list of independent checks; an operator needs every
one of them (what was found, why it matters, what to do) and one answer with an exit code a
script or a monitoring system can act on. A check that could not run is `not_run` and counts for
nothing: the reason says why, so a skipped check is never mistaken for a passed one, and a run in
which no check could run is `not_run` as a whole (exit 3), never a pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Status(str, Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    NOT_RUN = "not_run"


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
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


def report_dict(command: str, checks: Sequence[Check], **extra: Any) -> dict[str, Any]:
    status = overall(checks)
    return {
        "command": command,
        "status": status.value,
        "exit_code": exit_code(status),
        **extra,
        "checks": [c.to_dict() for c in checks],
    }


def report_text(title: str, checks: Sequence[Check]) -> str:
    status = overall(checks)
    counts = {s: sum(1 for c in checks if c.status is s) for s in Status}
    lines = [
        f"notifyprobe {title}: {_WORD[status].upper()} · {counts[Status.PASS]} pass, "
        f"{counts[Status.WARN]} warn, {counts[Status.FAIL]} fail, {counts[Status.NOT_RUN]} not run"
    ]
    for check in checks:
        lines.append(f"  {_WORD[check.status]:<8} {check.name}: {check.reason}")
        lines.extend(f"           {line}" for line in check.evidence)
        if check.fix and check.status in (Status.WARN, Status.FAIL):
            lines.append(f"           fix: {check.fix}")
    return "\n".join(lines)
