"""`notifyprobe runs`: the recent runs in the ledger, one line each, as `verdict` tells them."""

from __future__ import annotations

import argparse
from typing import Any

from probe.cli.common import add_db, open_ledger, positive_int, write_json
from probe.history import revision_of, utc
from probe.ledger import Ledger
from probe.reporting import SCHEMA_VERSION, run_report
from probe.verdict import judge_recorded


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    p = subparsers.add_parser(
        "runs",
        parents=parents,
        help="list the recent runs in the ledger",
        description="List recent runs, newest first: id, when, the watch target or the "
        "gateway, the pattern as `verdict RUN` tells it (a run that continues a first_only "
        "outage is first_only since its first run), delivered/sent, and whether late mail "
        "corrected its verdict. Reads the ledger only: no verdict is stored or corrected.",
    )
    p.add_argument("--target", metavar="NAME", help="only the runs of this watch target")
    p.add_argument("--gateway", metavar="HOST:PORT", help="only the runs against this gateway")
    p.add_argument("--limit", type=positive_int, default=20, metavar="N", help="default: 20")
    p.add_argument("--json", metavar="FILE|-", help="write the list as JSON")
    add_db(p)
    p.set_defaults(handler=run)


def listed(ledger: Ledger, run_id: str) -> dict[str, Any]:
    """One run as the list shows it, told like `verdict RUN` tells it (read only)."""
    record = ledger.load(run_id)
    revision = revision_of(ledger, record)
    verdict = revision.current if revision is not None else judge_recorded(record)
    report = run_report(ledger, record, verdict, revision)
    run, told, outage = record.run, report.verdict, report.story.outage
    corrected = ledger.corrected_verdict(run_id)
    stored = ledger.stored_verdict(run_id)
    return {
        "run_id": run.run_id,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "target": run.options.target or None,
        "gateway": run.gateway,
        "status": run.status,
        "pattern": told.pattern.value,
        "severity": told.severity.name.lower(),
        "own_pattern": verdict.pattern.value,
        "outage_since": outage.since_run if outage is not None else None,
        "delivered": told.delivered,
        "sent": told.sent,
        "corrected": corrected is not None,
        "original_pattern": stored.get("pattern") if stored else None,
    }


def line(row: dict[str, Any]) -> str:
    where = f"target {row['target']}" if row["target"] else str(row["gateway"])
    pattern = str(row["pattern"])
    if row["outage_since"]:
        pattern += f" (since {row['outage_since']}; on its own {row['own_pattern']})"
    fixed = f"  corrected from {row['original_pattern']}" if row["corrected"] else ""
    return (
        f"{row['run_id']}  {utc(float(row['started_at']))}  {where:<24}  "
        f"{row['delivered']}/{row['sent']}  {pattern}{fixed}"
    )


def run(args: argparse.Namespace) -> int:
    with open_ledger(args.db, existing=True) as ledger:
        ids = ledger.recent_runs(target=args.target, gateway=args.gateway, limit=args.limit)
        rows = [listed(ledger, run_id) for run_id in ids]
    if args.json:
        write_json(args.json, {"schema_version": SCHEMA_VERSION, "runs": rows})
    if args.json != "-":
        if not rows:
            print("no runs" + (" of that target or gateway" if args.target or args.gateway else ""))
        for row in rows:
            print(line(row))
    return 0
