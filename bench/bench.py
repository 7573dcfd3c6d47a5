"""`make bench`: every figure measured side by side with its reference in one run.

Absolute times drift on a shared machine, so each figure is a ratio against a reference run in
the same process, interleaved and repeated; the spread of the repeats is the noise band. The
run exits non-zero when a target is missed by more than that band.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiosmtplib

from bench.figures import Figure, lab_gateway_argv, peak_rss_mib, spread, timed
from probe.correlation import TokenKey, recipient_for, sender_for
from probe.delivery.burst import compose, send_burst
from probe.delivery.run import ProbeSettings, run_probe
from probe.delivery.settings import MAX_COUNT, BurstSettings
from probe.delivery.settle import (
    DEFAULT_WINDOW_S,
    LEARNED_FLOOR_S,
    MIN_HEALTHY_RUNS,
)
from probe.lab.gateway import FaultMode, LabGateway, free_port
from probe.ledger import Ledger
from probe.logs import configure
from probe.records import Endpoint, Run, SettleWindow, WindowSource

PY = sys.executable
HERE = Path(__file__).resolve().parent
DOMAIN = "probe.invalid"
BENCH_KEY = TokenKey.generate()  # the reference sender signs like the probe: same bytes on the wire


@contextmanager
def service(argv: list[str], stream: str = "stderr") -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Start a server process and yield it with the port from its 'listening on' line."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE if stream == "stdout" else subprocess.DEVNULL,
        stderr=subprocess.PIPE if stream == "stderr" else subprocess.DEVNULL,
        text=True,
    )
    try:
        announced = proc.stdout if stream == "stdout" else proc.stderr
        assert announced is not None  # the stream it listens on is a pipe
        line = announced.readline()
        match = re.search(r"listening on [\d.]+:(\d+)", line)
        if not match:
            raise RuntimeError(f"{argv[:4]} did not start: {line!r}")
        yield proc, int(match.group(1))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def smtp_source(port: int, count: int, rcpt: str, sessions: int = 20) -> float:
    """Seconds Postfix's smtp-source needs to push `count` 1 KiB messages into `port`."""
    started = time.perf_counter()
    subprocess.run(
        [
            "smtp-source",
            "-d",
            "-s",
            str(sessions),
            "-m",
            str(count),
            "-l",
            "1024",
            "-f",
            f"bench@{DOMAIN}",
            "-t",
            rcpt,
            f"127.0.0.1:{port}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=600,
    )
    return time.perf_counter() - started


# -- 1. sink throughput, durable -------------------------------------------------------------


def sink_throughput(count: int, repeats: int) -> list[Figure]:
    durable, counting = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "ledger.sqlite3"
            run_id = "0123456789"
            with Ledger(db) as ledger:
                ledger.create_run(Run(run_id, "bench", DOMAIN, 1, time.time()), control=False)
                rcpt = recipient_for(ledger.token_key.token(run_id, 1), DOMAIN)
            argv = [PY, "-m", "probe", "sink", "--listen", "127.0.0.1:0", "--db", str(db)]
            with service(argv) as (_, port):
                durable.append(count / smtp_source(port, count, rcpt))
            with Ledger(db) as ledger:
                delivered = ledger.delivery_count(run_id)
            assert delivered == count, f"sink recorded {delivered} of {count}"
        with service([PY, str(HERE / "counting_sink.py"), "0"], stream="stdout") as (_, port):
            counting.append(count / smtp_source(port, count, rcpt))
    ratio_samples = [d / c for d, c in zip(durable, counting, strict=True)]
    return [
        Figure(
            f"sink throughput, durable ({count} msgs, smtp-source -d -s 20 -l 1024)",
            statistics.median(durable),
            "msg/s",
            "bare aiosmtpd that only counts",
            statistics.median(counting),
            statistics.median(ratio_samples),
            0.7,
            spread(ratio_samples),
        )
    ]


# -- 2. burst sender throughput ----------------------------------------------------------------


async def bare_aiosmtplib(port: int, count: int, connections: int) -> float:
    """The reference sender: aiosmtplib.sendmail over reused connections, nothing recorded."""
    date = "Sat, 21 Nov 2026 10:00:00 +0000"
    seqs = iter(range(1, count + 1))

    async def worker() -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as smtp:
            for seq in seqs:
                token = BENCH_KEY.token("0123456789", seq)
                await smtp.sendmail(
                    sender_for("0123456789", DOMAIN),
                    [recipient_for(token, DOMAIN)],
                    compose(token, "0123456789", seq, count, DOMAIN, date),
                )

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return time.perf_counter() - started


async def product_burst(port: int, count: int, connections: int) -> float:
    settings = BurstSettings(count=count, concurrency=connections, per_session=count)
    accepted = 0

    def on_result(_: int, submission) -> None:
        nonlocal accepted
        accepted += submission.accepted

    gateway = Endpoint("127.0.0.1", port)
    started = time.perf_counter()
    # paced=False: the engine's own speed; the CLI's rate cap is policy, measured apart
    await send_burst(
        settings,
        run_id="0123456789",
        gateway=gateway,
        domain=DOMAIN,
        key=BENCH_KEY,
        on_result=on_result,
        paced=False,
    )
    elapsed = time.perf_counter() - started
    assert accepted == count, f"only {accepted} of {count} accepted"
    return elapsed


def burst_throughput(count: int, repeats: int) -> list[Figure]:
    port = free_port()
    sink = subprocess.Popen(
        [
            "smtp-sink",
            *(["-u", "nobody"] if os.geteuid() == 0 else []),
            "-c",
            f"127.0.0.1:{port}",
            "256",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        ours, bare, postfix = [], [], []
        for _ in range(repeats):
            ours.append(count / asyncio.run(product_burst(port, count, 20)))
            bare.append(count / asyncio.run(bare_aiosmtplib(port, count, 20)))
            postfix.append(count / smtp_source(port, count, f"x@{DOMAIN}"))
    finally:
        sink.terminate()
        sink.wait(timeout=10)
    ratios = [o / b for o, b in zip(ours, bare, strict=True)]
    return [
        Figure(
            f"burst sender ({count} msgs, 20 connections, reused) into smtp-sink",
            statistics.median(ours),
            "msg/s",
            "bare aiosmtplib, 20 connections",
            statistics.median(bare),
            statistics.median(ratios),
            0.8,
            spread(ratios),
        ),
        Figure(
            "burst sender vs Postfix smtp-source -d -s 20 (same shape)",
            statistics.median(ours),
            "msg/s",
            "smtp-source",
            statistics.median(postfix),
            statistics.median(ours) / statistics.median(postfix),
            None,
            spread([o / p for o, p in zip(ours, postfix, strict=True)]),
        ),
    ]


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


# -- 3. end to end through the lab gateway -----------------------------------------------------


def end_to_end(count: int) -> tuple[float, dict[str, float]]:
    """msg/s of a full burst through the lab gateway, and each process's peak memory (MiB)."""
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "ledger.sqlite3")
        sink_argv = [PY, "-m", "probe", "sink", "--listen", "127.0.0.1:0", "--db", db]
        with service(sink_argv) as (sink, sink_port):
            gateway_argv = lab_gateway_argv(sink_port)
            with service(gateway_argv) as (gateway, gateway_port):
                started = time.perf_counter()
                burst = subprocess.Popen(
                    [
                        PY,
                        "-m",
                        "probe",
                        "burst",
                        "--gateway",
                        f"127.0.0.1:{gateway_port}",
                        "--sink",
                        f"127.0.0.1:{sink_port}",
                        "--no-sink",
                        "--db",
                        db,
                        "--count",
                        str(count),
                        "--concurrency",
                        "20",
                        "--per-session",
                        str(count),
                        "--timeout",
                        "120",
                        "--slow-after",
                        "3600",
                        "--max-rate",
                        "1000",
                        "--json",
                        os.devnull,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                burst_peak = 0.0
                while burst.poll() is None:
                    burst_peak = max(burst_peak, peak_rss_mib(burst.pid))
                    time.sleep(0.1)
                elapsed = time.perf_counter() - started
                if burst.returncode != 0:
                    said = burst.stderr.read() if burst.stderr else ""
                    raise RuntimeError(f"burst exit {burst.returncode}: {said}")
                memory = {
                    "sink": peak_rss_mib(sink.pid),
                    "lab gateway": peak_rss_mib(gateway.pid),
                    "burst": burst_peak,
                }
    return count / elapsed, memory


def end_to_end_figures(messages: int) -> list[Figure]:
    """One burst is at most MAX_COUNT notifications (the anti mail-bomb cap of `burst`), so a
    larger `--messages` measures the end to end path at that cap."""
    count = min(messages, MAX_COUNT)
    rate, memory = end_to_end(count)
    _, small = end_to_end(max(1, count // 10))
    growth = memory["sink"] / small["sink"]
    memo = ", ".join(f"{name} {mib:.0f} MiB" for name, mib in memory.items())
    return [
        Figure(
            f"end to end through the lab gateway ({count} msgs; peak {memo})",
            rate,
            "msg/s",
            "(no reference: informative)",
            rate,
            1.0,
            None,
            0.0,
        ),
        Figure(
            f"sink peak memory, {count} vs {count // 10} messages",
            memory["sink"],
            "MiB",
            f"sink after {count // 10}",
            small["sink"],
            growth,
            1.25,
            0.0,
            False,
        ),
    ]


# -- 4. time to a critical verdict: default window, learned window -------------------------------


async def first_only_verdict_s(
    ledger: Ledger, port: int, mode: str = "first-only"
) -> tuple[float, SettleWindow | None]:
    """A first-only lab gateway on `port`, 20 notifications, default options: start to verdict.
    `first-only:bounce` returns every later notification as a bounce instead of losing it."""
    sink = Endpoint("127.0.0.1", free_port())
    gateway = LabGateway(Endpoint("127.0.0.1", port), sink, FaultMode.parse(mode))
    async with gateway as gw:
        started = time.perf_counter()
        outcome = await run_probe(
            ledger, ProbeSettings(gw.listen, sink, BurstSettings(count=20, per_session=5))
        )
        elapsed = time.perf_counter() - started
    assert outcome.verdict.pattern.value == "first_only", outcome.verdict.pattern
    return elapsed, outcome.record.run.options.settle


async def healthy_history(ledger: Ledger, port: int, runs: int) -> None:
    """The same gateway address before it broke: `runs` healthy runs in the ledger."""
    sink = Endpoint("127.0.0.1", free_port())
    async with LabGateway(Endpoint("127.0.0.1", port), sink, FaultMode("healthy")) as gw:
        for _ in range(runs):
            settings = ProbeSettings(gateway=gw.listen, sink=sink, burst=BurstSettings(count=20))
            assert (await run_probe(ledger, settings)).verdict.pattern.value == "healthy"


async def slow_spell_verdict_s(ledger: Ledger, port: int, hold_s: float) -> tuple[float, str]:
    """The same gateway address, fast in its history, now holding every message `hold_s`
    before relaying it (a resolver timeout, a filter restarting): start to verdict."""
    sink = Endpoint("127.0.0.1", free_port())
    async with LabGateway(
        Endpoint("127.0.0.1", port), sink, FaultMode("slow", delay_s=hold_s)
    ) as gw:
        started = time.perf_counter()
        outcome = await run_probe(
            ledger, ProbeSettings(gw.listen, sink, BurstSettings(count=20, per_session=5))
        )
        elapsed = time.perf_counter() - started
    window = outcome.record.run.options.settle
    assert window is not None and window.source is WindowSource.LEARNED, window
    assert outcome.verdict.severity.value < 2, outcome.verdict.summary  # late is not lost
    return elapsed, outcome.verdict.pattern.value


def time_to_verdict(repeats: int) -> list[Figure]:
    fixed_timeout_s = 30.0  # a mail-loop check with a fixed delivery timeout needs all of it
    hold_s = 4.0
    default, learned, bounced, spell = [], [], [], []
    spell_patterns: set[str] = set()
    for _ in range(repeats):  # interleaved, so drift hits both sides alike
        with tempfile.TemporaryDirectory() as tmp:
            with Ledger(Path(tmp) / "empty.sqlite3") as ledger:
                elapsed, window = asyncio.run(first_only_verdict_s(ledger, free_port()))
                assert window is not None and window.source is WindowSource.DEFAULT, window
                default.append(elapsed)
            with Ledger(Path(tmp) / "history.sqlite3") as ledger:
                port = free_port()
                asyncio.run(healthy_history(ledger, port, MIN_HEALTHY_RUNS))
                elapsed, window = asyncio.run(first_only_verdict_s(ledger, port))
                assert window is not None and window.source is WindowSource.LEARNED, window
                learned.append(elapsed)
            with Ledger(Path(tmp) / "spell.sqlite3") as ledger:
                port = free_port()
                asyncio.run(healthy_history(ledger, port, MIN_HEALTHY_RUNS))
                elapsed, pattern = asyncio.run(slow_spell_verdict_s(ledger, port, hold_s))
                spell.append(elapsed)
                spell_patterns.add(pattern)
            with Ledger(Path(tmp) / "bounced.sqlite3") as ledger:
                elapsed, window = asyncio.run(
                    first_only_verdict_s(ledger, free_port(), "first-only:bounce")
                )
                assert window is not None and window.source is WindowSource.DEFAULT, window
                bounced.append(elapsed)
    reference = "fixed 30 s delivery timeout (mail-loop checks)"
    return [
        Figure(
            "time to a critical verdict, first-only gateway, 20 notifications, default "
            f"window ({DEFAULT_WINDOW_S:g} s, no history)",
            statistics.median(default),
            "s",
            reference,
            fixed_timeout_s,
            statistics.median(default) / fixed_timeout_s,
            0.6,
            spread(default),
            False,
        ),
        Figure(
            "time to a critical verdict, same gateway, window learned from "
            f"{MIN_HEALTHY_RUNS} healthy runs (floor {LEARNED_FLOOR_S:g} s)",
            statistics.median(learned),
            "s",
            f"the default settle window ({DEFAULT_WINDOW_S:g} s)",
            DEFAULT_WINDOW_S,
            statistics.median(learned) / DEFAULT_WINDOW_S,
            0.4,
            spread(learned),
            False,
        ),
        Figure(
            f"time to a verdict, same fast history, then every message held {hold_s:g} s: "
            f"{'/'.join(sorted(spell_patterns))}, never critical",
            statistics.median(spell),
            "s",
            f"the hold plus the learned floor ({hold_s:g} + {LEARNED_FLOOR_S:g} s)",
            hold_s + LEARNED_FLOOR_S,
            statistics.median(spell) / (hold_s + LEARNED_FLOOR_S),
            1.0,
            spread(spell),
            False,
        ),
        Figure(
            "time to a critical verdict, first-only gateway whose later notifications all "
            "bounce, no history",
            statistics.median(bounced),
            "s",
            f"the default settle window it no longer waits out ({DEFAULT_WINDOW_S:g} s)",
            DEFAULT_WINDOW_S,
            statistics.median(bounced) / DEFAULT_WINDOW_S,
            0.2,
            spread(bounced),
            False,
        ),
    ]


# -- 5. module scan ----------------------------------------------------------------------------


def psutil_memory_maps() -> None:
    import psutil

    for proc in psutil.process_iter():
        try:
            proc.memory_maps()
        except (psutil.Error, OSError):
            continue


def lsof() -> None:
    subprocess.run(
        ["lsof", "-n"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        timeout=120,
    )


@contextmanager
def extra_processes(count: int) -> Iterator[None]:
    procs = [subprocess.Popen(["sleep", "600"]) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def module_scan_figures(rounds: int) -> list[Figure]:
    from bench.module_scan import plain_read
    from fixtures.hold_module import upgraded_while_loaded
    from probe.host.inventory import take_inventory
    from probe.host.platform.linux import LinuxModules

    figures: list[Figure] = []
    source = LinuxModules()
    with tempfile.TemporaryDirectory() as tmp:
        with upgraded_while_loaded(Path(tmp) / "MPNotifyPerf.dll"):  # the held copy is stale
            for extra in (0, 200):
                with extra_processes(extra):
                    plain_read()
                    scans, reads = [], []
                    for _ in range(rounds):  # interleaved, so drift hits both sides alike
                        reads += timed(plain_read, 1)
                        scans += timed(lambda: take_inventory(source, ["MPNotifyPerf.dll"]), 1)
                    ratios = [s / r for r, s in zip(reads, scans, strict=True)]
                    label = f"+{extra} processes" if extra else "this machine"
                    scan_ms = statistics.median(scans) * 1000
                    figures.append(
                        Figure(
                            f"module scan, one name, one stale hit ({label})",
                            scan_ms,
                            "ms",
                            "plain read of every /proc/*/maps",
                            statistics.median(reads) * 1000,
                            statistics.median(ratios),
                            2.0,
                            spread(ratios),
                            False,
                        )
                    )
                    mm = statistics.median(timed(psutil_memory_maps, 3)) * 1000
                    figures.append(
                        Figure(
                            f"module scan vs psutil memory_maps() on every process ({label})",
                            scan_ms,
                            "ms",
                            "psutil memory_maps()",
                            mm,
                            scan_ms / mm,
                            None,
                            0.0,
                            False,
                        )
                    )
                    if shutil.which("lsof"):
                        ls = statistics.median(timed(lsof, 3)) * 1000
                        figures.append(
                            Figure(
                                f"module scan vs lsof -n ({label})",
                                scan_ms,
                                "ms",
                                "lsof -n",
                                ls,
                                scan_ms / ls,
                                None,
                                0.0,
                                False,
                            )
                        )
    return figures


def fleet(_: argparse.Namespace) -> list[Figure]:
    from bench.fleet import fleet_figures

    return fleet_figures()


def hostile_figures(rounds: int) -> list[Figure]:
    from bench.hostile import module_scan_beside_mapped_files, reg_reader

    return module_scan_beside_mapped_files(rounds) + reg_reader(rounds)


# -- 6. start-up -------------------------------------------------------------------------------

# The libraries the burst path cannot do without: its own cost is what it adds to these.
BURST_LIBRARIES = "asyncio, ssl, sqlite3, aiosmtpd.smtp, aiosmtplib, structlog, psutil, pefile"
BURST_NAGIOS = ["burst", "--gateway", "127.0.0.1:25", "--format", "nagios"]


def started_s(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env, timeout=60)
    return time.perf_counter() - started


def import_s(code: str, env: dict[str, str]) -> float:
    """Seconds a fresh interpreter spends in `code` (the imports), startup excluded."""
    timed_code = f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
    out = subprocess.run(
        [PY, "-c", timed_code], check=True, capture_output=True, text=True, env=env, timeout=60
    )
    return float(out.stdout)


def start_up(rounds: int) -> list[Figure]:
    # As installed: bytecode cached (a session with PYTHONDONTWRITEBYTECODE compiles every time).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    script = str(Path(PY).with_name("notifyprobe"))
    path = f"import probe.cli; probe.cli.build_parser({BURST_NAGIOS!r})"
    import_s(path, env)  # writes the bytecode cache once
    version, bare, burst, libraries = [], [], [], []
    for _ in range(rounds):  # interleaved, so drift hits both sides alike
        version.append(started_s([script, "--version"], env))
        bare.append(started_s([PY, "-c", "pass"], env))
        burst.append(import_s(path, env))
        libraries.append(import_s(f"import {BURST_LIBRARIES}", env))
    v, b = statistics.median(version), statistics.median(bare)
    p, lib = statistics.median(burst), statistics.median(libraries)
    return [
        Figure(
            "notifyprobe --version, wall time (target ≤ 0.1 s)",
            v,
            "s",
            "python -c pass",
            b,
            v / b,
            0.1 / b,
            spread(version),
            False,
        ),
        Figure(
            "imports of the burst --format nagios path (target ≤ 0.15 s)",
            p,
            "s",
            f"its libraries alone ({BURST_LIBRARIES})",
            lib,
            p / lib,
            0.15 / lib,
            spread(burst),
            False,
        ),
    ]


# -- report ------------------------------------------------------------------------------------


def render(figures: list[Figure]) -> str:
    lines = [
        "| figure | value | reference | ratio | target | noise | ok |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        bound = "≥" if f.higher_is_better else "≤"
        target = "—" if f.target is None else f"{bound} {f.target:.3g}"
        lines.append(
            f"| {f.name} | {f.value:,.2f} {f.unit} | {f.reference}: {f.reference_value:,.2f} "
            f"| {f.ratio:.3g} | {target} | ±{f.noise:.0%} | {'yes' if f.passed else 'NO'} |"
        )
    return "\n".join(lines)


SUITES: dict[str, Callable[[argparse.Namespace], list[Figure]]] = {
    "sink": lambda a: sink_throughput(a.messages, a.repeats),
    "burst": lambda a: burst_throughput(min(a.messages // 2, MAX_COUNT), a.repeats),
    "e2e": lambda a: end_to_end_figures(a.messages),
    "verdict": lambda a: time_to_verdict(a.repeats),
    "modules": lambda a: module_scan_figures(a.repeats * 3),
    "hostile": lambda a: hostile_figures(a.repeats),
    "fleet": fleet,
    "start": lambda a: start_up(a.repeats * 7),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--messages",
        type=int,
        default=10_000,
        help=f"messages per throughput figure (end to end: at most {MAX_COUNT:,}, one burst)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=sorted(SUITES), default=sorted(SUITES))
    args = parser.parse_args()
    configure(level="warning")
    if {"sink", "burst"} & set(args.only) and not shutil.which("smtp-source"):
        print("bench: Postfix's smtp-source is missing (Debian package postfix)", file=sys.stderr)
        return 3
    if args.messages < 10 or args.repeats < 1:
        print("bench: --messages must be at least 10 and --repeats at least 1", file=sys.stderr)
        return 3
    figures: list[Figure] = []
    for name in args.only:
        print(f"bench: measuring {name} …", file=sys.stderr, flush=True)
        try:
            figures.extend(SUITES[name](args))
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            print(f"bench: {name} could not be measured: {exc}", file=sys.stderr)
            return 3
    print(render(figures))
    return 0 if all(f.passed for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
