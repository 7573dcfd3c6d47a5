"""`--only fleet`: one `notifyprobe watch` driving 200 targets at a 60 s interval (issue #23).

The real service as a subprocess, with a generated TOML config: 200 targets over 10 shared lab
gateways (`notifyprobe lab gateway`, healthy, one process each), 2 notifications per burst, the
default jitter (0.1: the first runs of all 200 start within 6 s), an explicit settle window.
Beside it, at the same time and with the same settings, a watch of 10 targets on its own
gateway: the reference for memory and for scrape latency. Both run a little over one interval
(72 s), so every target runs once and most twice, then stop with SIGTERM.

Gateways are shared: the `settle` key sets every run's window (`WindowSource.OPTION`), so the
window the ledger learns per gateway address is never used, and a target's history (its outage
story) is kept per target, not per gateway. `[limits] max_per_minute` is raised in the config to
what 200 targets send together (the documented key; each target stays within its own caps).

What is measured:

1. every run starts within its interval: the k-th run of a target must start before the watch
   started + k × the interval (from the ledger's `started_at`); the worst lateness against the
   jittered schedule the watch drew (`first_delay`, `next_delay`, same seed) is shown beside it;
2. `/metrics` and `/probe?target=…` latency, 10 requests a second each, on both watches: the
   p99 of the requests answered while a run of that watch was in flight (runs' start and end
   from the ledger). The 10-target watch's runs of healthy gateways last tens of ms, so fewer
   than `MIN_REFERENCE` of its answers may fall in one: its reference is then all its answers
   (the row says which). `/probe` is measured for answers served from a target's last run (the
   target ran less than `min_interval` ago and nothing is due): a fresh `/probe` sends a burst
   and waits for its verdict, seconds by design, and a scraper sending one every 100 ms would
   be a mail bomb the caps refuse anyway. An answer that ran a burst, or waited for a run in
   flight, is counted and left out;
3. memory: peak RSS (VmHWM) of the 200-target watch beside the 10-target one.

Informative beside them: the share of runs judged healthy (every gateway is healthy) and how
long each watch takes to exit after SIGTERM with runs in flight.
"""

from __future__ import annotations

import json
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.figures import Figure, lab_gateway_argv, peak_rss_mib, spread
from probe.lab.gateway import free_port
from probe.monitor.config import Target, load_config
from probe.monitor.watch import first_delay, next_delay

PY = sys.executable
INTERVAL_S = 60.0
JITTER = 0.1  # the default: the first runs of every target start within 6 s
COUNT = 2
OBSERVE_S = 72.0  # a little over one interval: every target runs once, most twice
REQUESTS_PER_S = 10.0
LATENCY_TARGET_MS = 100.0
MIN_REFERENCE = 20  # answers of the reference watch in flight; fewer: all its answers count
SETTLE = "2s"
SCRAPE_TIMEOUT_S = 10.0
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 75.0  # SIGTERM to exit, runs in flight cut and judged; then SIGKILL


class Service:
    """A subprocess whose stderr is read by a thread: its lines, each with when it came."""

    def __init__(self, argv: list[str]):
        self.argv = argv
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[tuple[float, str]] = []
        self._new = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._new:
                self.lines.append((time.time(), line.rstrip("\n")))
                self._new.notify_all()
        with self._new:
            self._new.notify_all()

    def wait_for(self, pattern: str, timeout_s: float = START_TIMEOUT_S) -> tuple[float, str]:
        """The first line matching `pattern` and when it was read; the process must live."""
        deadline = time.monotonic() + timeout_s
        with self._new:
            while True:
                for at, line in self.lines:
                    match = re.search(pattern, line)
                    if match:
                        return at, match.group(1)
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    said = " | ".join(line for _, line in self.lines[-5:])
                    raise RuntimeError(f"{' '.join(self.argv[3:5])} did not start: {said!r}")
                self._new.wait(min(left, 0.5))

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@contextmanager
def started(argv: list[str]) -> Iterator[Service]:
    service = Service(argv)
    try:
        yield service
    finally:
        service.stop()


