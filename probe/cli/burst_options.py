"""The burst options (`burst`, and the burst check of `postflight`) and the settings they make."""

from __future__ import annotations

import argparse

from probe.cli.common import add_db, domain, endpoint, positive_int, seconds
from probe.cli.hardening import (
    access_from,
    add_client_security,
    add_sink_options,
    client_security_from,
    sink_limits_from,
    sink_tls_from,
)
from probe.delivery import (
    DEFAULT_MAX_RATE,
    DEFAULT_WINDOW_S,
    MAX_RATE_CAP,
    MIN_HEALTHY_RUNS,
    Patience,
    ProbeSettings,
)
from probe.verdict import Thresholds


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
    p.add_argument(
        "--settle",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="settle window: accepted notifications still missing are declared lost once they "
        "have been silent this long (after the burst or the last delivery). Default: learned "
        f"from the gateway's own history in the ledger once it has {MIN_HEALTHY_RUNS} fully "
        f"delivered runs, else {DEFAULT_WINDOW_S:g} s, safe for queue runners that deliver in "
        "batches. A run where everything arrives never waits.",
    )
    p.add_argument(
        "--timeout",
        type=seconds,
        default=Patience().timeout_s,
        help="longest wait for late mail after the burst, whatever the window "
        f"(default: {Patience().timeout_s:g} s)",
    )
    p.add_argument(
        "--grace",
        type=seconds,
        default=Patience().grace_s,
        help=f"shortest window the gateway's history may teach (default: {Patience().grace_s:g} s)",
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
        patience=Patience(settle_s=args.settle, grace_s=args.grace, timeout_s=args.timeout),
        thresholds=Thresholds(slow_after_s=args.slow_after),
        security=client_security_from(args),
        max_rate=args.max_rate,
        sink_limits=sink_limits_from(args),
        sink_access=access,
        sink_tls=sink_tls_from(args) if args.own_sink else None,
    )
