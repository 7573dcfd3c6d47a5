"""Reporting: what a run says to people and tools, and what is kept with it.

One model of a judged run (`RunReport`, built by `run_report` or `load_evidence`) rendered as
the terminal report (`to_text`), JSON (`report_json`; `to_json` is the run and verdict alone),
the monitoring-plugin line (`plugin_result`) and the evidence bundle (`make_bundle`, with its
HTML report); what a run keeps in the ledger beside its rows (`keep_artifacts`, read back as
`RunEvidence`), and redaction.
"""

from probe.reporting.artifacts import (
    RunEvidence,
    RunReport,
    keep_artifacts,
    keep_log,
    load_evidence,
    run_report,
)
from probe.reporting.bundle import BundleResult, make_bundle
from probe.reporting.nagios import (
    PluginThresholds,
    bounce_lines,
    diagnosis_lines,
    plugin_result,
    unknown_line,
)
from probe.reporting.redact import KINDS, clean_argv, secret_values_in_argv
from probe.reporting.text import (
    SCHEMA_VERSION,
    history_text,
    plugin_long_output,
    rejudge_command,
    report_json,
    to_json,
    to_text,
)

__all__ = [
    "KINDS",
    "SCHEMA_VERSION",
    "BundleResult",
    "PluginThresholds",
    "RunEvidence",
    "RunReport",
    "bounce_lines",
    "clean_argv",
    "diagnosis_lines",
    "history_text",
    "keep_artifacts",
    "keep_log",
    "load_evidence",
    "make_bundle",
    "plugin_long_output",
    "plugin_result",
    "rejudge_command",
    "report_json",
    "run_report",
    "secret_values_in_argv",
    "to_json",
    "to_text",
    "unknown_line",
]
