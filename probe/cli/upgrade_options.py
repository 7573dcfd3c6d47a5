"""What the upgrade subcommands share: the profile options (preflight, postflight, fix), the
pending-reboot options (preflight, postflight) and the checks report with its exit code
(preflight, postflight, drift)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from probe.cli.common import write_json
from probe.host import RebootSource, linux_sources, reader_for, windows_sources
from probe.reporting import SCHEMA_VERSION
from probe.upgrade import Check, exit_code, overall, profile_names, report_nagios, report_text


def default_root() -> Path:
    return Path("C:\\") if sys.platform == "win32" else Path("/")


def add_profile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        required=True,
        metavar="NAME",
        help=f"the upgrade procedure to check ({', '.join(profile_names())})",
    )
    p.add_argument(
        "--root",
        type=Path,
        default=default_root(),
        metavar="DIR",
        help="where the profile's Windows paths start: a drive root, or a copy of one "
        f"(default: {default_root()})",
    )


def add_reboot_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--registry",
        type=Path,
        metavar="FILE.reg",
        help="read the Windows pending-reboot sources from this export instead of the machine",
    )
    p.add_argument(
        "--ignore-reboot-source",
        dest="ignore_reboot",
        action="append",
        default=[],
        metavar="NAME",
        help="report this pending-reboot source but do not let it warn or fail (repeatable)",
    )


def reboot_sources(registry: Path | None, root: Path) -> tuple[RebootSource, ...]:
    reader = reader_for(registry)
    return windows_sources(reader) if reader is not None else linux_sources(root)


def add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="FILE|-", help="write the checks as JSON")
    p.add_argument(
        "--format",
        choices=["text", "json", "nagios"],
        default="text",
        help="stdout: text, json, or nagios (a monitoring-plugin line, the checks that are not "
        "a pass as long output; default: text)",
    )


def emit_checks(
    args: argparse.Namespace,
    title: str,
    checks: Sequence[Check],
    report: dict[str, Any],
    tables: Sequence[str] = (),
) -> int:
    """preflight, postflight, drift: the JSON report and/or the text or plugin view, then the
    exit code. Every view opens with the same overall status."""
    json_target: str | None = args.json
    view: str = getattr(args, "format", "text")
    if view == "json" and json_target is None:
        json_target = "-"
    if json_target:
        write_json(json_target, {"schema_version": SCHEMA_VERSION, **report})
    if json_target != "-":
        print(
            report_nagios(title, checks) if view == "nagios" else report_text(title, checks, tables)
        )
    return exit_code(overall(checks))
