"""Run `notifyprobe` in a real child process that skips interpreter start and imports.

Why: the suite runs the CLI about 300 times; each `python -m probe` spends ~0.3 s of CPU starting
the interpreter and importing aiosmtpd, aiosmtplib, psutil, pefile, structlog and the package,
and the suite is CPU-bound on two cores. Here each run is a child forked from one forkserver per
test process (multiprocessing's "forkserver": a fresh, single-threaded interpreter that has only
imported the CLI's modules, never run any of it), so a run costs a fork instead.

What stays the same as `python -m probe ARGS` (what these tests ran before): a separate process
with its own pid, exit code (`main()`'s return, SystemExit, or 1 and a traceback on stderr for an
uncaught exception; a negative code when a signal killed it), signal dispositions of a fresh
interpreter (SIGINT raises KeyboardInterrupt, SIGTERM kills), stdin/stdout/stderr on fds 0/1/2
(files or pipes, never a TTY, fresh sys.std* over them, stdout block-buffered unless
PYTHONUNBUFFERED is set, stderr line-buffered), no other fd open, `os.environ` replaced by `env`
(the test process's environment when None), its own cwd, `sys.argv` as `python -m probe` sets
it, logging and structlog unconfigured, non-daemon threads and atexit handlers run at exit.
What differs: the interpreter's start-up settings (PYTHON* variables such as PYTHONPATH or
PYTHONHASHSEED, locale) are those of the forkserver, started from the test process's
environment; `sys.modules` holds every CLI module from the start; the process's parent is the
forkserver, so `RUSAGE_CHILDREN` of the test process does not count it; /proc/PID/cmdline is the
forkserver's.

What stays a real spawn (`subprocess` with `.venv/bin/notifyprobe` or `python -m probe`), because
the spawn itself is under test: tests/test_docs.py (the docs' commands through the shell and the
console script), import-time and start-up checks (tests/test_layout.py, and
`python -m probe --version` in tests/test_cli.py), privilege drops
(tests/host/test_unprivileged_scan.py), the process name and memory bound of a burst
(tests/test_failure_kinds.py, tests/delivery/test_hostile_gateways.py), processes that another
process inspects by name, executable or mapped files (tests/diagnosis/test_restarts_e2e.py),
bursts through a real Postfix, run as a user runs them (tests/test_real_mta.py,
tests/test_real_bounces.py), and one end-to-end run per subcommand family through the console
script (tests/test_console_script.py).
"""

from __future__ import annotations

import atexit
import importlib
import io
import multiprocessing
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing import reduction, spawn
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

ROOT = Path(__file__).resolve().parents[1]
# `python -m probe` sets sys.argv[0] to the module's path (probe.cli.common.own_command reads it).
ARGV0 = str(ROOT / "probe" / "__main__.py")
COMMAND = (sys.executable, "-m", "probe")  # what `args` of a result says was run
ENTRY = "probe.cli:main"  # what the child runs (tests/test_cli_helper.py runs others)

PRELOAD = [
    "tests.cli",
    "probe.cli",
    *(
        f"probe.cli.{name}"
        for name in (
            "burst",
            "burst_options",
            "common",
            "demo",
            "diagnosis_options",
            "drift",
            "evidence",
            "evidence_options",
            "fix",
            "hardening",
            "lab",
            "modules",
            "postflight",
            "preflight",
            "runs",
            "sink",
            "upgrade_options",
            "verdict",
            "watch",
        )
    ),
    "probe.logs",
    "probe.reporting",
]

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)
_preparation_data = spawn.get_preparation_data


def _without_main(name: str) -> dict[str, Any]:
    """What multiprocessing hands a child, minus the parent's `__main__`: a child would run
    the test runner's main script again (`.venv/bin/pytest`) before `probe.cli.main`."""
    data: dict[str, Any] = _preparation_data(name)
    data.pop("init_main_from_path", None)
    data.pop("init_main_from_name", None)
    return data


spawn.get_preparation_data = _without_main

T = TypeVar("T", str, bytes)


