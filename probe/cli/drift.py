"""`notifyprobe drift`: a relocated bin folder against the default one (document 002)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from probe.cli.upgrade_options import emit_checks
from probe.errors import UsageError
from probe.host import RegistryReader, reader_for
from probe.upgrade import (
    Check,
    Places,
    Status,
    compare_trees,
    file_checks,
    load_profile,
    registry_checks,
    report_dict,
    share_check,
)

_WINDOWS_PATH = re.compile(r"^([A-Za-z]:[\\/]|\\\\|%)")


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    p = subparsers.add_parser(
        "drift",
        parents=parents,
        help="compare a relocated bin folder with the default one, and the registry values",
        description="Compare two copies of a bin folder by PE version and SHA-256 (older, "
        "newer, missing, extra, identical), check that the service, performance and event-log "
        "values name the relocated copy, and that the share exists. Registry facts come from "
        "the live registry on Windows or from --registry FILE.reg anywhere.",
    )
    p.add_argument(
        "--default",
        type=Path,
        required=True,
        metavar="DIR",
        help="the bin folder the service pack updated (default drive)",
    )
    p.add_argument(
        "--relocated",
        type=Path,
        required=True,
        metavar="DIR",
        help="the relocated bin folder the services should use",
    )
    p.add_argument("--registry", type=Path, metavar="FILE.reg", help="a regedit export to check")
    p.add_argument(
        "--profile",
        default="msmail-relocated",
        metavar="NAME",
        help="which values and share to check (default: msmail-relocated)",
    )
    p.add_argument(
        "--service",
        dest="services",
        action="append",
        default=[],
        metavar="NAME",
        help="another service whose values must point at the relocated copy, e.g. "
        "the PC MTA's site-specific name (repeatable)",
    )
    p.add_argument(
        "--default-as",
        metavar="WINPATH",
        help="how the machine names the default folder (default: --default)",
    )
    p.add_argument(
        "--relocated-as",
        metavar="WINPATH",
        help="how the machine names the relocated folder (default: --relocated)",
    )
    p.add_argument("--json", metavar="FILE|-", help="write the result as JSON")
    p.set_defaults(handler=run)


def places(args: argparse.Namespace, reader: RegistryReader | None) -> Places:
    default_as = args.default_as or str(args.default)
    relocated_as = args.relocated_as or str(args.relocated)
    if reader is not None and not (
        _WINDOWS_PATH.match(default_as) and _WINDOWS_PATH.match(relocated_as)
    ):
        raise UsageError(
            "the registry names Windows paths: say how that machine names both folders with "
            "--default-as 'C:\\...\\Msmcon\\Bin' --relocated-as 'D:\\...\\Msmcon\\Bin'"
        )
    return Places(default_as, relocated_as, args.relocated)


def sync_hint(args: argparse.Namespace) -> str:
    return (
        f"notifyprobe fix sync-relocated --default {args.default} --relocated "
        f"{args.relocated} --apply"
    )


def run(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    drifts = compare_trees(args.default, args.relocated)
    reader = reader_for(args.registry)
    where = places(args, reader)
    checks = file_checks(drifts, sync_hint(args))
    services = tuple(dict.fromkeys([*profile.services, *args.services]))
    if reader is None:
        checks.append(
            Check(
                "registry",
                Status.NOT_RUN,
                "no registry here: pass --registry FILE.reg exported on the server",
                part="registry",
            )
        )
    else:
        checks += registry_checks(reader, profile, services, where)
    share = share_check(reader, profile, where)
    if share is not None:
        checks.append(share)
    report = report_dict(
        "drift",
        checks,
        profile=profile.id,
        default=str(args.default),
        relocated=str(args.relocated),
        registry=reader.source if reader else None,
        files=[d.to_dict() for d in drifts],
    )
    return emit_checks(args, "drift", checks, report)
