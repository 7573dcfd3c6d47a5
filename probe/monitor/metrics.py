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

from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest, start_http_server

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
    for p in (Pattern.FIRST_ONLY, Pattern.DEGRADED_AFTER_K, Pattern.QUEUED_PER_SESSION,
              Pattern.INTERMITTENT, Pattern.NONE_DELIVERED, Pattern.INCONCLUSIVE)
)  # fmt: skip
CORRECTED_TO = tuple(p.value for p in Pattern if p in COMPLETE)
REPLY_CLASSES = ("4xx", "5xx", "no_reply")  # no_reply: refused, reset, timeout, TLS
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
            for metric in (self.sent, self.accepted, self.delivered, self.probe_errors,
                           self.hook_failures, self.latency):  # fmt: skip
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

    def serve(self, listen: Endpoint) -> Endpoint:
        """Serve /metrics from a background thread; returns the address actually bound."""
        try:
            server, _thread = start_http_server(listen.port, listen.host, registry=self.registry)
        except OSError as exc:
            raise ProbeError(f"metrics cannot listen on {listen}: {exc.strerror}") from None
        self._server = server
        return Endpoint(listen.host, server.server_port)

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
