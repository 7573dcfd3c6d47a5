"""The `notifyprobe` command line: parse arguments, wire the parts, map outcomes to exit codes.

Each subcommand lives in its own module with `add_parser(subparsers, parents)` and `run(args)`.
Exit codes follow the monitoring-plugin convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the
probe itself could not run — always with a one-line error, never a traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from probe import __version__
from probe.cli import (
    burst,
    demo,
    drift,
    evidence,
    fix,
    lab,
    modules,
    postflight,
    preflight,
    sink,
    verdict,
    watch,
)
from probe.cli.common import ArgumentParser, common_parent
from probe.errors import ProbeError
from probe.logs import configure

COMMANDS = (
    burst,
    sink,
    verdict,
    evidence,
    watch,
    lab,
    demo,
    modules,
    preflight,
    postflight,
    drift,
    fix,
)
EXIT_UNKNOWN = 3


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="notifyprobe",
        description="Does the notification gateway still deliver every notification?",
    )
    parser.add_argument("--version", action="version", version=f"notifyprobe {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    parent = common_parent()
    for command in COMMANDS:
        command.add_parser(subparsers, [parent])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # for the evidence bundle
        configure(json_lines=args.log_json, level=args.log_level)
        return int(args.handler(args))
    except ProbeError as exc:
        print(f"notifyprobe: error: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    except KeyboardInterrupt:
        print("notifyprobe: interrupted", file=sys.stderr)
        return EXIT_UNKNOWN
    except BrokenPipeError:
        return EXIT_UNKNOWN
    except Exception as exc:  # a bug of ours: still one line and UNKNOWN, the trace on demand
        if os.environ.get("NOTIFYPROBE_TRACEBACK"):
            raise
        kind = type(exc).__name__
        print(
            f"notifyprobe: internal error: {kind}: {exc} (NOTIFYPROBE_TRACEBACK=1 shows where)",
            file=sys.stderr,
        )
        return EXIT_UNKNOWN
