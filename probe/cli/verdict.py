"""`notifyprobe verdict`: judge a run again from the ledger (a killed run, or late mail)."""

from __future__ import annotations

import argparse
import time

from probe.cli.common import add_db, chosen_run, open_ledger, write_json
from probe.history import revise_and_keep
from probe.reporting import report_json, run_report, to_text


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    p = subparsers.add_parser(
        "verdict",
        parents=parents,
        help="judge a recorded run again from the ledger",
        description="Re-read a run from the ledger, with mail that arrived since, and judge it. "
        "When notifications arrived after the verdict given at the end of the run, say so and "
        "whether the pattern changed; a changed verdict is kept in the ledger beside the "
        "original, and both are shown with the time each was given.",
    )
    p.add_argument(
        "run_id", nargs="?", metavar="RUN_ID", help="a run id, or a unique prefix of one"
    )
    p.add_argument("--last", action="store_true", help="the most recent run")
    p.add_argument("--json", metavar="FILE|-", help="write the result as JSON")
    add_db(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with open_ledger(args.db, existing=True) as ledger:
        run_id = chosen_run(ledger, args.run_id, args.last, "verdict")
        revised = revise_and_keep(ledger, run_id, time.time())
        report = run_report(ledger, revised.record, revised.verdict, revised.revision)
    if args.json:
        write_json(args.json, report_json(report))
    if args.json != "-":
        print(to_text(report))
    return int(report.verdict.severity)
