"""`notifyprobe burst`: send a burst through the gateway and judge what arrived."""

from __future__ import annotations

import argparse
import asyncio
import sys

from probe.cli import evidence
from probe.cli.common import (
    add_db,
    domain,
    endpoint,
    open_ledger,
    positive_int,
    seconds,
    write_json,
)
from probe.cli.explain import add_options as add_diagnosis_options
from probe.cli.explain import request_from
from probe.cli.hardening import (
    access_from,
    add_client_security,
    add_sink_options,
    client_security_from,
    sink_limits_from,
    sink_tls_from,
)
from probe.delivery.burst import DEFAULT_MAX_RATE, MAX_RATE_CAP
from probe.delivery.run import ProbeSettings, Progress, run_probe
from probe.delivery.settle import Patience
from probe.delivery.tls import INSECURE_WARNING
from probe.diagnosis import gather as explain
from probe.errors import ProbeError, UsageError
from probe.logs import CAPTURE
from probe.monitor.nagios import Limits, plugin_result, unknown_line
from probe.reporting.text import diagnosis_text, to_json, to_text
from probe.verdict import Thresholds


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    p = subparsers.add_parser(
        "burst",
        parents=parents,
        help="send test notifications through the gateway and judge delivery",
        description="Send a burst of correlated test notifications through the gateway to the "
        "probe's sink and classify the outcome.",
    )
    add_burst_options(p, gateway_required=True)
    p.add_argument("--json", metavar="FILE|-", help="write the result as JSON")
    p.add_argument(
        "--format",
        choices=["text", "json", "nagios"],
        default="text",
        help="stdout: text (default), json, or nagios (one monitoring-plugin line with perfdata)",
    )
    p.add_argument(
        "--warning",
        type=limits,
        default=Limits(),
        metavar="loss=N%,latency=Ns",
        help="WARNING when loss or the slowest delivery is above this (nagios format)",
    )
    p.add_argument(
        "--critical",
        type=limits,
        default=Limits(),
        metavar="loss=N%,latency=Ns",
        help="CRITICAL when loss or the slowest delivery is above this (nagios format)",
    )
    add_diagnosis_options(p)
    evidence.add_burst_options(p)
    p.set_defaults(handler=run)


def add_burst_options(p: argparse._ActionsContainer, *, gateway_required: bool) -> None:
    """Everything `settings_from` reads: shared by `burst` and `postflight`'s burst check."""
    p.add_argument("--gateway", type=endpoint, required=gateway_required, metavar="HOST:PORT")
    p.add_argument(
        "--sink",
        type=endpoint,
        default=endpoint("127.0.0.1:2525"),
        metavar="HOST:PORT",
        help="where the sink listens (default: 127.0.0.1:2525)",
    )
    p.add_argument(
        "--no-sink",
        dest="own_sink",
        action="store_false",
        help="do not start a sink: a separate `notifyprobe sink` records into --db",
    )
    p.add_argument("--domain", type=domain, default="probe.invalid", help="probe domain")
    p.add_argument("--count", type=positive_int, default=10, help="notifications (default: 10)")
    p.add_argument("--concurrency", type=positive_int, default=1, help="SMTP connections")
    p.add_argument(
        "--reuse",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reuse each connection for several notifications (default: reuse)",
    )
    p.add_argument("--interval", type=seconds, default=0.0, help="seconds between notifications")
    p.add_argument("--step-timeout", type=seconds, default=10.0, help="per SMTP step (s)")
    p.add_argument("--timeout", type=seconds, default=30.0, help="longest wait for late mail (s)")
    p.add_argument(
        "--grace",
        type=seconds,
        default=Patience().grace_s,
        help="added to the adaptive wait; raise it above the spacing of a gateway that paces "
        f"deliveries (default: {Patience().grace_s:g} s)",
    )
    p.add_argument("--slow-after", type=seconds, default=5.0, help="latency that is slow (s)")
    p.add_argument(
        "--no-control",
        dest="control",
        action="store_false",
        help="do not send the control message straight to the sink",
    )
    p.add_argument(
        "--max-rate",
        type=float,
        default=DEFAULT_MAX_RATE,
        metavar="MSGS_PER_S",
        help=f"never submit faster than this, all connections together "
        f"(default: {DEFAULT_MAX_RATE:g}, at most {MAX_RATE_CAP:g})",
    )
    add_client_security(p)
    add_sink_options(p)
    add_db(p)


def settings_from(args: argparse.Namespace) -> ProbeSettings:
    access = access_from(args)
    if args.own_sink:
        access.check_bind(args.sink.host)
    return ProbeSettings(
        gateway=args.gateway,
        sink=args.sink,
        domain=args.domain,
        count=args.count,
        concurrency=args.concurrency,
        reuse=args.reuse,
        interval_s=args.interval,
        step_timeout_s=args.step_timeout,
        own_sink=args.own_sink,
        control=args.control,
        patience=Patience(grace_s=args.grace, timeout_s=args.timeout),
        thresholds=Thresholds(slow_after_s=args.slow_after),
        security=client_security_from(args),
        max_rate=args.max_rate,
        sink_limits=sink_limits_from(args),
        sink_access=access,
        sink_tls=sink_tls_from(args) if args.own_sink else None,
    )


class ProgressLine:
    """A one-line live display on a terminal's stderr; silent when stderr is not a TTY."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()

    def __call__(self, p: Progress) -> None:
        if self.enabled:
            sys.stderr.write(
                f"\r  {p.phase:<8} sent {p.sent}/{p.total} · accepted {p.accepted} · "
                f"delivered {p.delivered}   "
            )
            sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def limits(text: str) -> Limits:
    try:
        return Limits.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    fmt = "json" if args.json == "-" and args.format == "text" else args.format
    if args.json == "-" and fmt == "nagios":
        raise UsageError("burst: --json - and --format nagios both want stdout; pick one")
    try:
        settings = settings_from(args)
        if settings.security.insecure:
            print(f"notifyprobe: WARNING: {INSECURE_WARNING}", file=sys.stderr, flush=True)
        request = request_from(args)
        prepared = explain.prepare(request)
        progress = ProgressLine()
        CAPTURE.clear()  # the evidence bundle keeps this run's log events only
        with open_ledger(args.db) as ledger:
            try:
                outcome = asyncio.run(run_probe(ledger, settings, progress))
            finally:
                progress.clear()
            why = explain.explain(request, prepared, ledger, outcome)
            run_id = outcome.record.run.run_id
            evidence.keep_run_artifacts(args, ledger, run_id, why)
            if args.evidence:
                evidence.write(args, ledger, run_id)
    except ProbeError as exc:
        if fmt == "nagios":  # a plugin must say UNKNOWN on stdout, not only on stderr
            print(unknown_line(str(exc)), flush=True)
        raise
    record, verdict = outcome.record, outcome.verdict
    report = to_json(record, verdict) | why.json_fields()
    if args.json and args.json != "-":
        write_json(args.json, report)
    if fmt == "json":
        write_json("-", report)
        return int(verdict.severity)
    if fmt == "nagios":
        result = plugin_result(record, verdict, args.warning, args.critical)
        print(result.line)
        return int(result.state)
    print(to_text(record, verdict, outcome.elapsed_s))
    print(diagnosis_text(why.diagnosis, why.inventory))
    return int(verdict.severity)