@dataclass
class Watch:
    """One watch under test: its config, processes, and what the bench saw of it."""

    label: str
    targets: int
    gateways: int
    tmp: Path
    seed: int = 7
    sink_port: int = field(default_factory=free_port)
    service: Service | None = None
    started_at: float = 0.0  # Unix time its scheduler started (its sink is listening)
    metrics_port: int = 0
    schedule: dict[str, list[float]] = field(default_factory=dict)  # offsets from started_at
    plan: list[Target] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.tmp / f"{self.label}.sqlite3"

    def config_text(self, gateway_ports: list[int]) -> str:
        per_minute = self.targets * COUNT * 60.0 / INTERVAL_S
        lines = [
            'domain = "probe.invalid"',
            f'sink = "127.0.0.1:{self.sink_port}"',
            f'ledger = "{self.db}"',
            'metrics = "127.0.0.1:0"',
            f"seed = {self.seed}",
            'log_level = "warning"',
            'stop_drain = "1s"',
            "",
            "[limits]  # all targets together; each keeps the default per-target caps",
            f"max_per_minute = {per_minute:g}",
            "",
            "[defaults]",
            f"interval = {INTERVAL_S:g}",
            f"jitter = {JITTER:g}",
            f"count = {COUNT}",
            f'settle = "{SETTLE}"',
            'timeout = "10s"',
        ]
        for i in range(self.targets):
            port = gateway_ports[i % len(gateway_ports)]
            lines += ["", "[[target]]", f'name = "t{i:03d}"', f'gateway = "127.0.0.1:{port}"']
        return "\n".join(lines) + "\n"

    def start(self, stack: ExitStack) -> None:
        ports = []
        for _ in range(self.gateways):
            gateway = stack.enter_context(started(lab_gateway_argv(self.sink_port)))
            ports.append(int(gateway.wait_for(r"listening on [\d.]+:(\d+)")[1]))
        config = self.tmp / f"{self.label}.toml"
        config.write_text(self.config_text(ports))
        self.plan = list(load_config(config).targets)  # the bench fails early on a bad config
        self.service = stack.enter_context(
            started([PY, "-m", "probe", "watch", "--config", str(config)])
        )
        self.metrics_port = int(self.service.wait_for(r"metrics listening on [\d.]+:(\d+)")[1])
        self.started_at = self.service.wait_for(r"(sink) listening on")[0]
        for target in self.plan:  # the schedule the watch draws, with the same seed
            rng = random.Random(f"{self.seed}:{target.name}")
            at = first_delay(target, rng)
            starts = [at]
            while at < OBSERVE_S + INTERVAL_S:
                at += next_delay(target, rng, 0.0)
                starts.append(at)
            self.schedule[target.name] = starts

    def verdicts(self) -> tuple[Counter[str], Counter[str]]:
        """The patterns of the judged runs, and the causes of those not healthy."""
        patterns: Counter[str] = Counter()
        causes: Counter[str] = Counter()
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            for (text,) in conn.execute("SELECT verdict FROM runs WHERE verdict IS NOT NULL"):
                verdict = json.loads(text)
                patterns[verdict["pattern"]] += 1
                if verdict["pattern"] != "healthy":
                    causes[verdict.get("cause") or verdict["pattern"]] += 1
        return patterns, causes

    def runs(self) -> dict[str, list[tuple[float, float | None]]]:
        """Each target's runs from the ledger, oldest first: (started_at, finished_at)."""
        found: dict[str, list[tuple[float, float | None]]] = {}
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            rows = conn.execute(
                "SELECT json_extract(options, '$.target'), started_at, finished_at FROM runs"
                " ORDER BY started_at"
            ).fetchall()
        for name, start, end in rows:
            found.setdefault(str(name), []).append((float(start), end))
        return found

    def cached_targets(self, now: float) -> list[str]:
        """Targets whose last run is over (in the ledger, as the watch wrote it), started less
        than 50 s ago (min_interval is 60 s) and whose next is not due within 3 s: a /probe of
        one is answered with that run, from memory."""
        ready = []
        for name, runs in self.runs().items():
            start, end = runs[-1]
            if end is None or now - start > 50.0:
                continue
            planned = self.schedule.get(name, [])
            k = len(runs)
            if k < len(planned) and start + planned[k] - planned[k - 1] < now + 3.0:
                continue
            ready.append(name)
        return ready


@dataclass(frozen=True)
class Answer:
    sent: float  # Unix time
    took_s: float
    status: int
    cached: bool | None = None  # /probe: served from the last run
    judged_at: float | None = None  # /probe: when the run served was judged


def request(url: str, probe: bool) -> Answer:
    headers = {"X-Prometheus-Scrape-Timeout-Seconds": f"{SCRAPE_TIMEOUT_S:g}"}
    sent, started_mono = time.time(), time.perf_counter()
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=SCRAPE_TIMEOUT_S + 5
        ) as answer:
            body, status = answer.read().decode(), answer.status
    except urllib.error.HTTPError as exc:
        body, status = "", exc.code
    except OSError:
        body, status = "", 0
    took = time.perf_counter() - started_mono
    if not probe:
        return Answer(sent, took, status)
    cached = re.search(r"^notifyprobe_probe_cached (\S+)$", body, re.M)
    judged = re.search(r"^notifyprobe_probe_run_timestamp_seconds (\S+)$", body, re.M)
    return Answer(
        sent,
        took,
        status,
        cached=bool(float(cached.group(1))) if cached else None,
        judged_at=float(judged.group(1)) if judged else None,
    )


