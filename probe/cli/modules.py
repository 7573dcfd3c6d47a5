"""`notifyprobe modules`: which processes have the module loaded, and is their copy current?"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from probe.cli.common import write_json
from probe.host import (
    DEFAULT_MODULE,
    Inventory,
    ModuleState,
    RecordedWindows,
    local_source,
    take_inventory,
)


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    p = subparsers.add_parser(
        "modules",
        parents=parents,
        help="list processes that have a module loaded and whether their copy is stale",
        description="Scan every process for a loaded module (default MPNotifyPerf.dll; names "
        "are case-insensitive, globs allowed) and compare each loaded copy with the installed "
        "one. Exit 0: no old copy loaded; 1: an old copy (stale, deleted, renamed) is loaded.",
    )
    add_module_options(p, default_name=True)
    p.add_argument(
        "--recorded",
        type=Path,
        metavar="FILE",
        help="judge a recorded Windows inventory (JSON) instead of this machine",
    )
    p.add_argument("--json", metavar="FILE|-", help="write the inventory as JSON")
    p.set_defaults(handler=run)


def add_module_options(p: argparse.ArgumentParser, *, default_name: bool) -> None:
    p.add_argument(
        "--name" if default_name else "--module",
        dest="module_names",
        action="append",
        metavar="NAME",
        help="module file name or glob, case-insensitive (repeatable"
        + (f"; default: {DEFAULT_MODULE})" if default_name else ")"),
    )
    p.add_argument(
        "--installed",
        action="append",
        default=[],
        metavar="PATH",
        help="where the installed copy of the module is (repeatable; default: the mapped path)",
    )


def run(args: argparse.Namespace) -> int:
    source = RecordedWindows.load(args.recorded) if args.recorded else None
    result = take_inventory(
        source or local_source(), args.module_names or [DEFAULT_MODULE], args.installed
    )
    if args.json:
        write_json(args.json, result.to_dict())
    if args.json != "-":
        print(to_text(result))
    return 1 if result.old_copies else 0


_WORD = {
    ModuleState.CURRENT: "current",
    ModuleState.STALE: "STALE",
    ModuleState.DELETED: "DELETED",
    ModuleState.RENAMED: "RENAMED",
    ModuleState.UNKNOWN: "unknown",
}


def to_text(inv: Inventory) -> str:
    names = ", ".join(inv.names)
    lines = [
        f"notifyprobe modules: {names} loaded in {len({h.process.pid for h in inv.hits})} "
        f"process(es) · {inv.scanned} scanned, {inv.denied} denied, {inv.vanished} vanished · "
        f"{inv.elapsed_s * 1000:.0f} ms",
    ]
    for hit in inv.hits:
        p = hit.process
        started = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p.started_at))
            if p.started_at
            else "?"
        )
        lv = hit.loaded.version.label if hit.loaded.version else "unknown"
        iv = hit.installed.version.label if hit.installed.version else "none"
        lines += [
            "",
            f"  {_WORD[hit.state]:<8} pid {p.pid} {p.name or '?'} (started {started})",
            f"           mapped    {hit.mapped_path}",
            f"           loaded    {lv} · installed {iv} ({hit.installed.path})",
            f"           why       {hit.reason}",
        ]
    if inv.old_copies:
        lines += [
            "",
            "  An old copy is still loaded: see docs/modules.md for what to do per state.",
        ]
    if inv.denied:
        lines += [
            f"  {inv.denied} process(es) could not be read; run as root/Administrator to see them."
        ]
    return "\n".join(lines)
