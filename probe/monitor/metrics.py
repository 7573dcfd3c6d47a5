"""Prometheus metrics for `notifyprobe watch`, on a private registry.

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

import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import (
    CONTENT_TYPE_LATEST,
    ThreadingWSGIServer,
    _get_best_family,
    _SilentHandler,
    generate_latest,
    make_wsgi_app,
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


class Metrics:
    """Every series the watch exposes; each target's series exist (at 0) before its first run."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        t = ["target"]
        self.verdict = Gauge(
            "notifyprobe_verdict",
            "Pattern of the last judged run (state set: 1 for the current pattern, 0 others)",
            ["target", "pattern"],
            registry=r,
        )
        self.severity = Gauge(
            "notifyprobe_verdict_severity",
            "Severity of the last judged run: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; "
            "-1 before the target's first conclusive run",
            t,
            registry=r,
        )
        self.runs = Counter(
            "notifyprobe_runs",
            "Runs judged, by the pattern of their first verdict (given when the run ended; "
            "later corrections are counted in notifyprobe_verdicts_corrected_total)",
            ["target", "pattern"],
            registry=r,
        )
        self.sent = Counter(
            "notifyprobe_notifications_sent", "Notifications handed to the gateway", t, registry=r
        )
        self.accepted = Counter(
            "notifyprobe_notifications_accepted",
            "Notifications the gateway accepted with a 2xx reply",
            t,
            registry=r,
        )
        self.delivered = Counter(
            "notifyprobe_notifications_delivered",
            "Notifications that reached the probe's sink (first copy)",
            t,
            registry=r,
        )
        self.failures = Counter(
            "notifyprobe_submission_failures",
            "Notifications the gateway did not accept, by reply class (4xx, 5xx, no_reply)",
            ["target", "reply_class"],
            registry=r,
        )
        self.latency = Histogram(
            "notifyprobe_delivery_latency_seconds",
            "Time from submission to arrival at the sink",
            t,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.last_run = Gauge(
            "notifyprobe_last_run_timestamp_seconds",
            "When the last run of the target was judged (Unix time); before its first run, "
            "when the watch started",
            t,
            registry=r,
        )
        self.duration = Gauge(
            "notifyprobe_last_run_duration_seconds",
            "How long the last run took, burst and wait for late mail",
            t,
            registry=r,
        )
        self.interval = Gauge(
            "notifyprobe_interval_seconds",
            "Configured time between runs: alert when the last run is older than a few of these",
            t,
            registry=r,
        )
        self.sink_verified = Gauge(
            "notifyprobe_sink_verified",
            "1 when the last run's control message reached the sink, 0 when it did not, -1 "
            "when not known (no run yet, or no control message sent)",
            t,
            registry=r,
        )
        self.stale_modules = Gauge(
            "notifyprobe_stale_modules",
            "Old copies of the target's modules loaded on this host; -1 when not known (no "
            "inventory yet, it failed, or it found none but could not read every process)",
            t,
            registry=r,
        )
        self.unreadable = Gauge(
            "notifyprobe_unreadable_processes",
            "Processes the last module inventory could not read (an old copy may be loaded "
            "there; root, or CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, would let it); -1 before "
            "the first inventory or when it failed",
            t,
            registry=r,
        )
        self.probe_errors = Counter(
            "notifyprobe_probe_errors",
            "Runs the probe itself could not complete (ledger or sink trouble)",
            t,
            registry=r,
        )
        self.hook_failures = Counter(
            "notifyprobe_state_change_command_failures",
            "State-change commands that failed, timed out or could not start",
            t,
            registry=r,
        )
        self.corrected = Counter(
            "notifyprobe_verdicts_corrected",
            "Stored verdicts corrected by mail that arrived after them (re-judged at the start "
            "of the target's next run, or of the watch), by original and corrected pattern",
            ["target", "from_pattern", "to_pattern"],
            registry=r,
        )
        self.sink_up = Gauge(
            "notifyprobe_sink_up", "1 while the probe's sink is listening", registry=r
        )
        Info("notifyprobe_build", "notifyprobe version", registry=r).info({"version": __version__})
        self._server: WSGIServer | None = None

    def add_targets(self, targets: Iterable[tuple[str, float]], started_at: float) -> None:
        """Create every series of each target, so rates and alerts work from the first scrape:
        counters at 0, and the documented values for "no run yet"."""
        for name, interval_s in targets:
            for pattern in PATTERNS:
                self.verdict.labels(name, pattern).set(0)
                self.runs.labels(name, pattern)
            for reply_class in REPLY_CLASSES:
                self.failures.labels(name, reply_class)
            for metric in (
                self.sent,
                self.accepted,
                self.delivered,
                self.probe_errors,
                self.hook_failures,
                self.latency,
            ):
                metric.labels(name)
            for original in CORRECTED_FROM:
                for corrected in CORRECTED_TO:
                    self.corrected.labels(name, original, corrected)
            self.severity.labels(name).set(NO_VERDICT)
            self.sink_verified.labels(name).set(NO_VERDICT)
            self.last_run.labels(name).set(started_at)
            self.duration.labels(name).set(0)
            self.stale_modules.labels(name).set(NO_VERDICT)
            self.unreadable.labels(name).set(NO_VERDICT)
            self.interval.labels(name).set(interval_s)

    def show_verdict(self, target: str, verdict: Verdict, at: float, duration_s: float) -> None:
        """The target's current state: after a run, or from the ledger when the watch starts."""
        for name in PATTERNS:
            self.verdict.labels(target, name).set(1 if name == verdict.pattern.value else 0)
        self.severity.labels(target).set(int(verdict.severity))
        self.last_run.labels(target).set(at)
        self.duration.labels(target).set(duration_s)
        verified = verdict.sink_verified
        self.sink_verified.labels(target).set(NO_VERDICT if verified is None else int(verified))

    def observe_run(
        self, target: str, record: RunRecord, verdict: Verdict, elapsed_s: float, at: float
    ) -> None:
        self.show_verdict(target, verdict, at, elapsed_s)
        self.runs.labels(target, verdict.pattern.value).inc()
        self.sent.labels(target).inc(verdict.sent)
        self.accepted.labels(target).inc(verdict.accepted)
        self.delivered.labels(target).inc(verdict.delivered)
        for n in record.burst:
            s = n.submission
            if s is None:
                continue
            if not s.accepted:
                reply_class = s.reply.reply_class if s.reply is not None else "no_reply"
                if reply_class not in REPLY_CLASSES:  # a 2xx/3xx at the wrong step
                    reply_class = "no_reply"
                self.failures.labels(target, reply_class).inc()
            if n.latency_s is not None:
                self.latency.labels(target).observe(n.latency_s)

    def count_correction(self, target: str, original: Pattern, corrected: Pattern) -> None:
        self.corrected.labels(target, original.value, corrected.value).inc()

    def set_stale_modules(self, target: str, count: int, unreadable: int = 0) -> None:
        """Hook for the module inventory: how many old copies it found on the target's host,
        and how many processes it could not read. A scan that found none but could not read
        every process does not know the count: -1, never a clean 0. -1 for both: no answer."""
        if count == 0 and unreadable != 0:
            count = NO_VERDICT
        self.stale_modules.labels(target).set(count)
        self.unreadable.labels(target).set(unreadable)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, listen: Endpoint, probe: ProbeHandler | None = None) -> Endpoint:
        """Serve /metrics (and, given `probe`, /probe?target=NAME) from background threads;
        returns the address actually bound."""
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if probe is None or environ.get("PATH_INFO") != "/probe":
                return metrics_app(environ, start_response)  # type: ignore[no-any-return]
            names = parse_qs(environ.get("QUERY_STRING", "")).get("target", [])
            status, body = probe(
                names[0] if len(names) == 1 else None,
                scrape_timeout(environ.get("HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS")),
            )
            kind = CONTENT_TYPE_LATEST if status == 200 else "text/plain; charset=utf-8"
            start_response(f"{status} {REASONS.get(status, 'Error')}", [("Content-Type", kind)])
            return [body]

        class Server(ThreadingWSGIServer):
            pass

        try:
            Server.address_family, host = _get_best_family(listen.host, listen.port)
            server = make_server(host, listen.port, app, Server, handler_class=_SilentHandler)
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