def scrape(watch: Watch, path: str, until: float, answers: list[Answer]) -> None:
    """`path` on `watch`'s metrics listener every 1/REQUESTS_PER_S s until `until`."""
    rng = random.Random(path)
    base = f"http://127.0.0.1:{watch.metrics_port}"
    due = time.time()
    ready: list[str] = []
    looked = 0.0
    while time.time() < until:
        time.sleep(max(0.0, due - time.time()))
        due = max(due + 1.0 / REQUESTS_PER_S, time.time())  # a slow answer skips its slots
        if path == "/probe":
            if time.time() - looked >= 1.0:  # the ledger once a second
                ready, looked = watch.cached_targets(time.time()), time.time()
            if ready:
                answers.append(request(f"{base}/probe?target={rng.choice(ready)}", True))
        else:
            answers.append(request(base + path, False))


def in_flight(spans: list[tuple[float, float]], answer: Answer) -> bool:
    end = answer.sent + answer.took_s
    return any(start < end and answer.sent < finish for start, finish in spans)


def p99_ms(samples: list[float]) -> float:
    if len(samples) < 2:
        return samples[0] * 1000 if samples else float("nan")
    return statistics.quantiles(samples, n=100, method="inclusive")[98] * 1000


def thirds_noise(samples: list[float]) -> float:
    """The spread of the p99 of each third of the run: the repeats of a single run."""
    if len(samples) < 30:
        return 0.0
    k = len(samples) // 3
    return spread([p99_ms(samples[i * k : (i + 1) * k]) for i in range(3)])


@dataclass
class Seen:
    on_time: int = 0
    due: int = 0
    worst_late_s: float = 0.0
    worst_target: str = ""
    ran: int = 0  # targets that ran at least once
    runs: int = 0
    spans: list[tuple[float, float]] = field(default_factory=list)
    patterns: Counter[str] = field(default_factory=Counter)
    causes: Counter[str] = field(default_factory=Counter)


def schedule_kept(watch: Watch, stopped_at: float) -> Seen:
    """Run k of a target is on time when it started before the watch's start + k × interval;
    its lateness is against the schedule the watch drew. A first run that never started is late
    (the stop comes after one whole interval); a later one not started yet counts only toward
    the worst lateness, once it was due."""
    seen = Seen()
    runs = watch.runs()
    seen.patterns, seen.causes = watch.verdicts()
    for target in watch.plan:
        mine = runs.get(target.name, [])
        seen.ran += bool(mine)
        seen.runs += len(mine)
        planned = watch.schedule[target.name]
        previous = watch.started_at
        for k, due in enumerate(planned, start=1):
            # the watch schedules start to start: the k-th is due a drawn period after the
            # (k-1)-th really started, the first a drawn delay after the watch started
            due_at = previous + (due - (planned[k - 2] if k > 1 else 0.0))
            if k <= len(mine):
                start, end = mine[k - 1]
                seen.spans.append((start, end if end is not None else stopped_at))
                late = start - due_at
                seen.due += 1
                seen.on_time += start < watch.started_at + k * target.burst_interval_s
                previous = start
            elif due_at < stopped_at:
                late = stopped_at - due_at  # not started yet: at least this late
                if k == 1:
                    seen.due += 1
            else:
                break
            if late > seen.worst_late_s:
                seen.worst_late_s, seen.worst_target = late, target.name
            if k > len(mine):
                break
    return seen


