"""Gateway restarts: when the gateway's processes started, and what each restart brought back.

Document 000's tell-tale is not one run but a series: every restart of the services brings back
exactly one successful notification, and nothing after it. Each burst records the start times of
the processes (or services) named with `--process`/`--service`; `first_after_restart` reads the
series from the ledger and says whether the runs follow that shape. It is pure, so it is tested
on crafted histories.
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import psutil

from probe.ledger import Ledger
from probe.records import ProcessStart, StartKind
from probe.verdict import gateway_order


def gateway_starts(processes: Sequence[str], services: Sequence[str]) -> tuple[ProcessStart, ...]:
    """Start times of the named processes (name globs, case-insensitive) and services.

    Services go through the Windows service API; elsewhere a service name is looked up as a
    process name, which is what a systemd unit's main process is usually called.
    """
    found: list[ProcessStart] = []
    patterns: list[tuple[StartKind, str]]
    if sys.platform == "win32":
        for name in services:
            try:
                pid = psutil.win_service_get(name).pid()
                if pid:
                    found.append(
                        ProcessStart("service", name, pid, psutil.Process(pid).create_time())
                    )
            except (psutil.Error, OSError):
                continue
        patterns = [("process", p) for p in processes]
    else:
        patterns = [("process", p) for p in processes] + [("service", s) for s in services]
    if not patterns:
        return tuple(found)
    own = own_processes()
    for proc in psutil.process_iter(["name", "create_time"]):
        if proc.pid in own:
            continue
        name = (proc.info.get("name") or "").lower()
        for kind, pattern in patterns:
            if fnmatch.fnmatchcase(name, pattern.lower()):
                found.append(ProcessStart(kind, pattern, proc.pid, proc.info["create_time"]))
    return tuple(sorted(found, key=lambda s: (s.name, s.pid)))


def own_processes() -> frozenset[int]:
    """The probe and its children: never the gateway, whatever they are called (the
    `notifyprobe` command is a process named notifyprobe too)."""
    me = psutil.Process()
    try:
        children = me.children(recursive=True)
    except psutil.Error:
        children = []
    return frozenset([me.pid, *(c.pid for c in children)])


def unknown_services(services: Sequence[str]) -> list[str]:
    """The `--service` names that name nothing: no such Windows service; elsewhere, where a
    service is looked up by its process name, no process of that name (but the probe's own)."""
    if sys.platform == "win32":
        unknown = []
        for name in services:
            try:
                psutil.win_service_get(name)
            except psutil.NoSuchProcess:
                unknown.append(name)
        return unknown
    found = {s.name for s in gateway_starts((), services)}
    return [name for name in services if name not in found]


@dataclass(frozen=True)
class RunStarts:
    """One past run, reduced to what the restart pattern needs."""

    run_id: str
    started_at: float
    sent: int
    delivered: int
    first_delivered: bool
    starts: tuple[ProcessStart, ...]

    @property
    def generation(self) -> frozenset[tuple[str, int, float]]:
        """Which gateway process instances were running: changes exactly when one restarted."""
        return frozenset((s.name, s.pid, round(s.started_at, 2)) for s in self.starts)


@dataclass(frozen=True)
class RestartFinding:
    matches: bool
    after_restart: int  # runs that followed a restart
    without_restart: int  # runs with no restart since the previous run
    lines: tuple[str, ...]


def first_after_restart(history: Sequence[RunStarts]) -> RestartFinding | None:
    """Do the runs show "the first notification after each restart succeeds, the rest fail"?

    A run follows a restart when the gateway's process instances differ from the previous run's.
    The pattern holds when every run after a restart delivered exactly its first notification and
    every run without a restart delivered nothing. None when fewer than two comparable runs.
    """
    runs = sorted((r for r in history if r.starts and r.sent >= 2), key=lambda r: r.started_at)
    if len(runs) < 2:
        return None
    after = without = 0
    misfits: list[str] = []
    for previous, run in pairwise(runs):
        if run.generation != previous.generation:
            after += 1
            if not (run.delivered == 1 and run.first_delivered):
                misfits.append(
                    f"run {run.run_id} after a restart delivered {run.delivered} of {run.sent}"
                )
        else:
            without += 1
            if run.delivered:
                misfits.append(
                    f"run {run.run_id} without a restart delivered {run.delivered} of {run.sent}"
                )
    if after == 0:
        return RestartFinding(False, 0, without, ("no gateway restart between the recorded runs",))
    if misfits:
        return RestartFinding(False, after, without, tuple(misfits[:3]))
    line = (
        f"across {after + without + 1} recorded runs, each of {after} gateway restart(s) brought "
        f"back exactly one delivery (the first notification)"
    )
    if without:
        line += f", and {without} run(s) without a restart delivered nothing"
    return RestartFinding(True, after, without, (line,))


# -- ledger storage ------------------------------------------------------------------------


def record_starts(ledger: Ledger, run_id: str, starts: Sequence[ProcessStart]) -> None:
    ledger.record_starts(run_id, starts)


def load_history(ledger: Ledger, gateway: str, limit: int = 20) -> list[RunStarts]:
    """The latest runs against `gateway` that recorded process starts, oldest first."""

    starts = ledger.process_starts(gateway, limit)
    history = []
    for run_id, run_starts in starts.items():
        record = ledger.load(run_id)
        sent = gateway_order(n for n in record.burst if n.attempted)
        history.append(
            RunStarts(
                run_id=run_id,
                started_at=record.run.started_at,
                sent=len(sent),
                delivered=sum(1 for n in sent if n.copies),
                first_delivered=bool(sent and sent[0].copies),
                starts=tuple(run_starts),
            )
        )
    return sorted(history, key=lambda r: r.started_at)
