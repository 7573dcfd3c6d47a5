"""`notifyprobe fix`: the documented remediations, dry run by default, undoable."""

from __future__ import annotations

import argparse
from pathlib import Path

from probe.cli.upgrade_options import add_profile_options
from probe.errors import UsageError
from probe.host import files_in_use, local_holders
from probe.upgrade import (
    Plan,
    apply,
    check_root,
    compare_trees,
    default_journal,
    held_candidates,
    is_set_aside,
    load_profile,
    offered_for,
    plan_renames,
    plan_sync,
    undo,
)


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    p = subparsers.add_parser(
        "fix",
        parents=parents,
        help="apply a documented fix (dry run unless --apply), or undo one",
        description="Remediations from the reference documents. Without --apply only the plan "
        "is printed. With --apply an undo journal is written before every step; "
        "`notifyprobe fix undo JOURNAL` restores what was changed.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    r = actions.add_parser(
        "rename-in-use",
        parents=parents,
        help="rename the profile's files that are in use to NAME.old (001)",
    )
    add_profile_options(r)
    _apply_options(r)
    r.set_defaults(handler=run_rename)

    s = actions.add_parser(
        "sync-relocated",
        parents=parents,
        help="back up the relocated bin folder, copy newer files in (002)",
    )
    s.add_argument("--default", type=Path, required=True, metavar="DIR")
    s.add_argument("--relocated", type=Path, required=True, metavar="DIR")
    s.add_argument(
        "--backup-dir",
        type=Path,
        metavar="DIR",
        help="where to copy the relocated folder first (default: beside it)",
    )
    _apply_options(s)
    s.set_defaults(handler=run_sync)

    u = actions.add_parser("undo", parents=parents, help="reverse an applied fix")
    u.add_argument("journal", type=Path, metavar="JOURNAL")
    u.set_defaults(handler=run_undo)


def _apply_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--apply", action="store_true", help="change files (default: dry run)")
    p.add_argument("--journal", type=Path, metavar="FILE", help="undo journal to write")


def _carry_out(plan: Plan, args: argparse.Namespace) -> int:
    if not args.apply or not plan.steps:
        print(plan.text(applied=False))
        return 0
    journal = args.journal or default_journal(plan.action)
    apply(plan, journal)
    print(plan.text(applied=True))
    print(f"  journal: {journal}\n  undo with: notifyprobe fix undo {journal}")
    return 0


def run_rename(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    refusal = offered_for(profile, "rename-in-use")
    if refusal is not None:
        raise UsageError(refusal)
    check_root(args.root)
    usage = files_in_use(local_holders(), held_candidates(profile, args.root))
    held = [f.path for f in usage.held if not is_set_aside(f.path)]
    return _carry_out(plan_renames(held), args)


def run_sync(args: argparse.Namespace) -> int:
    drifts = compare_trees(args.default, args.relocated)
    return _carry_out(plan_sync(args.default, args.relocated, drifts, args.backup_dir), args)


def run_undo(args: argparse.Namespace) -> int:
    journal, done = undo(args.journal)
    print(f"notifyprobe fix undo: {journal.action}, {len(done)} step(s) reversed")
    for line in done:
        print(f"  {line}")
    if any(s.op == "backup" and s.status in ("done", "undone") for s in journal.steps):
        backups = [s.target for s in journal.steps if s.op == "backup"]
        print(f"  the backup folder is kept: {', '.join(backups)}")
    return 0