class _Fd:
    """An fd of this process, handed to the child as its own duplicate (SCM_RIGHTS)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        return _Fd._received, (reduction.DupFd(self.fd),)

    @staticmethod
    def _received(dup: Any) -> int:
        return int(dup.detach())


@dataclass(frozen=True)
class _Spec:
    args: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    fds: tuple[Any, Any, Any]  # _Fd in this process, int in the child
    entry: str  # "module:function", called as `python -m probe` calls probe.cli.main


def _child(spec: _Spec) -> None:
    """In the forked child: become `python -m probe ARGS`, run it, exit as it would."""
    code = 1
    try:
        _become(spec)
        code = _run(spec.entry)
    except BaseException:  # a bug of this helper: say so where the test will look
        os.write(2, "".join(traceback.format_exc()).encode())
    finally:
        os._exit(code)


def _become(spec: _Spec) -> None:
    for target, fd in enumerate(spec.fds):
        os.dup2(fd, target)  # dup2 leaves 0/1/2 inheritable, as a spawn would
    sys.stdin.close()  # multiprocessing's /dev/null (a file this process owns)
    os.closerange(3, 1 << 16)  # nothing but 0, 1, 2 is open in a fresh `python -m probe`
    os.environ.clear()
    os.environ.update(spec.env)
    time.tzset()
    os.chdir(spec.cwd)
    sys.argv = [ARGV0, *spec.args]
    encoding, _, errors = spec.env.get("PYTHONIOENCODING", "").partition(":")
    unbuffered = bool(spec.env.get("PYTHONUNBUFFERED"))  # read at start, as the interpreter does
    streams = {
        name: _stdio(fd, encoding, errors, unbuffered)
        for fd, name in enumerate(("stdin", "stdout", "stderr"))
    }
    for name, stream in streams.items():  # sys.__stdout__ too: a fresh process has them equal
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _stdio(fd: int, encoding: str, errors: str, unbuffered: bool) -> io.TextIOWrapper:
    """A standard stream as the interpreter makes it for a file or pipe (never a TTY here):
    stdin buffered; stdout and stderr unbuffered under PYTHONUNBUFFERED, else stdout
    block-buffered and stderr line-buffered; stderr's errors always backslashreplace."""
    like = (sys.__stdin__, sys.__stdout__, sys.__stderr__)[fd]  # the forkserver's, from its start
    write = fd != 0
    buffering = 0 if unbuffered and write else -1
    buffer: Any = open(fd, "wb" if write else "rb", buffering=buffering, closefd=False)  # noqa: SIM115
    return io.TextIOWrapper(
        buffer,
        encoding=encoding or (like.encoding if like else "utf-8"),
        errors="backslashreplace" if fd == 2 else errors or (like.errors if like else "strict"),
        newline="\n",
        line_buffering=fd == 2 and not unbuffered,
        write_through=unbuffered,
    )


def _run(entry: str) -> int:
    """`raise SystemExit(main())` as the interpreter runs it, then its shutdown."""
    try:
        module, _, name = entry.partition(":")
        main = getattr(importlib.import_module(module), name)
        code = _exit_code(main())
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except BaseException as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
        sys.stderr.flush()
        if isinstance(exc, KeyboardInterrupt):  # the interpreter re-raises SIGINT on itself
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]  # joins non-daemon threads
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = 120  # what the interpreter exits with when flushing stdout fails
    return code


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


