"""Prometheus metrics for `notifyprobe watch`, on private registries: one per target (its
shard, rendered again only when its series changed) and one for the watch's own series.

Prometheus scrapes one probe per gateway (or one probe with several targets) and Alertmanager
pages: the fleet scales there, not here. Names follow the Prometheus conventions (base units,
`_total` for counters, `_seconds`, `_timestamp_seconds`) and pass `promtool check metrics`.
The verdict is a state set: one series per pattern, 1 for the current one and 0 for the others,
so an alert can name the pattern and a dashboard can show its history.

Before a target's first verdict every series exists already: the state set at 0 for every
pattern, `NO_VERDICT` (-1) for the severity, the sink check and the module inventory (stale
modules, unreadable processes), and the time the watch started as the last run's time, so a
staleness alert counts from the start.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import (
    CONTENT_TYPE_LATEST,
    ThreadingWSGIServer,
    _get_best_family,
    _SilentHandler,
    choose_encoder,
    generate_latest,
    gzip_accepted,
)

from probe import __version__
from probe.errors import ProbeError
from probe.records import Endpoint, RunRecord
from probe.verdict import COMPLETE, Pattern, Verdict

PATTERNS = tuple(p.value for p in Pattern)
NO_VERDICT = -1  # severity and sink check of a target with no conclusive run yet
# Corrections whose series exist from the first scrape: a loss (or a run cut off by a stop)
# that late mail turned into a complete delivery. Others appear at their first occurrence.
CORRECTED_FROM = tuple(
    p.value
    for p in (
        Pattern.FIRST_ONLY,
        Pattern.DEGRADED_AFTER_K,
        Pattern.QUEUED_PER_SESSION,
        Pattern.INTERMITTENT,
        Pattern.NONE_DELIVERED,
        Pattern.INCONCLUSIVE,
    )
)
CORRECTED_TO = tuple(p.value for p in Pattern if p in COMPLETE)
REPLY_CLASSES = ("4xx", "5xx", "no_reply")  # no_reply: refused, reset, timeout, TLS
# `/probe?target=NAME`: (the target named, the scrape's timeout) → HTTP status and body.
ProbeHandler = Callable[[str | None, float | None], tuple[int, bytes]]
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 503: "Service Unavailable"}
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class TargetSeries:
    """One target's series, on a registry of its own: its shard of the exposition."""

    def __init__(self, registry: CollectorRegistry):
        t = ["target"]
        self.verdict = Gauge(
            "notifyprobe_verdict",
            "Pattern of the last judged run (state set: 1 for the current pattern, 0 others)",
            ["target", "pattern"],
            registry=registry,
        )
        self.severity = Gauge(
            "notifyprobe_verdict_severity",
            "Severity of the last judged run: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; "
            "-1 before the target's first conclusive run",
            t,
            registry=registry,
        )
        self.runs = Counter(
            "notifyprobe_runs",
            "Runs judged, by the pattern of their first verdict (given when the run ended; "
            "later corrections are counted in notifyprobe_verdicts_corrected_total)",
            ["target", "pattern"],
            registry=registry,
        )
        self.sent = Counter(
            "notifyprobe_notifications_sent",
            "Notifications handed to the gateway",
            t,
            registry=registry,
        )
        self.accepted = Counter(
            "notifyprobe_notifications_accepted",
            "Notifications the gateway accepted with a 2xx reply",
            t,
            registry=registry,
        )
        self.delivered = Counter(
            "notifyprobe_notifications_delivered",
            "Notifications that reached the probe's sink (first copy)",
            t,
            registry=registry,
        )
        self.failures = Counter(
            "notifyprobe_submission_failures",
            "Notifications the gateway did not accept, by reply class (4xx, 5xx, no_reply)",
            ["target", "reply_class"],
            registry=registry,
        )
        self.latency = Histogram(
            "notifyprobe_delivery_latency_seconds",
            "Time from submission to arrival at the sink",
            t,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.last_run = Gauge(
            "notifyprobe_last_run_timestamp_seconds",
            "When the last run of the target was judged (Unix time); before its first run, "
            "when the watch started",
            t,
            registry=registry,
        )
        self.duration = Gauge(
            "notifyprobe_last_run_duration_seconds",
            "How long the last run took, burst and wait for late mail",
            t,
            registry=registry,
        )
        self.interval = Gauge(
            "notifyprobe_interval_seconds",
            "Configured time between runs: alert when the last run is older than a few of these",
            t,
            registry=registry,
        )
        self.sink_verified = Gauge(
            "notifyprobe_sink_verified",
            "1 when the last run's control message reached the sink, 0 when it did not, -1 "
            "when not known (no run yet, or no control message sent)",
            t,
            registry=registry,
        )
        self.stale_modules = Gauge(
            "notifyprobe_stale_modules",
            "Old copies of the target's modules loaded on this host; -1 when not known (no "
            "inventory yet, it failed, or it found none but could not read every process)",
            t,
            registry=registry,
        )
        self.unreadable = Gauge(
            "notifyprobe_unreadable_processes",
            "Processes the last module inventory could not read (an old copy may be loaded "
            "there; root, or CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, would let it); -1 before "
            "the first inventory or when it failed",
            t,
            registry=registry,
        )
        self.probe_errors = Counter(
            "notifyprobe_probe_errors",
            "Runs the probe itself could not complete (ledger or sink trouble)",
            t,
            registry=registry,
        )
        self.hook_failures = Counter(
            "notifyprobe_state_change_command_failures",
            "State-change commands that failed, timed out or could not start",
            t,
            registry=registry,
        )
        self.corrected = Counter(
            "notifyprobe_verdicts_corrected",
            "Stored verdicts corrected by mail that arrived after them (re-judged at the start "
            "of the target's next run, or of the watch), by original and corrected pattern",
            ["target", "from_pattern", "to_pattern"],
            registry=registry,
        )


# (the `# HELP`/`# TYPE` lines, the sample lines) of each family of an exposition, in its order
Families = list[tuple[bytes, bytes]]
Encoder = Callable[[Any], bytes]  # a registry (or a restricted view of one) → exposition
FORMATS_KEPT = 2  # renderings kept per target: text for curl, OpenMetrics for Prometheus
GZIP_LEVEL = 1  # a scrape's whole fleet: level 1 compresses 1 MB in ~2 ms, level 9 in ~35 ms
PIECE_BYTES = 64 * 1024  # what a scrape's answer is sent in
OPENMETRICS_ACCEPT = "application/openmetrics-text;version=1.0.0"  # what Prometheus 2 asks for
EOF = b"# EOF\n"  # OpenMetrics ends its exposition once, after every family
_HELP = re.compile(rb"^# HELP ", re.M)
_HEADER = re.compile(rb"(?:#[^\n]*\n)+")
_GENERATIONS = itertools.count()  # a change's stamp, unique in the process (next() is atomic)


def split_families(text: bytes) -> Families:
    """An exposition of prometheus_client's, family by family (every family starts with its
    `# HELP` line in both formats; sample lines never start with `#`); a final `# EOF` is
    dropped."""
    text = text.removesuffix(EOF)
    starts = [m.start() for m in _HELP.finditer(text)] + [len(text)]
    families: Families = []
    for begin, end in itertools.pairwise(starts):
        header = _HEADER.match(text, begin, end)  # never None: it starts with `# HELP`
        cut = header.end() if header is not None else begin
        families.append((text[begin:cut], text[cut:end]))
    return families


def merge_families(parts: Iterable[Families], tail: bytes = b"") -> bytes:
    """One exposition of several: one `# HELP`/`# TYPE` per family, then every part's samples
    of it, part by part; families in the order they first appear."""
    return b"".join(Merged(parts, tail))


class Merged:
    """`merge_families` in pieces of about `PIECE_BYTES`, for a listener to send one by one:
    a scrape of a big fleet never holds its whole answer in one block (a block that size,
    freed by one of the listener's threads, stays in that thread's malloc arena)."""

    def __init__(self, parts: Iterable[Families], tail: bytes = b""):
        merged: dict[bytes, list[bytes]] = {}
        for part in parts:
            for header, lines in part:
                merged.setdefault(header, []).append(lines)
        self._chunks = [*itertools.chain.from_iterable([h, *ls] for h, ls in merged.items())]
        self._chunks.append(tail)
        self.size = sum(len(chunk) for chunk in self._chunks)

    def __iter__(self) -> Iterator[bytes]:
        piece: list[bytes] = []
        size = 0
        for chunk in self._chunks:
            piece.append(chunk)
            size += len(chunk)
            if size >= PIECE_BYTES:
                yield b"".join(piece)
                piece, size = [], 0
        if piece:
            yield b"".join(piece)


def gzipped(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """`pieces` as one gzip stream, compressed piece by piece."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for piece in pieces:
        out = compressor.compress(piece)
        if out:
            yield out
    yield compressor.flush()


class Shard:
    """A target's series and their last rendering in each format, reused until they change.

    A change stamps the shard with a new generation *after* it changed the values; a render
    reads the generation *before* it reads the values, and its rendering is reused only while
    the shard still has that generation. A change racing a scrape is rendered by the next
    scrape, never lost; two scrapes racing each other at worst both render."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.series = TargetSeries(self.registry)
        self.generation = next(_GENERATIONS)
        # content type → (generation rendered, families); replaced, never changed in place
        self._rendered: dict[str, tuple[int, Families]] = {}

    def changed(self) -> None:
        self.generation = next(_GENERATIONS)

    def families(self, content_type: str, encoder: Encoder) -> Families:
        generation = self.generation
        kept = self._rendered.get(content_type)
        if kept is not None and kept[0] == generation:
            return kept[1]
        families = split_families(encoder(self.registry))
        others = [item for item in self._rendered.items() if item[0] != content_type]
        recent = others[1 - FORMATS_KEPT :] if FORMATS_KEPT > 1 else []
        self._rendered = dict([*recent, (content_type, (generation, families))])
        return families


class Metrics:
    """Every series the watch exposes; each target's series exist (at 0) before its first run.

    Each target's series live in a shard of their own (`Shard`: its own registry, formatted by
    prometheus_client), rendered again only when one of them changed; a scrape merges the
    shards family by family, then the global series (the sink, the build). In a family the
    samples come target by target, in the order the targets were added (a single registry
    would put a series created later at the family's end; the exposition formats leave the
    order of samples free). Every change goes through a method here, so it marks its shard.
    Changes come from the watch's loop and its worker threads, scrapes from the listener's
    threads: prometheus_client's values are thread-safe, the shards' stamps say what changed.
    """

    def __init__(self) -> None:
        self._global = CollectorRegistry()
        self._sink_up = Gauge(
            "notifyprobe_sink_up", "1 while the probe's sink is listening", registry=self._global
        )
        Info("notifyprobe_build", "notifyprobe version", registry=self._global).info(
            {"version": __version__}
        )
        self._shards: dict[str, Shard] = {}  # replaced when a target is added: a scrape's own
        self._adding = threading.Lock()
        self._server: WSGIServer | None = None

    def _shard(self, target: str) -> Shard:
        shard = self._shards.get(target)
        if shard is None:
            with self._adding:
                shard = self._shards.get(target)
                if shard is None:
                    shard = Shard()
                    self._shards = {**self._shards, target: shard}
        return shard

    @contextlib.contextmanager
    def _changing(self, target: str) -> Iterator[TargetSeries]:
        """The target's series to change; its shard is marked changed after."""
        shard = self._shard(target)
        try:
            yield shard.series
        finally:
            shard.changed()

    def add_targets(self, targets: Iterable[tuple[str, float]], started_at: float) -> None:
        """Create every series of each target, so rates and alerts work from the first scrape:
        counters at 0, and the documented values for "no run yet"."""
        for name, interval_s in targets:
            with self._changing(name) as s:
                for pattern in PATTERNS:
                    s.verdict.labels(name, pattern).set(0)
                    s.runs.labels(name, pattern)
                for reply_class in REPLY_CLASSES:
                    s.failures.labels(name, reply_class)
                for metric in (
                    s.sent,
                    s.accepted,
                    s.delivered,
                    s.probe_errors,
                    s.hook_failures,
                    s.latency,
                ):
                    metric.labels(name)
                for original in CORRECTED_FROM:
                    for corrected in CORRECTED_TO:
                        s.corrected.labels(name, original, corrected)
                s.severity.labels(name).set(NO_VERDICT)
                s.sink_verified.labels(name).set(NO_VERDICT)
                s.last_run.labels(name).set(started_at)
                s.duration.labels(name).set(0)
                s.stale_modules.labels(name).set(NO_VERDICT)
                s.unreadable.labels(name).set(NO_VERDICT)
                s.interval.labels(name).set(interval_s)

    def show_verdict(self, target: str, verdict: Verdict, at: float, duration_s: float) -> None:
        """The target's current state: after a run, or from the ledger when the watch starts."""
        with self._changing(target) as s:
            for name in PATTERNS:
                s.verdict.labels(target, name).set(1 if name == verdict.pattern.value else 0)
            s.severity.labels(target).set(int(verdict.severity))
            s.last_run.labels(target).set(at)
            s.duration.labels(target).set(duration_s)
            verified = verdict.sink_verified
            s.sink_verified.labels(target).set(NO_VERDICT if verified is None else int(verified))

    def observe_run(
        self, target: str, record: RunRecord, verdict: Verdict, elapsed_s: float, at: float
    ) -> None:
        self.show_verdict(target, verdict, at, elapsed_s)
        with self._changing(target) as s:
            s.runs.labels(target, verdict.pattern.value).inc()
            s.sent.labels(target).inc(verdict.sent)
            s.accepted.labels(target).inc(verdict.accepted)
            s.delivered.labels(target).inc(verdict.delivered)
            for n in record.burst:
                sub = n.submission
                if sub is None:
                    continue
                if not sub.accepted:
                    reply_class = sub.reply.reply_class if sub.reply is not None else "no_reply"
                    if reply_class not in REPLY_CLASSES:  # a 2xx/3xx at the wrong step
                        reply_class = "no_reply"
                    s.failures.labels(target, reply_class).inc()
                if n.latency_s is not None:
                    s.latency.labels(target).observe(n.latency_s)

    def count_correction(self, target: str, original: Pattern, corrected: Pattern) -> None:
        with self._changing(target) as s:
            s.corrected.labels(target, original.value, corrected.value).inc()

    def count_probe_error(self, target: str) -> None:
        """A run the probe itself could not complete."""
        with self._changing(target) as s:
            s.probe_errors.labels(target).inc()

    def count_hook_failure(self, target: str) -> None:
        """A state-change command that failed, timed out or could not start."""
        with self._changing(target) as s:
            s.hook_failures.labels(target).inc()

    def set_sink_up(self, up: bool) -> None:
        self._sink_up.set(int(up))

    def set_stale_modules(self, target: str, count: int, unreadable: int = 0) -> None:
        """Hook for the module inventory: how many old copies it found on the target's host,
        and how many processes it could not read. A scan that found none but could not read
        every process does not know the count: -1, never a clean 0. -1 for both: no answer."""
        if count == 0 and unreadable != 0:
            count = NO_VERDICT
        with self._changing(target) as s:
            s.stale_modules.labels(target).set(count)
            s.unreadable.labels(target).set(unreadable)

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """The value of one sample as a scrape would show it (None: no such series)."""
        labels = labels or {}
        shard = self._shards.get(labels.get("target", ""))
        registry = shard.registry if shard is not None else self._global
        return registry.get_sample_value(name, labels)

    def registries(self) -> list[CollectorRegistry]:
        """The registries a scrape merges, in its order: each target's, then the global one."""
        return [*(shard.registry for shard in self._shards.values()), self._global]

    def prerender(self) -> None:
        """Render every target's series in both formats now (before the listener starts), so
        the first scrape, as the others, renders only what changed since (200 targets: about
        0.1 s each, once)."""
        for accept in ("", OPENMETRICS_ACCEPT):
            encoder, content_type = choose_encoder(accept)
            for shard in self._shards.values():
                shard.families(content_type, encoder)

    def exposition(self, accept: str | None = None) -> bytes:
        """The exposition a scrape gets (text format unless `accept` asks for OpenMetrics)."""
        return self.render(accept)[0]

    def render(
        self, accept: str | None = None, names: Sequence[str] | None = None
    ) -> tuple[bytes, str]:
        """The exposition in the format `accept` (a scrape's Accept header) chooses, as
        prometheus_client's own listener would answer it, and its content type; `names`:
        only those series (the `name[]` query parameter). Only the targets whose series changed
        since the last scrape in this format are rendered again."""
        merged, content_type = self.merged(accept, names)
        return b"".join(merged), content_type

    def merged(
        self, accept: str | None = None, names: Sequence[str] | None = None
    ) -> tuple[Merged, str]:
        """`render`, in the pieces a listener sends."""
        encoder, content_type = choose_encoder(accept or "")
        shards = self._shards.values()  # this dict is never changed, only replaced
        if names:
            parts = [split_families(encoder(s.registry.restricted_registry(names))) for s in shards]
            text = encoder(self._global.restricted_registry(names))
        else:
            parts = [s.families(content_type, encoder) for s in shards]
            text = encoder(self._global)
        parts.append(split_families(text))
        return Merged(parts, EOF if text.endswith(EOF) else b""), content_type

    def wsgi_app(self, probe: ProbeHandler | None = None) -> Callable[..., Iterable[bytes]]:
        """/metrics (any path, as prometheus_client's own app) and, given `probe`,
        /probe?target=NAME."""

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            method = environ.get("REQUEST_METHOD", "GET")
            path = environ.get("PATH_INFO")
            headers: list[tuple[str, str]] = []
            if method == "OPTIONS":
                status, output = "200 OK", b""
                headers.append(("Allow", "OPTIONS,GET"))
            elif method != "GET":
                status = "405 Method Not Allowed"
                output = f"# HTTP {status}: {method}; use OPTIONS or GET\n".encode()
                headers.append(("Allow", "OPTIONS,GET"))
            elif path == "/favicon.ico":
                status, output = "200 OK", b""
            elif probe is not None and path == "/probe":
                names = parse_qs(environ.get("QUERY_STRING", "")).get("target", [])
                code, output = probe(
                    names[0] if len(names) == 1 else None,
                    scrape_timeout(environ.get("HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS")),
                )
                status = f"{code} {REASONS.get(code, 'Error')}"
                kind = CONTENT_TYPE_LATEST if code == 200 else "text/plain; charset=utf-8"
                headers.append(("Content-Type", kind))
            else:
                params = parse_qs(environ.get("QUERY_STRING", ""))
                merged, kind = self.merged(environ.get("HTTP_ACCEPT"), params.get("name[]"))
                headers.append(("Content-Type", kind))
                if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
                    headers.append(("Content-Encoding", "gzip"))
                    start_response("200 OK", headers)
                    return gzipped(merged)
                headers.append(("Content-Length", str(merged.size)))
                start_response("200 OK", headers)
                return merged
            start_response(status, headers)
            return [output]

        return app

    def serve(self, listen: Endpoint, probe: ProbeHandler | None = None) -> Endpoint:
        """Serve /metrics (and, given `probe`, /probe?target=NAME) from background threads;
        returns the address actually bound."""

        class Server(ThreadingWSGIServer):
            pass

        try:
            Server.address_family, host = _get_best_family(listen.host, listen.port)
            server = make_server(
                host, listen.port, self.wsgi_app(probe), Server, handler_class=_SilentHandler
            )
        except OSError as exc:
            raise ProbeError(f"metrics cannot listen on {listen}: {exc.strerror}") from None
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        self._server = server
        return Endpoint(listen.host, server.server_port)

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


def scrape_timeout(header: str | None) -> float | None:
    """The scrape's timeout Prometheus sends (X-Prometheus-Scrape-Timeout-Seconds), if sane."""
    try:
        value = float(header) if header else None
    except ValueError:
        return None
    return value if value is not None and 0.0 < value < 86400.0 else None


def probe_exposition(verdict: Verdict, elapsed_s: float, at: float, cached: bool) -> bytes:
    """One run's series, as blackbox_exporter answers a probe: `probe_success` (1 only for an
    OK verdict: never a false OK), `probe_duration_seconds`, and the verdict as the watch
    exposes it, without a target label (Prometheus adds the one it probed)."""
    r = CollectorRegistry()

    def gauge(name: str, text: str, value: float, labels: dict[str, str] | None = None) -> None:
        g = Gauge(name, text, list(labels or {}), registry=r)
        (g.labels(**labels) if labels else g).set(value)

    gauge(
        "probe_success",
        "1 when the run's verdict is OK (healthy), else 0",
        1 if verdict.severity.name == "OK" else 0,
    )
    gauge(
        "probe_duration_seconds", "How long the run took, burst and wait for late mail", elapsed_s
    )
    v = Gauge(
        "notifyprobe_probe_verdict", "Pattern of the run (state set)", ["pattern"], registry=r
    )
    for name in PATTERNS:
        v.labels(name).set(1 if name == verdict.pattern.value else 0)
    gauge(
        "notifyprobe_probe_severity",
        "0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN",
        int(verdict.severity),
    )
    gauge(
        "notifyprobe_probe_cached",
        "1 when the last run was served: a run was in flight or "
        "the last one started within the min_interval cap; 0 when this scrape ran it",
        int(cached),
    )
    gauge("notifyprobe_probe_run_timestamp_seconds", "When the run served was judged", at)
    gauge("notifyprobe_probe_notifications_sent", "Notifications the run sent", verdict.sent)
    gauge(
        "notifyprobe_probe_notifications_delivered",
        "Notifications that reached the sink",
        verdict.delivered,
    )
    verified = verdict.sink_verified
    gauge(
        "notifyprobe_probe_sink_verified",
        "1 control message arrived, 0 not, -1 not known",
        NO_VERDICT if verified is None else int(verified),
    )
    return generate_latest(r)
