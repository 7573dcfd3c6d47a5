"""Prometheus exposition on a private registry: names, labels, values, and promtool's lint."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from probe.monitor import metrics as metrics_module
from probe.monitor.metrics import NO_VERDICT, PATTERNS, Metrics
from probe.records import SmtpReply
from probe.verdict import Pattern, classify
from tests.test_verdict import note, record

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")


def promtool() -> str:
    """The promtool a `needs_promtool` test runs (it is skipped when there is none)."""
    assert PROMTOOL is not None
    return PROMTOOL


needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian package `prometheus`; .ci/system-packages installs it)",
)


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples_of(metrics.exposition())


def observed() -> Metrics:
    metrics = Metrics()
    metrics.add_targets([("paris", 300.0), ("lyon", 60.0)], started_at=1_699_999_000.0)
    healthy = record(*(note(s, latency=0.02) for s in range(1, 5)))
    metrics.observe_run("paris", healthy, classify(healthy), 0.4, at=1_700_000_000.0)
    refused = SmtpReply(451, "4.3.0 try later", "4.3.0")
    first_only = record(
        note(1), *(note(s, delivered=0, reply=refused, stage="data") for s in range(2, 5))
    )
    metrics.observe_run("lyon", first_only, classify(first_only), 1.5, at=1_700_000_060.0)
    return metrics


def test_verdict_is_a_state_set_with_one_pattern_per_target():
    s = samples(observed())
    assert s[("notifyprobe_verdict", (("pattern", "healthy"), ("target", "paris")))] == 1.0
    assert s[("notifyprobe_verdict", (("pattern", "first_only"), ("target", "lyon")))] == 1.0
    for target in ("paris", "lyon"):
        states = [
            s[("notifyprobe_verdict", (("pattern", p), ("target", target)))] for p in PATTERNS
        ]
        assert sorted(states) == [0.0] * (len(PATTERNS) - 1) + [1.0]
    assert s[("notifyprobe_verdict_severity", (("target", "lyon"),))] == 2.0


def test_counts_latency_failures_and_times_are_exposed_per_target():
    s = samples(observed())
    lyon = (("target", "lyon"),)
    assert s[("notifyprobe_notifications_sent_total", lyon)] == 4
    assert s[("notifyprobe_notifications_accepted_total", lyon)] == 1
    assert s[("notifyprobe_notifications_delivered_total", lyon)] == 1
    assert s[("notifyprobe_submission_failures_total", (("reply_class", "4xx"),) + lyon)] == 3
    assert s[("notifyprobe_submission_failures_total", (("reply_class", "5xx"),) + lyon)] == 0
    assert s[("notifyprobe_delivery_latency_seconds_count", (("target", "paris"),))] == 4
    assert s[("notifyprobe_last_run_timestamp_seconds", lyon)] == 1_700_000_060.0
    assert s[("notifyprobe_last_run_duration_seconds", lyon)] == 1.5
    assert s[("notifyprobe_interval_seconds", lyon)] == 60.0
    assert s[("notifyprobe_stale_modules", lyon)] == -1  # no module inventory: not known
    assert s[("notifyprobe_unreadable_processes", lyon)] == -1
    assert s[("notifyprobe_runs_total", (("pattern", "first_only"),) + lyon)] == 1


def test_every_series_exists_before_the_first_run_with_the_no_run_values():
    metrics = Metrics()
    metrics.add_targets([("new", 120.0)], started_at=1_700_000_000.0)
    s = samples(metrics)
    new = (("target", "new"),)
    assert all(s[("notifyprobe_verdict", (("pattern", p),) + new)] == 0.0 for p in PATTERNS)
    assert s[("notifyprobe_notifications_sent_total", new)] == 0.0
    assert s[("notifyprobe_verdict_severity", new)] == NO_VERDICT
    assert s[("notifyprobe_sink_verified", new)] == NO_VERDICT
    assert s[("notifyprobe_last_run_timestamp_seconds", new)] == 1_700_000_000.0  # the start
    assert s[("notifyprobe_last_run_duration_seconds", new)] == 0.0
    corrected = (
        "notifyprobe_verdicts_corrected_total",
        (("from_pattern", "first_only"), ("target", "new"), ("to_pattern", "healthy")),
    )
    assert s[corrected] == 0.0


def test_a_correction_is_counted_by_original_and_corrected_pattern():
    metrics = observed()
    metrics.count_correction("lyon", Pattern.FIRST_ONLY, Pattern.SLOW)
    metrics.count_correction("lyon", Pattern.FIRST_ONLY, Pattern.SLOW)
    key = (("from_pattern", "first_only"), ("target", "lyon"), ("to_pattern", "slow"))
    assert samples(metrics)[("notifyprobe_verdicts_corrected_total", key)] == 2.0


def test_stale_module_hook_sets_the_gauge():
    metrics = observed()
    metrics.set_stale_modules("paris", 2)
    assert samples(metrics)[("notifyprobe_stale_modules", (("target", "paris"),))] == 2
    assert samples(metrics)[("notifyprobe_unreadable_processes", (("target", "paris"),))] == 0


def test_a_blind_module_scan_never_exports_a_clean_zero():
    """None found but 9 processes unread: the count is not known (-1), the 9 are exported."""
    metrics = observed()
    paris = (("target", "paris"),)
    metrics.set_stale_modules("paris", 0, unreadable=9)
    s = samples(metrics)
    assert (
        s[("notifyprobe_stale_modules", paris)],
        s[("notifyprobe_unreadable_processes", paris)],
    ) == (-1, 9)
    metrics.set_stale_modules("paris", 2, unreadable=9)  # found: a lower bound, still a finding
    assert samples(metrics)[("notifyprobe_stale_modules", paris)] == 2
    metrics.set_stale_modules("paris", 0, unreadable=0)  # read everything, none: a real 0
    assert samples(metrics)[("notifyprobe_stale_modules", paris)] == 0
    metrics.set_stale_modules("paris", -1, unreadable=-1)  # the inventory failed
    s = samples(metrics)
    assert (
        s[("notifyprobe_stale_modules", paris)],
        s[("notifyprobe_unreadable_processes", paris)],
    ) == (-1, -1)


@pytest.mark.real
@needs_promtool
def test_exposition_passes_promtool_check_metrics():
    result = subprocess.run(
        [promtool(), "check", "metrics"],
        input=observed().exposition(),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


@pytest.mark.real
@needs_promtool
def test_alerting_rules_pass_promtool_unit_tests():
    rules = ROOT / "docs" / "alerts.yml"
    check = subprocess.run(
        [promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    result = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yml"],
        cwd=ROOT / "tests" / "monitor" / "promtool",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the exposition in shards: one registry per target, rendered again only when it changed ----

OPENMETRICS = metrics_module.OPENMETRICS_ACCEPT


class Union:
    """The registries merged as one collector: the single-registry render of the same series."""

    def __init__(self, registries: list[CollectorRegistry]):
        self.registries = registries

    def collect(self) -> list[Metric]:
        families: dict[str, Metric] = {}
        for registry in self.registries:
            for family in registry.collect():
                union = families.setdefault(
                    family.name,
                    Metric(family.name, family.documentation, family.type, family.unit),
                )
                union.samples.extend(family.samples)
        return list(families.values())


def single_registry(metrics: Metrics) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(Union(metrics.registries()))
    return registry


class Renders:
    """Spies on the encoder a scrape chooses: which registries it rendered."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, then: Callable[[], None] | None = None):
        self.seen: list[object] = []
        self.then = then
        choose = choose_encoder

        def spying(accept: str) -> tuple[Callable[[Any], bytes], str]:
            encoder, content_type = choose(accept)

            def encode(registry: Any) -> bytes:
                text = encoder(registry)
                self.seen.append(registry)
                if self.then is not None:  # a change right after the values were read
                    then, self.then = self.then, None
                    then()
                return text

            return encode, content_type

        monkeypatch.setattr(metrics_module, "choose_encoder", spying)


