"""The `burst` options that turn a verdict into a diagnosis: module inventory and restarts.

Kept apart from `burst.py` so the burst stays about sending and judging; this module wires the
inventory, the gateway start times, the ledger history and the signatures around one run.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from probe.diagnosis import Diagnosis, RestartFacts, diagnose
from probe.ledger import Ledger
from probe.modules import Inventory, take_inventory
from probe.platform import NameMatcher, local_source
from probe.restarts import (
    ProcessStart,
    first_after_restart,
    gateway_starts,
    load_history,
    record_starts,
)
from probe.run import ProbeOutcome
from probe.signatures import Signature, load_signatures


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("diagnosis")
    g.add_argument("--module", dest="module_names", action="append", default=[], metavar="NAME",
                   help="after the run, find processes with this module loaded (repeatable, "
                   "globs allowed), e.g. MPNotifyPerf.dll")  # fmt: skip
    g.add_argument("--installed", action="append", default=[], metavar="PATH",
                   help="the installed copy of a --module (repeatable)")  # fmt: skip
    g.add_argument("--process", dest="gateway_processes", action="append", default=[],
                   metavar="NAME", help="gateway process: record its start time")  # fmt: skip
    g.add_argument("--service", dest="gateway_services", action="append", default=[],
                   metavar="NAME", help="gateway service: record its start time")  # fmt: skip


@dataclass(frozen=True)
class Prepared:
    """What is known before the burst: validated signatures and the gateway's start times."""

    signatures: tuple[Signature, ...]
    starts: tuple[ProcessStart, ...]
    watching: bool


@dataclass(frozen=True)
class Explanation:
    inventory: Inventory | None
    diagnosis: Diagnosis | None
    restarts: RestartFacts

    def json_fields(self) -> dict[str, Any]:
        return {
            "diagnosis": self.diagnosis.to_dict() if self.diagnosis else None,
            "modules": self.inventory.to_dict() if self.inventory else None,
            "gateway_processes": [s.to_dict() for s in self.restarts.starts],
        }


def prepare(args: argparse.Namespace) -> Prepared:
    """Load the signatures (a broken one stops the probe before it sends anything)."""
    if args.module_names:
        NameMatcher(args.module_names)  # a bad --module is a usage error before anything is sent
    processes, services = args.gateway_processes, args.gateway_services
    watching = bool(processes or services)
    starts = gateway_starts(processes, services) if watching else ()
    return Prepared(load_signatures(), starts, watching)


def explain(
    args: argparse.Namespace, prepared: Prepared, ledger: Ledger, outcome: ProbeOutcome
) -> Explanation:
    run = outcome.record.run
    restarts = RestartFacts()
    if prepared.watching:
        after = gateway_starts(args.gateway_processes, args.gateway_services)
        record_starts(ledger, run.run_id, prepared.starts)
        restarts = RestartFacts(
            starts=prepared.starts,
            run_started_at=run.started_at,
            restarted_during_run=_instances(after) != _instances(prepared.starts),
            history=first_after_restart(load_history(ledger, run.gateway)),
        )
    inventory = None
    if args.module_names:
        inventory = take_inventory(local_source(), args.module_names, args.installed)
    diagnosis = diagnose(outcome.verdict, inventory, prepared.signatures, restarts)
    return Explanation(inventory, diagnosis, restarts)


def _instances(starts: tuple[ProcessStart, ...]) -> set[tuple[int, float]]:
    return {(s.pid, round(s.started_at, 2)) for s in starts}
