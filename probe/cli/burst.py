"""`notifyprobe burst`: send a burst through the gateway and judge what arrived."""

from __future__ import annotations

import argparse
import sys
import time

from probe.cli.burst_options import add_burst_options, settings_from
from probe.cli.common import Stopped, open_ledger, run_stoppable, write_json
from probe.cli.diagnosis_options import add_diagnosis_options, request_from
from probe.cli.evidence_options import add_evidence_options, kept_with_run, write_bundle
from probe.correlation import new_run_id
from probe.delivery import (
    DEFAULT_WINDOW_S,
    HISTORY_FACTOR,
    MIN_HEALTHY_RUNS,
    ProbeOutcome,
    Progress,
    judge_cut_run,
)
from probe.domain import DEFAULT_DOMAIN, default_domain_warning, may_be_lab
from probe.errors import ProbeError, UsageError
from probe.ledger import Ledger
from probe.logs import CAPTURE
from probe.pipeline import Job, Probe
from probe.records import INSECURE_WARNING
from probe.reporting import (
    PluginThresholds,
    plugin_long_output,
    plugin_result,
    rejudge_command,
    report_json,
    to_text,
)


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    p = subparsers.add_parser(
        "burst",
        parents=parents,
        usage="notifyprobe burst --gateway HOST:PORT [options]",
        help="send test notifications through the gateway and judge delivery",
        description="Send a burst of correlated test notifications through the gateway to the "
        "probe's sink and classify the outcome.",
        epilog="Waiting for late mail: the run ends as soon as every accepted notification has "
        "arrived. Otherwise the missing ones are declared lost only after the settle window has "
        f"passed in silence: {DEFAULT_WINDOW_S:g} s for a gateway without history; once the "
        f"ledger holds {MIN_HEALTHY_RUNS} fully delivered runs of the same gateway, "
        f"{HISTORY_FACTOR:g}× its slowest delivery or longest gap between deliveries (at least "
        "--grace, at most the default); or --settle. The report says which window was used and "
        "why. Late deliveries: a sink that keeps running (`notifyprobe sink` with --no-sink, or "
        "`notifyprobe watch`) records mail that arrives after the verdict; `notifyprobe verdict "
        "RUN_ID` then re-judges the run and says what changed.",
    )
    add_burst_options(p, gateway_required=True)
    out = p.add_argument_group("output")
    out.add_argument(
        "--json", metavar="FILE|-", help="also write the result as JSON (-: stdout; default: none)"
    )
    out.add_argument(
        "--format",
        choices=["text", "json", "nagios"],
        default="text",
        help="stdout: text, json, or nagios (one monitoring-plugin line with perfdata; "
        "default: text)",
    )
    out.add_argument(
        "--warning",
        type=plugin_thresholds,
        default=PluginThresholds(),
        metavar="loss=N%,latency=Ns",
        help="WARNING when loss or the slowest delivery is above this (nagios format; "
        "default: the verdict alone decides)",
    )
    out.add_argument(
        "--critical",
        type=plugin_thresholds,
        default=PluginThresholds(),
        metavar="loss=N%,latency=Ns",
        help="CRITICAL when loss or the slowest delivery is above this (nagios format; "
        "default: the verdict alone decides)",
    )
    add_diagnosis_options(p)
    add_evidence_options(p)
    p.set_defaults(handler=run)


class ProgressLine:
    """A one-line live display on a terminal's stderr; silent when stderr is not a TTY."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()

    def __call__(self, p: Progress) -> None:
        if self.enabled:
            waiting = ""
            if p.provisional is not None and p.left_s is not None:
                waiting = f" · {p.provisional.value} unless more arrives in {p.left_s:.1f} s"
            sys.stderr.write(
                f"\r\033[K  {p.phase:<8} sent {p.sent}/{p.total} · accepted {p.accepted} · "
                f"delivered {p.delivered}{waiting}"
            )
            sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def plugin_thresholds(text: str) -> PluginThresholds:
    try:
        return PluginThresholds.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    fmt = "json" if args.json == "-" and args.format == "text" else args.format
    if args.json == "-" and fmt == "nagios":
        raise UsageError("burst: --json - and --format nagios both want stdout; pick one")
    settings = settings_from(args)
    if settings.security.insecure:
        print(f"notifyprobe: WARNING: {INSECURE_WARNING}", file=sys.stderr, flush=True)
    if settings.domain == DEFAULT_DOMAIN and not may_be_lab(settings.gateway):
        # A gateway on loopback may be the lab gateway: its greeting tells, the report says.
        warning = default_domain_warning(settings.domain)
        print(f"notifyprobe: WARNING: {warning}", file=sys.stderr, flush=True)
    argv, secrets = kept_with_run(args)
    # One run per process: its bundle keeps every event of it, the sink's included.
    job = Job(settings, request_from(args), argv, secrets, log_events=lambda _: CAPTURE.events())
    probe = Probe(job)
    progress = ProgressLine()
    CAPTURE.clear()
    run_id = new_run_id()
    with open_ledger(args.db) as ledger:
        t0 = time.monotonic()
        try:
            outcome = run_stoppable(probe.run(ledger, progress, run_id=run_id))
        except Stopped as stopped:
            outcome = cut_short(ledger, run_id, stopped, time.monotonic() - t0)
        finally:
            progress.clear()
        report = probe.finish(ledger, outcome).report
        if args.evidence:
            write_bundle(args, ledger, run_id)
    record, verdict = report.record, report.verdict
    if args.json and args.json != "-":
        write_json(args.json, report_json(report))
    if fmt == "json":
        write_json("-", report_json(report))
        return int(verdict.severity)
    if fmt == "nagios":
        result = plugin_result(record, verdict, args.warning, args.critical)
        print("\n".join([result.line, *plugin_long_output(report)]))
        return int(result.state)
    print(to_text(report))
    return int(verdict.severity)


def cut_short(ledger: Ledger, run_id: str, stopped: Stopped, elapsed_s: float) -> ProbeOutcome:
    """The run a signal cut short, judged from what it recorded; stderr says how to judge it
    again. Stopped before the run was recorded: nothing to judge, the plain error."""
    if run_id not in ledger.unjudged_runs():
        raise ProbeError(f"{stopped} before the run began: nothing was sent")
    record, verdict = judge_cut_run(ledger, run_id)
    print(
        f"notifyprobe: {stopped}: run {run_id} is kept as interrupted ({verdict.summary}); "
        f"judge it again with: {rejudge_command(run_id, ledger.path)}",
        file=sys.stderr,
        flush=True,
    )
    return ProbeOutcome(record, verdict, elapsed_s)