class CliProcess(Generic[T]):
    """A running `notifyprobe` (from `start_cli`): the parts of subprocess.Popen tests use."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None,
        cwd: str | os.PathLike[str] | None,
        stdin: int | IO[Any] | None,
        stdout: int | IO[Any] | None,
        stderr: int | IO[Any] | None,
        text: bool,
        entry: str = ENTRY,
    ) -> None:
        self.args = [*COMMAND, *args]
        self.returncode: int | Any = None  # as typeshed types Popen's
        self._text = text
        self.stdin: IO[T] | None = None
        self.stdout: IO[T] | None = None
        self.stderr: IO[T] | None = None
        ours: list[int] = []  # the child's ends: closed here once it has them
        mine: list[IO[Any]] = []
        fds: list[_Fd] = []
        for n, how in enumerate((stdin, stdout, stderr)):
            if how == PIPE:
                r, w = os.pipe()
                child, parent = (r, w) if n == 0 else (w, r)
                ours.append(child)
                end = open(parent, "wb" if n == 0 else "rb")  # noqa: SIM115
                wrapped: IO[Any] = io.TextIOWrapper(end) if text else end
                if n == 0:
                    self.stdin = wrapped
                elif n == 1:
                    self.stdout = wrapped
                else:
                    self.stderr = wrapped
                mine.append(wrapped)
                fds.append(_Fd(child))
            elif how is None or how == DEVNULL:
                # None: a test process's own stdin/out/err are pytest's; a spawn from it that
                # inherits them writes where nobody reads. /dev/null is the same to a test.
                fd = os.open(os.devnull, os.O_RDWR)
                ours.append(fd)
                fds.append(_Fd(fd))
            elif isinstance(how, int):
                fds.append(_Fd(how))
            else:
                fds.append(_Fd(how.fileno()))
        spec = _Spec(
            tuple(args),
            dict(os.environ if env is None else env),
            os.fspath(cwd) if cwd is not None else os.getcwd(),
            (fds[0], fds[1], fds[2]),
            entry,
        )
        self._process = _context.Process(target=_child, args=(spec,), name="notifyprobe")
        self._process.daemon = True  # a test that forgets one does not hang the worker's exit
        try:
            self._process.start()
        except BaseException:
            for opened in mine:
                opened.close()
            raise
        finally:
            for fd in ours:
                os.close(fd)
        assert self._process.pid is not None
        self.pid: int = self._process.pid

    def poll(self) -> int | None:
        if self.returncode is None and not self._process.is_alive():
            self.returncode = self._process.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self.poll() is None:
            assert timeout is not None
            raise subprocess.TimeoutExpired(self.args, timeout)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[T | None, T | None]:
        """Read stdout and stderr (the pipes among them) to their end, then wait."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.stdin is not None:
            self.stdin.close()
        chunks: dict[int, list[bytes]] = {}
        with selectors.DefaultSelector() as selector:
            for stream in (self.stdout, self.stderr):
                if stream is not None:
                    selector.register(stream.fileno(), selectors.EVENT_READ)
                    chunks[stream.fileno()] = []
            while selector.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0)
                for key, _ in selector.select(left):
                    data = os.read(key.fd, 65536)
                    if data:
                        chunks[key.fd].append(data)
                    else:
                        selector.unregister(key.fd)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.wait(left)
        got = [
            None if s is None else self._decode(b"".join(chunks[s.fileno()]))
            for s in (self.stdout, self.stderr)
        ]
        for s in (self.stdout, self.stderr):
            if s is not None:
                s.close()
        return got[0], got[1]

    def _decode(self, data: bytes) -> Any:
        return _text(data) if self._text else data

    def __enter__(self) -> CliProcess[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                stream.close()
        if self.poll() is None:
            self.wait()


def _text(data: bytes) -> str:
    """Bytes as subprocess's text mode decodes them (locale encoding, universal newlines)."""
    return io.TextIOWrapper(io.BytesIO(data)).read()


def start_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdin: int | IO[Any] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    text: bool = True,
    entry: str = ENTRY,
) -> CliProcess[Any]:
    """`subprocess.Popen([python, "-m", "probe", *args], ...)`, forked from the forkserver."""
    return CliProcess(
        args, env=env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr, text=text, entry=entry
    )


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    input: str | bytes | None = None,
    timeout: float | None = 60,
    cwd: str | os.PathLike[str] | None = None,
    text: bool = True,
    entry: str = ENTRY,
) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run([python, "-m", "probe", *args], capture_output=True, text=text, ...)`:
    the exit code and both outputs of one run, killed and TimeoutExpired after `timeout`."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryFile() as given,
    ):
        if input is not None:
            given.write(input.encode() if isinstance(input, str) else input)
            given.seek(0)
        proc: CliProcess[Any] = CliProcess(
            args,
            env=env,
            cwd=cwd,
            stdin=given if input is not None else None,
            stdout=out,
            stderr=err,
            text=text,
            entry=entry,
        )

        def outputs() -> tuple[Any, Any]:
            out.seek(0)
            err.seek(0)
            got = out.read(), err.read()
            return (_text(got[0]), _text(got[1])) if text else got

        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise subprocess.TimeoutExpired(proc.args, timeout or 0, *outputs()) from None
        return subprocess.CompletedProcess(proc.args, code, *outputs())


def stop() -> None:
    """Stop this process's forkserver and resource tracker (if they ran) and reap them: their CPU
    time then counts in this process's RUSAGE_CHILDREN, as the spawns' did."""
    from multiprocessing import forkserver, resource_tracker

    forkserver._forkserver._stop()  # type: ignore[attr-defined]
    resource_tracker._resource_tracker._stop()  # type: ignore[attr-defined]
