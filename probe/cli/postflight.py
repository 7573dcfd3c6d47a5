"""`notifyprobe postflight`: after an upgrade, is it done right?"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from probe.cli.burst_options import add_burst_options, settings_from
from probe.cli.common import open_ledger
from probe.cli.upgrade_options import add_profile_options, emit_checks
from probe.delivery import ProbeOutcome, ProbeSettings, run_probe
from probe.host import local_source, take_inventory
from probe.upgrade import (
    burst_check,
    check_root,
    leftover_checks,
    load_profile,
    module_check,
    report_dict,
    under_root,
    version_check,
)


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    p = subparsers.add_parser(
        "postflight",
        parents=parents,
        help="after an upgrade: leftovers gone, no stale module, versions agree, burst passes",
        description="One verdict for 'is this upgrade done right': the folders the procedure "
        "removes are gone, no process runs an old copy of the profile's modules, the installed "
        "files agree on one version, and (with --gateway) a burst delivers every notification.",
    )
    add_profile_options(p)
    p.add_argument("--expect-version", metavar="A.B.C.D", help="the version every file must have")
    add_burst_options(p, gateway_required=False)  # the burst check: skipped without --gateway
    p.add_argument("--json", metavar="FILE|-", help="write the checks as JSON")
    p.set_defaults(handler=run)


def burst(settings: ProbeSettings | None, db: Path | None) -> ProbeOutcome | None:
    if settings is None:
        return None
    with open_ledger(db) as ledger:
        return asyncio.run(run_probe(ledger, settings))


def run(args: argparse.Namespace) -> int:
    # The burst's settings first: a usage error stops the command before any check runs.
    settings = settings_from(args) if args.gateway is not None else None
    profile = load_profile(args.profile)
    check_root(args.root)
    inv = None
    if profile.modules:
        installed = [str(under_root(args.root, f)) for f in profile.files]
        inv = take_inventory(local_source(), list(profile.modules), installed)
    checks = leftover_checks(profile, args.root)
    checks.append(module_check(profile, inv, args.root))
    checks.append(version_check(profile, args.root, args.expect_version))
    outcome = burst(settings, args.db)
    checks.append(burst_check(outcome.verdict if outcome else None))
    report = report_dict("postflight", checks, profile=profile.id, root=str(args.root))
    if outcome is not None:  # `notifyprobe evidence` on this run then includes the checks
        with open_ledger(args.db) as ledger:
            ledger.put_artifact(outcome.record.run.run_id, "postflight", json.dumps(report))
    return emit_checks(args.json, f"postflight {profile.id}", checks, report)
