"""What the upgrade subcommands share: the profile options (preflight, postflight, fix) and the
checks report with its exit code (preflight, postflight, drift)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from probe.cli.common import write_json
from probe.upgrade import Check, exit_code, overall, profile_names, report_text


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


def emit_checks(json_target: str | None, title: str, checks: Sequence[Check],
                report: dict[str, Any]) -> int:  # fmt: skip
    """preflight, postflight, drift: the JSON report and/or the text, then the exit code."""
    if json_target:
        write_json(json_target, report)
    if json_target != "-":
        print(report_text(title, checks))
    return exit_code(overall(checks))
