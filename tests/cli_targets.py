"""What tests/test_cli_helper.py runs both in a real `python -c` process and forked by tests.cli:
functions as `python -m probe` runs probe.cli.main (their arguments in sys.argv), in a module
that imports little, so the real spawns stay cheap."""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import sys
import threading
import time

import structlog


def report() -> int:
    """What a process sees of its start: argv, cwd, env, fds, streams, signals, threads, logs."""
    streams = {
        name: [
            stream.isatty(),
            stream.encoding,
            stream.errors,
            getattr(stream, "line_buffering", None),
            getattr(stream, "write_through", None),
        ]
        for name, stream in (("stdin", sys.stdin), ("stdout", sys.stdout), ("stderr", sys.stderr))
    }
    sigs = ("SIGINT", "SIGTERM", "SIGPIPE", "SIGCHLD", "SIGHUP", "SIGQUIT", "SIGUSR1")
    seen = {
        "argv": sys.argv[1:],
        "cwd": os.getcwd(),
        "var": os.environ.get("CLI_HELPER_VAR"),
        "unset": "CLI_HELPER_UNSET" in os.environ,
        "fds": sorted(os.listdir("/proc/self/fd")),
        "streams": streams,
        "std_equal": [sys.stdout is sys.__stdout__, sys.stderr is sys.__stderr__],
        "signals": {name: str(signal.getsignal(getattr(signal, name))) for name in sigs},
        "blocked": sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "threads": threading.active_count(),
        "structlog_configured": structlog.is_configured(),
        "log_handlers": len(logging.getLogger().handlers),
        "stdin": sys.stdin.read(),
    }
    print(json.dumps(seen))
    return 0


def returns() -> int:
    print("out", end="")  # no newline, no flush: the exit flushes it
    print("err", file=sys.stderr)
    return int(sys.argv[1])


def exits() -> None:
    arg = sys.argv[1]
    raise SystemExit(int(arg) if arg.lstrip("-").isdigit() else arg)


def crashes() -> None:
    raise ValueError("boom")


def waits_for_its_thread() -> int:
    def later() -> None:
        time.sleep(0.3)
        print("thread done")

    threading.Thread(target=later).start()
    atexit.register(print, "atexit ran")
    return 0


def sleeps() -> int:
    print("ready", file=sys.stderr, flush=True)
    time.sleep(30)
    return 0
