"""`notifyprobe evidence`: one zip for a support case, from the ledger, safe to send."""

from __future__ import annotations

import argparse
from pathlib import Path

from probe.cli.common import add_db, chosen_run, open_ledger
from probe.cli.evidence_options import add_redaction_options, write_bundle


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    p = subparsers.add_parser(
        "evidence",
        parents=parents,
        help="write an evidence bundle (zip) of a recorded run for a support case",
        description="Bundle a recorded run from the ledger: HTML and JSON report, ledger rows, "
        "SMTP transcripts, module inventory, host facts, structured log and a SHA-256 "
        "manifest. Secrets are always removed; --redact also replaces names and addresses.",
    )
    p.add_argument(
        "run_id", nargs="?", metavar="RUN_ID", help="a run id, or a unique prefix of one"
    )
    p.add_argument("--last", action="store_true", help="the most recent run")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.zip", help="bundle to write")
    add_redaction_options(p)
    p.add_argument(
        "--secret-env",
        action="append",
        default=[],
        metavar="NAME",
        help="the value of this environment variable must never appear "
        "(repeatable; NOTIFYPROBE_*PASSWORD*/SECRET/TOKEN are always used)",
    )
    p.add_argument(
        "--secret-file",
        action="append",
        default=[],
        type=Path,
        metavar="PATH",
        help="the first line of this file must never appear (repeatable)",
    )
    add_db(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with open_ledger(args.db, existing=True) as ledger:
        write_bundle(args, ledger, chosen_run(ledger, args.run_id, args.last, "evidence"))
    return 0
