"""`notifyprobe modules`: which processes have the module loaded, and is their copy current?"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from probe.cli.common import write_json
from probe.host import (
    DEFAULT_MODULE,
    Inventory,
    ModuleState,
    RecordedWindows,
    Sight,
    local_source,
    take_inventory,
)
from probe.reporting import SCHEMA_VERSION


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
        "one. Exit 0: every process in scope was read and none runs an old copy; 1: an old "
        "copy (stale, deleted, renamed) is loaded; 3: no old copy among the processes read, "
        "but some could not be read (or none matched --process), so none is not proven.",
    )
    add_module_options(p, default_name=True)
    p.add_argument(
        "--process",
        dest="processes",
        action="append",
        default=[],
        metavar="NAME",
        help="scan only processes with this name (case-insensitive, globs allowed, .exe "
        "optional; repeatable): unreadable processes of other names then do not count",
    )
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
        source or local_source(),
        args.module_names or [DEFAULT_MODULE],
        args.installed,
        args.processes,
    )
    if args.json:
        write_json(args.json, {"schema_version": SCHEMA_VERSION, **result.to_dict()})
    if args.json != "-":
        print(to_text(result))
    elif result.sight not in (Sight.CLEAN, Sight.OLD_COPY):
        print(f"notifyprobe modules: {unknown_line(result)}", file=sys.stderr)
    return exit_code(result.sight)


EXIT_CODES = {
    Sight.CLEAN: 0,
    Sight.OLD_COPY: 1,
    Sight.PARTIAL: 3,
    Sight.BLIND: 3,
    Sight.EMPTY: 3,
}


def exit_code(sight: Sight) -> int:
    """0 only for a scan that read every process in scope and found no old copy; an old copy
    found is 1 whatever was left unread; "none found" among what could be read is UNKNOWN (3),
    never 0 — the process left unread may be the one that holds it."""
    return EXIT_CODES[sight]


def unknown_line(inv: Inventory) -> str:
    """Why a scan with no old copy found is still UNKNOWN."""
    if inv.denied:
        return f"UNKNOWN: {inv.unreadable_note()}"
    if inv.processes:
        return f"UNKNOWN: no process is named {', '.join(inv.processes)}: nothing was scanned"
    return "UNKNOWN: no process could be listed: nothing was scanned"


_WORD = {
    ModuleState.CURRENT: "current",
    ModuleState.STALE: "STALE",
    ModuleState.DELETED: "DELETED",
    ModuleState.RENAMED: "RENAMED",
    ModuleState.UNKNOWN: "unknown",
}


def to_text(inv: Inventory) -> str:
    names = ", ".join(inv.names)
    scope = f" · only {', '.join(inv.processes)}" if inv.processes else ""
    lines = [
        f"notifyprobe modules: {names} loaded in {len({h.process.pid for h in inv.hits})} "
        f"process(es) · {inv.scanned} scanned, {inv.denied} denied, {inv.vanished} vanished"
        f"{scope} · {inv.elapsed_s * 1000:.0f} ms",
    ]
    if inv.sight not in (Sight.CLEAN, Sight.OLD_COPY):
        lines.append(f"  {unknown_line(inv)}")
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
            lines.append(f"  Also {inv.unreadable_note()}.")
    return "\n".join(lines)
