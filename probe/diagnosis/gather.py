"""From a verdict to a named cause: module inventory, gateway restarts and known issues.

`burst`, the demo and postflight all ask the same question after a run; this module answers it
once. The diagnosis itself stays pure (`probe.diagnosis.rules`); here is the I/O around it: the
process scan, the gateway's start times, the ledger's history of earlier runs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from probe.delivery import ProbeOutcome
from probe.diagnosis.restarts import (
    first_after_restart,
    gateway_starts,
    load_history,
    record_starts,
    unknown_services,
)
from probe.diagnosis.rules import Diagnosis, PossibleIssue, RestartFacts, diagnose, split
from probe.diagnosis.signatures import Signature, load_signatures
from probe.errors import UsageError
from probe.host import Inventory, NameMatcher, local_source, take_inventory
from probe.ledger import Ledger
from probe.records import ProcessStart
from probe.verdict import Verdict


@dataclass(frozen=True)
class Request:
    """What to look at: module names (globs), their installed copies, the gateway's processes."""

    module_names: tuple[str, ...] = ()
    installed: tuple[str, ...] = ()
    processes: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    # a service named must exist (a `burst` typo stops it); a watch's run goes on without it:
    # a gateway whose service is down or restarting is what the run should see
    services_must_exist: bool = True


@dataclass(frozen=True)
class Prepared:
    """What is known before the burst: validated signatures and the gateway's start times."""

    signatures: tuple[Signature, ...]
    starts: tuple[ProcessStart, ...]
    watching: bool


@dataclass(frozen=True)
class Explanation:
    inventory: Inventory | None
    diagnosis: Diagnosis | None  # medium or high confidence only
    restarts: RestartFacts
    possible: tuple[PossibleIssue, ...] = ()  # low-confidence matches: one line each

    def json_fields(self) -> dict[str, Any]:
        return {
            "diagnosis": self.diagnosis.to_dict() if self.diagnosis else None,
            "possible_known_issues": [p.to_dict() for p in self.possible],
            "modules": self.inventory.to_dict() if self.inventory else None,
            "gateway_processes": [s.to_dict() for s in self.restarts.starts],
        }


def prepare(request: Request) -> Prepared:
    """Before the burst: check the module names and load the signatures (a bad name or a broken
    signature stops the probe before it sends anything), and note the gateway's start times."""
    if request.module_names:
        NameMatcher(request.module_names)
    unknown = unknown_services(request.services) if request.services_must_exist else []
    if unknown:
        where = "" if sys.platform == "win32" else " (here a service is found by its process name)"
        raise UsageError(f"unknown --service {', '.join(unknown)}: no such service runs{where}")
    watching = bool(request.processes or request.services)
    starts = gateway_starts(request.processes, request.services) if watching else ()
    return Prepared(load_signatures(), starts, watching)


def explain(
    request: Request, prepared: Prepared, ledger: Ledger, outcome: ProbeOutcome
) -> Explanation:
    """After the burst: restarts across runs, the module inventory, and the diagnosis."""
    run = outcome.record.run
    restarts = RestartFacts()
    if prepared.watching:
        after = gateway_starts(request.processes, request.services)
        record_starts(ledger, run.run_id, prepared.starts)
        restarts = RestartFacts(
            starts=prepared.starts,
            run_started_at=run.started_at,
            restarted_during_run=_instances(after) != _instances(prepared.starts),
            history=first_after_restart(load_history(ledger, run.gateway)),
        )
    inventory = None
    if request.module_names:
        inventory = take_inventory(local_source(), request.module_names, request.installed)
    diagnosis, possible = split(diagnose(outcome.verdict, inventory, prepared.signatures, restarts))
    return Explanation(inventory, diagnosis, restarts, possible)


def rediagnose(
    verdict: Verdict,
    inventory: Inventory | None,
    starts: tuple[ProcessStart, ...] = (),
    run_started_at: float | None = None,
) -> tuple[Diagnosis | None, tuple[PossibleIssue, ...]]:
    """A run diagnosed again for a new verdict (late mail corrected it), from what the run kept:
    its inventory and its gateway's start times, never a new scan of a host that has changed
    since. Pure but for reading the shipped signatures; the restart history across runs and a
    restart during the run are not kept, so they no longer raise a confidence."""
    restarts = RestartFacts(starts=starts, run_started_at=run_started_at if starts else None)
    return split(diagnose(verdict, inventory, load_signatures(), restarts))


def _instances(starts: tuple[ProcessStart, ...]) -> set[tuple[int, float]]:
    return {(s.pid, round(s.started_at, 2)) for s in starts}
