"""`notifyprobe postflight`: after an upgrade, is it done right?"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from probe.cli.burst_options import add_burst_options, settings_from
from probe.cli.common import open_ledger
from probe.cli.evidence_options import kept_with_run
from probe.cli.upgrade_options import (
    add_output_options,
    add_profile_options,
    add_reboot_options,
    emit_checks,
    reboot_sources,
)
from probe.delivery import ProbeOutcome
from probe.errors import UsageError
from probe.host import local_source, take_inventory, unknown_names
from probe.pipeline import Job, Probe
from probe.upgrade import (
    burst_check,
    check_root,
    installed_files,
    leftover_checks,
    load_profile,
    module_check,
    reboot_checks,
    report_dict,
    under_root,
    version_check,
    version_table,
    version_table_lines,
)

AFTER_REBOOT = "reboot to finish the install, then run postflight again"


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    p = subparsers.add_parser(
        "postflight",
        parents=parents,
        help="after an upgrade: delivery, no stale module, leftovers, versions, no reboot owed",
        description="One verdict for 'is this upgrade done right': (with --gateway) a burst "
        "delivers every notification, no process runs an old copy of the profile's modules, "
        "the folders the procedure removes hold nothing of the old version, the installed "
        "files carry one version (or --expect-version), and no reboot is pending.",
    )
    add_profile_options(p)
    p.add_argument(
        "--expect-version",
        metavar="A.B.C.D",
        help="the version you installed: every versioned file of the profile must carry it",
    )
    add_reboot_options(p)
    add_burst_options(p, gateway_required=False)  # the burst check: skipped without --gateway
    add_output_options(p)
    p.set_defaults(handler=run)


def burst(probe: Probe | None, db: Path | None) -> ProbeOutcome | None:
    """The delivery check's run, through the one pipeline (its module scan is postflight's
    own, taken once, so the run diagnoses nothing more)."""
    if probe is None:
        return None
    with open_ledger(db) as ledger:
        return probe.finish(ledger, asyncio.run(probe.run(ledger))).outcome


def run(args: argparse.Namespace) -> int:
    # The burst's settings first: a usage error stops the command before any check runs.
    probe = None
    if args.gateway is not None:
        argv, secrets = kept_with_run(args)
        probe = Probe(Job(settings_from(args), argv=argv, secrets=secrets))
    profile = load_profile(args.profile)
    check_root(args.root)
    unknown = unknown_names(args.ignore_reboot)
    if unknown:
        raise UsageError(f"unknown --ignore-reboot-source {', '.join(unknown)}")
    inv = None
    if profile.modules:
        installed = [str(under_root(args.root, f)) for f in profile.files]
        inv = take_inventory(local_source(), list(profile.modules), installed)
    files = installed_files(profile, args.root)
    modules = module_check(profile, inv, args.root)
    leftovers = leftover_checks(profile, args.root, args.expect_version, inv)
    versions = version_check(profile, args.root, args.expect_version, files)
    sources = reboot_sources(args.registry, args.root)
    reboot = reboot_checks(sources, args.ignore_reboot, profile, AFTER_REBOOT)
    outcome = burst(probe, args.db)
    # The order every view shows: delivery, modules, leftovers, versions, reboot.
    checks = [
        burst_check(outcome.verdict if outcome else None),
        modules,
        *leftovers,
        versions,
        *reboot,
    ]
    table = version_table(files, inv, args.root, args.expect_version)
    report = report_dict(
        "postflight",
        checks,
        profile=profile.id,
        signature=profile.signature.id,
        remedy=profile.signature.remedy,
        root=str(args.root),
        expect_version=args.expect_version,
        run_id=outcome.record.run.run_id if outcome else None,
        versions=[row.to_dict() for row in table],
        modules=inv.to_dict() if inv is not None else None,
        reboot=[s.to_dict() for s in sources],
    )
    if outcome is not None:  # `notifyprobe evidence` on this run then includes the checks
        with open_ledger(args.db) as ledger:
            ledger.put_artifact(outcome.record.run.run_id, "postflight", json.dumps(report))
    return emit_checks(args, f"postflight {profile.id}", checks, report, version_table_lines(table))
