"""The `notifyprobe` command line: parse arguments, wire the parts, map outcomes to exit codes.

Each subcommand lives in its own module with `add_parser(subparsers, parents)` and `run(args)`,
imported only when that subcommand runs; option sets several share live in the `*_options`
modules, which never import a subcommand.
Exit codes follow the monitoring-plugin convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the
probe itself could not run — always with a one-line error, never a traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import import_module
from itertools import pairwise
from typing import NoReturn

from probe import __version__
from probe.errors import ProbeError, UsageError

# In the order `notifyprobe --help` lists them; each is the module probe.cli.NAME.
COMMANDS = (
    "burst",
    "sink",
    "verdict",
    "runs",
    "evidence",
    "watch",
    "lab",
    "demo",
    "modules",
    "preflight",
    "postflight",
    "drift",
    "fix",
)
EXIT_UNKNOWN = 3


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is a ProbeError (exit 3, one line) instead of exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser. Given `argv`, only the subcommand it names is built (and its module imported):
    `--version` or a nagios check every minute pays for one subcommand's imports, not twelve."""
    parser = ArgumentParser(
        prog="notifyprobe",
        description="Does the notification gateway still deliver every notification?",
    )
    parser.add_argument("--version", action="version", version=f"notifyprobe {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    chosen = _chosen(argv)
    parents: list[argparse.ArgumentParser] = []
    for name in COMMANDS:
        if name in chosen:
            if not parents:
                from probe.cli.common import common_parent

                parents.append(common_parent())
            import_module(f"probe.cli.{name}").add_parser(subparsers, parents)
        else:
            subparsers.add_parser(name, add_help=False)  # its name only, for argparse's choices
    return parser


def _chosen(argv: Sequence[str] | None) -> tuple[str, ...]:
    """The subcommands to build: the one `argv` names, or all for the full help."""
    if argv is None:
        return COMMANDS
    for arg in argv:  # before the subcommand only -h/--help and --version are valid
        if arg in ("-h", "--help"):
            return COMMANDS
        if not arg.startswith("-"):
            return (arg,) if arg in COMMANDS else ()
    return ()


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser(args_list).parse_args(args_list)
        args.argv = args_list  # for the evidence bundle
        from probe.logs import configure  # structlog: only once a subcommand runs

        quiet = _plugin_output(args_list) and not _given(args_list, "--log-level")
        # A monitoring plugin speaks on stdout only: its log stays quiet unless asked for.
        configure(json_lines=args.log_json, level="error" if quiet else args.log_level)
        return int(args.handler(args))
    except ProbeError as exc:
        return _failed(args_list, f"notifyprobe: error: {exc}", str(exc))
    except KeyboardInterrupt:
        return _failed(args_list, "notifyprobe: interrupted", "interrupted")
    except BrokenPipeError:
        return EXIT_UNKNOWN
    except Exception as exc:  # a bug of ours: still one line and UNKNOWN, the trace on demand
        if os.environ.get("NOTIFYPROBE_TRACEBACK"):
            raise
        kind = type(exc).__name__
        return _failed(
            args_list,
            f"notifyprobe: internal error: {kind}: {exc} (NOTIFYPROBE_TRACEBACK=1 shows where)",
            f"internal error: {kind}: {exc}",
        )


def _failed(argv: Sequence[str], error: str, status: str) -> int:
    """The probe could not run: one line on stderr or, for a monitoring system reading stdout
    (`--format nagios`), its one UNKNOWN status line there instead (never both: a plugin whose
    stderr is merged into its output would show the error twice)."""
    if _plugin_output(argv):
        from probe.reporting import unknown_line

        print(unknown_line(status), flush=True)
    else:
        print(error, file=sys.stderr, flush=True)
    return EXIT_UNKNOWN


def _given(argv: Sequence[str], option: str) -> bool:
    return any(arg == option or arg.startswith(f"{option}=") for arg in argv)


def _plugin_output(argv: Sequence[str]) -> bool:
    """`--format nagios` anywhere in the arguments, whether or not they parse."""
    return any(
        arg == "--format=nagios" or (arg == "--format" and value == "nagios")
        for arg, value in pairwise([*argv, ""])
    )
