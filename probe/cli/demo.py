"""`notifyprobe demo`: the whole flow on this machine with no setup, first-only then healthy."""

from __future__ import annotations

import argparse
import asyncio

from probe.burst import Endpoint
from probe.cli.common import add_db, open_ledger
from probe.lab import FaultMode, LabGateway, free_port
from probe.ledger import Ledger
from probe.report import to_text
from probe.run import ProbeOutcome, ProbeSettings, run_probe
from probe.verdict import Pattern

SCENARIOS = (
    ("first-only", "a gateway that, like one with an old MPNotifyPerf.dll loaded, delivers only "
                   "the first notification after it starts", Pattern.FIRST_ONLY),
    ("healthy", "the same gateway after the fix", Pattern.HEALTHY),
)  # fmt: skip


def add_parser(subparsers, parents) -> None:
    p = subparsers.add_parser(
        "demo",
        parents=parents,
        help="rehearse the probe against built-in lab gateways (first-only, then healthy)",
    )
    p.add_argument("--count", type=int, default=10)
    add_db(p)
    p.set_defaults(handler=run)


async def rehearse(ledger: Ledger, mode: str, count: int) -> ProbeOutcome:
    sink = Endpoint("127.0.0.1", free_port())
    gateway = LabGateway(Endpoint("127.0.0.1", 0), sink, FaultMode.parse(mode))
    async with gateway:
        settings = ProbeSettings(gateway=gateway.listen, sink=sink, count=count)
        return await run_probe(ledger, settings)


def run(args: argparse.Namespace) -> int:
    failures = 0
    with open_ledger(args.db) as ledger:
        for number, (mode, story, expected) in enumerate(SCENARIOS, start=1):
            print(f"── {number}/{len(SCENARIOS)}  lab gateway in {mode} mode: {story}\n")
            outcome = asyncio.run(rehearse(ledger, mode, args.count))
            print(to_text(outcome.record, outcome.verdict, outcome.elapsed_s), end="\n\n")
            failures += outcome.verdict.pattern is not expected
        print(f"Runs are kept in {ledger.path}; judge one again with `notifyprobe verdict --last`.")
        print("On a real gateway: route the probe domain to the sink, then")
        print(
            "  notifyprobe burst --gateway GATEWAY:25 --sink HOST:2525 --domain probe.example.org"
        )
    return 1 if failures else 0