def test_the_merged_exposition_is_the_single_registry_render_of_the_same_series():
    metrics = observed()
    metrics.set_sink_up(True)
    assert metrics.exposition() == generate_latest(single_registry(metrics))


def test_the_merged_openmetrics_exposition_is_the_single_registry_render_with_one_eof():
    metrics = observed()
    text = metrics.exposition(OPENMETRICS)
    assert text == openmetrics_latest(single_registry(metrics))
    assert text.count(b"# EOF\n") == 1 and text.endswith(b"# EOF\n")
    families = list(openmetrics_families(text.decode()))  # the strict OpenMetrics parser
    assert len({f.name for f in families}) == len(families)


def test_every_family_has_one_help_and_type_line_and_its_samples_together():
    metrics = observed()
    metrics.add_targets([("nice", 60.0)], started_at=1_700_000_000.0)
    metrics.count_correction("nice", Pattern.SLOW, Pattern.HEALTHY)  # created after the others
    lines = metrics.exposition().decode().splitlines()
    helps = [line.split()[2] for line in lines if line.startswith("# HELP ")]
    types = [line.split()[2] for line in lines if line.startswith("# TYPE ")]
    assert helps == types and len(set(helps)) == len(helps)
    current = ""
    for line in lines:
        if line.startswith("# HELP "):
            current = line.split()[2]
        elif not line.startswith("#"):
            family = line.split("{")[0].split(" ")[0]
            assert family.startswith(current.removesuffix("_total")), (current, line)


def test_a_scrape_renders_again_only_the_target_that_changed(monkeypatch):
    metrics = observed()
    renders = Renders(monkeypatch)
    first = metrics.exposition()
    lyon = metrics.registries()[1]
    assert len(renders.seen) == len(metrics.registries())  # every shard, the first time
    renders.seen.clear()
    assert metrics.exposition() == first
    assert renders.seen == [metrics.registries()[-1]]  # only the global series
    renders.seen.clear()
    metrics.count_probe_error("lyon")
    changed = samples_of(metrics.exposition())
    assert renders.seen == [lyon, metrics.registries()[-1]]
    assert changed[("notifyprobe_probe_errors_total", (("target", "lyon"),))] == 1.0


