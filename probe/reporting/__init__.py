"""Reporting: what a run says to people and tools, and what is kept with it.

The text and JSON report (`to_text`, `to_json`, `diagnosis_text`), the monitoring-plugin line
(`plugin_result`), the evidence bundle (`make_bundle`, with its HTML report), what a run keeps in
the ledger beside its rows (`keep_artifacts`, read back as `RunEvidence`), and redaction.
"""

from probe.reporting.artifacts import RunEvidence, keep_artifacts, load_evidence
from probe.reporting.bundle import BundleResult, make_bundle
from probe.reporting.nagios import PluginThresholds, diagnosis_lines, plugin_result, unknown_line
from probe.reporting.redact import KINDS, clean_argv, secret_values_in_argv
from probe.reporting.text import (
    diagnosis_text,
    history_text,
    revision_text,
    to_json,
    to_text,
)

__all__ = [
    "KINDS",
    "BundleResult",
    "PluginThresholds",
    "RunEvidence",
    "clean_argv",
    "diagnosis_lines",
    "diagnosis_text",
    "history_text",
    "keep_artifacts",
    "load_evidence",
    "make_bundle",
    "plugin_result",
    "revision_text",
    "secret_values_in_argv",
    "to_json",
    "to_text",
    "unknown_line",
]
