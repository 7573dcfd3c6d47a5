"""Argument types and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from probe.correlation import probe_domain
from probe.errors import ProbeError, UsageError
from probe.ledger import Ledger, default_path
from probe.logs import LOG_LEVELS
from probe.records import Endpoint


def common_parent(level_default: str = "warning") -> argparse.ArgumentParser:
    """The log options; `level_default` is only shown (`watch` reads its own from its config)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--log-json", action="store_true", help="log JSON lines to stderr (default: key=value)"
    )
    parent.add_argument(
        "--log-level",
        default="warning",
        choices=LOG_LEVELS,
        help=f"log threshold (default: {level_default})",
    )
    return parent


def endpoint(text: str) -> Endpoint:
    """HOST:PORT or [IPv6]:PORT."""
    try:
        return Endpoint.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def domain(text: str) -> str:
    try:
        return probe_domain(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}: {text!r}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < 86400:
        raise argparse.ArgumentTypeError(f"seconds out of range: {text!r}")
    return value


def add_db(parser: argparse._ActionsContainer) -> None:
    parser.add_argument(
        "--db",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"SQLite ledger (default: {default_path()})",
    )


def open_ledger(path: Path | None, *, existing: bool = False) -> Ledger:
    """The ledger; with `existing`, a missing file is an error instead of a new empty ledger
    (commands that only read runs must not create ledgers where a path was mistyped)."""
    target = path or default_path()
    if existing and not target.exists():
        raise UsageError(f"no ledger at {target} (give --db PATH)")
    return Ledger(target, read_only_ok=existing)


def chosen_run(ledger: Ledger, run_id: str | None, last: bool, command: str) -> str:
    """The run a command works on: the RUN_ID given, or the newest with --last."""
    if bool(run_id) == bool(last):
        raise UsageError(f"{command}: give a RUN_ID or --last")
    if run_id:
        return full_run_id(ledger, run_id)
    ids = ledger.run_ids(limit=1)
    if not ids:
        raise UsageError(f"no runs in ledger {ledger.path}")
    return ids[0]


def full_run_id(ledger: Ledger, given: str) -> str:
    """A run id, or a unique prefix of one (as git takes a short hash); an ambiguous prefix is
    a usage error that lists the candidates."""
    found = ledger.runs_with_prefix(given, limit=PREFIX_CANDIDATES + 1)
    if given in found or len(found) == 1:
        return given if given in found else found[0]
    if not found:
        raise UsageError(f"no run {given!r} in ledger {ledger.path}")
    listed = ", ".join(found[:PREFIX_CANDIDATES]) + (
        ", …" if len(found) > PREFIX_CANDIDATES else ""
    )
    raise UsageError(f"run id {given!r} is ambiguous: {listed}; give more of it")


PREFIX_CANDIDATES = 8  # run ids an ambiguous prefix lists


def write_json(target: str, data: dict[str, Any]) -> None:
    """`--json -` prints to stdout; anything else is a file path."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    if target == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        Path(target).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror}") from exc


def stop_on_signals() -> asyncio.Event:
    """An event SIGTERM or SIGINT (Ctrl-C) sets, for the long-running commands. Call it before
    saying "listening": a signal sent the moment a supervisor reads that line is then a clean
    stop (exit 0, the ledger closed), not death by the signal's default action."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # On Windows there are no signal handlers in asyncio: Ctrl-C raises KeyboardInterrupt.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


T = TypeVar("T")


class Stopped(ProbeError):
    """A run cut short by SIGINT (Ctrl-C) or SIGTERM; the coroutine recorded what it knew."""

    def __init__(self, signal_name: str):
        super().__init__(f"interrupted by {signal_name}")
        self.signal_name = signal_name


def run_stoppable(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, where SIGINT or SIGTERM cancels `main` (its cleanup runs: a run is
    marked interrupted) and then raises `Stopped`. A second signal during that cleanup is
    ignored; once `main` has ended, signals act as usual again."""

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(main)
        received: list[str] = []

        def stop(sig: signal.Signals) -> None:
            if not received:
                received.append(sig.name)
                task.cancel()

        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            # On Windows there are no signal handlers in asyncio: Ctrl-C raises KeyboardInterrupt.
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop, sig)
                installed.append(sig)
        try:
            return await task
        except asyncio.CancelledError:
            if received:
                raise Stopped(received[0]) from None
            raise
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    try:
        return asyncio.run(guarded())
    except KeyboardInterrupt:  # no handler could be installed: asyncio cancelled `main` itself
        raise Stopped("SIGINT") from None


def own_command() -> str:
    """How to run this very program again from the user's shell, for the commands a subcommand
    suggests: `notifyprobe` when PATH finds this program, else the path it was started by
    (`.venv/bin/notifyprobe` after `make demo`, with no venv activated)."""
    started_as = sys.argv[0]
    if Path(started_as).name == "__main__.py":  # python -m probe
        return f"{shlex.quote(sys.executable)} -m probe"
    on_path = shutil.which("notifyprobe")
    if on_path and os.path.realpath(on_path) == os.path.realpath(started_as):
        return "notifyprobe"
    return shlex.quote(started_as)
