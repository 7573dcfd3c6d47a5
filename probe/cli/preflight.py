"""`notifyprobe preflight`: before an upgrade, can the installer do its job?"""

from __future__ import annotations

import argparse
from pathlib import Path

from probe.cli.upgrade_options import (
    add_output_options,
    add_profile_options,
    add_reboot_options,
    emit_checks,
    reboot_sources,
)
from probe.errors import UsageError
from probe.host import files_in_use, local_holders, local_source, take_inventory, unknown_names
from probe.upgrade import (
    backup_check,
    check_root,
    held_candidates,
    in_use_checks,
    load_profile,
    reboot_checks,
    report_dict,
)


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    p = subparsers.add_parser(
        "preflight",
        parents=parents,
        help="before an upgrade: files in use, pending reboot, backup present",
        description="Check, for a profile, that nothing holds the files the installer "
        "replaces, that no reboot is still pending, and that the backup the procedure asks "
        "for exists. Exit 0 all pass, 1 a warning, 2 a failure, 3 the probe could not run.",
    )
    add_profile_options(p)
    p.add_argument("--backup", type=Path, metavar="DIR", help="where the backup was put")
    add_reboot_options(p)
    add_output_options(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    check_root(args.root)
    unknown = unknown_names(args.ignore_reboot)
    if unknown:
        raise UsageError(f"unknown --ignore-reboot-source {', '.join(unknown)}")
    source = local_source()  # fails early, with a clear message, on an unsupported platform
    inv = take_inventory(source, list(profile.modules), []) if profile.modules else None
    usage = files_in_use(local_holders(), held_candidates(profile, args.root, inv))
    sources = reboot_sources(args.registry, args.root)
    checks = in_use_checks(usage, profile, args.root)
    checks += reboot_checks(sources, args.ignore_reboot, profile)
    backup = backup_check(profile, args.backup)
    if backup is not None:
        checks.append(backup)
    report = report_dict(
        "preflight",
        checks,
        profile=profile.id,
        signature=profile.signature.id,
        remedy=profile.signature.remedy,
        root=str(args.root),
        in_use=usage.to_dict(),
        modules=inv.to_dict() if inv is not None else None,
        reboot=[s.to_dict() for s in sources],
    )
    return emit_checks(args, f"preflight {profile.id}", checks, report)