def test_a_change_while_its_target_renders_is_shown_by_the_next_scrape(monkeypatch):
    metrics = observed()
    Renders(monkeypatch, then=lambda: metrics.count_probe_error("paris"))
    paris = ("notifyprobe_probe_errors_total", (("target", "paris"),))
    assert samples_of(metrics.exposition())[paris] == 0.0  # the values were read before it
    assert samples_of(metrics.exposition())[paris] == 1.0


def test_each_format_keeps_its_own_rendering(monkeypatch):
    metrics = observed()
    text, om = metrics.exposition(), metrics.exposition(OPENMETRICS)
    renders = Renders(monkeypatch)
    assert (metrics.exposition(), metrics.exposition(OPENMETRICS)) == (text, om)
    assert len(renders.seen) == 2  # the global series, once per format


def test_a_scrape_for_some_names_gets_only_those_series():
    metrics = observed()
    body, _ = metrics.render(names=["notifyprobe_verdict_severity", "notifyprobe_sink_up"])
    names = {line.split("{")[0].split(" ")[0] for line in body.decode().splitlines()}
    assert names - {"#"} == {"notifyprobe_verdict_severity", "notifyprobe_sink_up"}


def test_sample_reads_a_target_series_and_a_global_one():
    metrics = observed()
    verdict = {"target": "lyon", "pattern": "first_only"}
    assert metrics.sample("notifyprobe_verdict", verdict) == 1.0
    assert metrics.sample("notifyprobe_verdict", {**verdict, "target": "nowhere"}) is None
    metrics.set_sink_up(True)
    assert metrics.sample("notifyprobe_sink_up") == 1.0


def test_the_listener_answers_prometheus_in_openmetrics_gzipped():
    metrics = observed()
    answered: list[tuple[str, list[tuple[str, str]]]] = []
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/metrics",
        "HTTP_ACCEPT": f"{OPENMETRICS},text/plain;version=0.0.4;q=0.5",
        "HTTP_ACCEPT_ENCODING": "gzip",
    }
    app = metrics.wsgi_app()
    body = b"".join(app(environ, lambda status, headers: answered.append((status, headers))))
    status, headers = answered[0]
    assert status == "200 OK"
    assert dict(headers)["Content-Encoding"] == "gzip"
    assert dict(headers)["Content-Type"].startswith("application/openmetrics-text")
    assert gzip.decompress(body) == metrics.exposition(OPENMETRICS)


def samples_of(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_a_plain_scrape_says_its_length_and_comes_in_pieces_of_the_exposition(monkeypatch):
    monkeypatch.setattr(metrics_module, "PIECE_BYTES", 1024)
    metrics = observed()
    answered: list[tuple[str, list[tuple[str, str]]]] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics"}
    pieces = list(metrics.wsgi_app()(environ, lambda s, h: answered.append((s, h))))
    headers = dict(answered[0][1])
    assert len(pieces) > 1
    assert b"".join(pieces) == metrics.exposition()
    assert int(headers["Content-Length"]) == len(metrics.exposition())


def test_after_prerender_the_first_scrape_in_either_format_renders_no_target(monkeypatch):
    metrics = observed()
    metrics.prerender()
    renders = Renders(monkeypatch)
    text, om = metrics.exposition(), metrics.exposition(OPENMETRICS)
    assert renders.seen == [metrics.registries()[-1]] * 2  # the global series only
    assert text == generate_latest(single_registry(metrics))
    assert om == openmetrics_latest(single_registry(metrics))


def critical_patterns() -> set[str]:
    """The patterns docs/patterns.md's table says can exit 2 (critical)."""
    table = (ROOT / "docs" / "patterns.md").read_text().split("\n## ", 1)[0]
    rows = (line.split("|") for line in table.splitlines() if line.startswith("| `"))
    return {cells[1].strip(" `") for cells in rows if "2" in cells[2]}


def test_every_critical_pattern_has_a_promtool_case_of_the_critical_alert_and_a_section():
    """The critical alert names the pattern and links its section of docs/patterns.md: each
    pattern that can be critical is a case of the promtool tests (first_only of its own
    alert), with the alert's words, and has that section."""
    critical = critical_patterns()
    assert {p.value for p in Pattern} >= critical >= {"gateway_hung_up", "protocol_error"}
    cases = (ROOT / "tests" / "monitor" / "promtool" / "alerts_test.yml").read_text()
    sections = (ROOT / "docs" / "patterns.md").read_text()
    for pattern in critical:
        assert f"pattern: {pattern}" in cases, pattern
        assert f"\n## {pattern}\n" in sections, pattern
        if pattern != "first_only":
            assert f"through ({pattern})" in cases, pattern