def fleet_figures(targets: int = 200, gateways: int = 10, small: int = 10) -> list[Figure]:
    answers: dict[tuple[str, str], list[Answer]] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        big = Watch("fleet", targets, gateways, Path(tmp))
        little = Watch("small", small, max(1, small * gateways // targets), Path(tmp))
        little.start(stack)  # the reference first: the scrapes begin as the fleet's runs do
        big.start(stack)
        until = big.started_at + OBSERVE_S
        threads = []
        for watch in (big, little):
            for path in ("/metrics", "/probe"):
                got = answers.setdefault((watch.label, path), [])
                thread = threading.Thread(target=scrape, args=(watch, path, until, got))
                thread.start()
                threads.append(thread)
        for thread in threads:
            thread.join()
        peaks = {}
        for watch in (big, little):
            assert watch.service is not None
            peaks[watch.label] = peak_rss_mib(watch.service.proc.pid)
        stopped_at = time.time()
        stop_s = {}
        for watch in (little, big):
            assert watch.service is not None
            watch.service.stop(STOP_TIMEOUT_S)
            stop_s[watch.label] = time.time() - stopped_at
            code = watch.service.proc.returncode
            if code != 0:
                said = " | ".join(line for _, line in watch.service.lines[-5:])
                raise RuntimeError(f"watch of {watch.targets} targets exit {code}: {said}")
        kept = schedule_kept(big, stopped_at)
        kept_small = schedule_kept(little, stopped_at)
    return figures(targets, small, kept, kept_small, answers, peaks, stop_s)


def latencies(
    answers: list[Answer], spans: list[tuple[float, float]] | None, probe: bool
) -> tuple[list[float], int, int]:
    """Seconds of the answers given while a run was in flight (`spans` None: all of them; for
    /probe: served from the last run, judged before the request); how many were left out as not
    served that way; how many failed (kept: a failure is as slow as it took)."""
    kept, left_out, failed = [], 0, 0
    for a in answers:
        failed += a.status != 200  # kept, with the time it took to fail
        if a.status == 200 and probe and (not a.cached or (a.judged_at or a.sent) > a.sent):
            left_out += 1
        elif spans is None or in_flight(spans, a):
            kept.append(a.took_s)
    return kept, left_out, failed


def figures(
    targets: int,
    small: int,
    kept: Seen,
    kept_small: Seen,
    answers: dict[tuple[str, str], list[Answer]],
    peaks: dict[str, float],
    stop_s: dict[str, float],
) -> list[Figure]:
    share = kept.on_time / kept.due if kept.due else 0.0
    rows = [
        Figure(
            f"watch of {targets} targets, {INTERVAL_S:g} s interval, jitter {JITTER:g}: runs "
            f"started within their interval ({kept.on_time} of {kept.due}; {kept.ran} targets "
            f"ran, {kept.runs} runs in {OBSERVE_S:g} s)",
            share * 100,
            "%",
            "every run",
            100.0,
            share,
            1.0,
            0.0,
        ),
        Figure(
            f"worst start lateness against the drawn schedule ({kept.worst_target}; "
            f"{small} targets: {kept_small.worst_late_s:.2f} s)",
            kept.worst_late_s,
            "s",
            "the interval",
            INTERVAL_S,
            kept.worst_late_s / INTERVAL_S,
            None,
            0.0,
            False,
        ),
    ]
    judged = sum(kept.patterns.values())
    healthy = kept.patterns["healthy"] / judged if judged else 0.0
    causes = ", ".join(f"{n} {c}" for c, n in kept.causes.most_common(3))
    rows.append(
        Figure(
            f"runs of healthy lab gateways judged healthy, {targets} targets (others: "
            f"{causes or 'none'}; {small} targets: {kept_small.patterns['healthy']} of "
            f"{sum(kept_small.patterns.values())})",
            healthy * 100,
            "%",
            "every judged run",
            100.0,
            healthy,
            None,
            0.0,
        )
    )
    for path in ("/metrics", "/probe"):
        probe = path == "/probe"
        ours, left_out, failed = latencies(answers[("fleet", path)], kept.spans, probe)
        ref, _, ref_failed = latencies(answers[("small", path)], kept_small.spans, probe)
        ref_what = "in flight"
        if len(ref) < MIN_REFERENCE:  # its runs end in tens of ms: few scrapes fall in one
            ref, _, ref_failed = latencies(answers[("small", path)], None, probe)
            ref_what = "all answers"
        if not ours or not ref:
            raise RuntimeError(
                f"no {path} answer while runs were in flight ({left_out} left out, {failed} "
                f"failed; reference {len(ref)}, {ref_failed} failed)"
            )
        p99, ref_p99 = p99_ms(ours), p99_ms(ref)
        what = "served from the last run, " if probe else ""
        note = f"; {left_out} that ran or awaited a run left out" if probe else ""
        rows.append(
            Figure(
                f"{path} p99 while runs are in flight, {targets} targets "
                f"({what}{len(ours)} requests, "
                f"p50 {statistics.median(ours) * 1000:.1f} ms, {failed} failed{note}; "
                f"target < {LATENCY_TARGET_MS:g} ms)",
                p99,
                "ms",
                f"the same on the {small}-target watch ({ref_what})",
                ref_p99,
                p99 / ref_p99,
                LATENCY_TARGET_MS / ref_p99,
                thirds_noise(ours),
                False,
            )
        )
    rows.append(
        Figure(
            f"watch peak memory (VmHWM), {targets} vs {small} targets",
            peaks["fleet"],
            "MiB",
            f"watch of {small} targets",
            peaks["small"],
            peaks["fleet"] / peaks["small"],
            2.0,
            0.0,
            False,
        )
    )
    rows.append(
        Figure(
            f"watch stop with runs in flight (SIGTERM to exit), {targets} targets",
            stop_s["fleet"] - stop_s["small"],
            "s",
            f"watch of {small} targets",
            stop_s["small"],
            (stop_s["fleet"] - stop_s["small"]) / stop_s["small"],
            None,
            0.0,
            False,
        )
    )
    return rows
