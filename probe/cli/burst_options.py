"""The burst options (`burst`, and the burst check of `postflight`) and the settings they make."""

from __future__ import annotations

import argparse

from probe.cli.common import add_db, domain, endpoint, non_negative_int, positive_int, seconds
from probe.cli.hardening import (
    access_from,
    add_client_security,
    add_sink_options,
    client_security_from,
    sink_limits_from,
    sink_tls_from,
)
from probe.delivery import (
    DEFAULT_WINDOW_S,
    GAP_FLAG,
    MIN_HEALTHY_RUNS,
    OLD_GAP_SPELLINGS,
    BurstSettings,
    Patience,
    ProbeSettings,
    refuse_own_sink,
)
from probe.domain import DEFAULT_DOMAIN
from probe.verdict import Thresholds


def add_burst_options(p: argparse.ArgumentParser, *, gateway_required: bool) -> None:
    """Everything `settings_from` reads: shared by `burst` and `postflight`'s burst check, in
    the groups `--help` shows, each option with its default."""
    send = p.add_argument_group("what to send, and where")
    send.add_argument(
        "--gateway",
        type=endpoint,
        required=gateway_required,
        metavar="HOST:PORT",
        help="the gateway's SMTP listener"
        + (" (required)" if gateway_required else " (default: no burst)"),
    )
    send.add_argument(
        "--sink",
        type=endpoint,
        default=endpoint("127.0.0.1:2525"),
        metavar="HOST:PORT",
        help="where the sink listens and the control message goes (default: 127.0.0.1:2525); "
        "off loopback it needs --allow-remote and --allow-client",
    )
    send.add_argument(
        "--no-sink",
        dest="own_sink",
        action="store_false",
        help="do not start a sink: a separate `notifyprobe sink` records into --db "
        "(default: start one)",
    )
    send.add_argument(
        "--domain",
        type=domain,
        default=DEFAULT_DOMAIN,
        help="probe domain: every recipient is probe+<token>@DOMAIN, routed to the sink by the "
        f"gateway's mail server (default: {DEFAULT_DOMAIN}, which routes nowhere: for the lab "
        "gateway only)",
    )
    default, describe = BurstSettings(), BurstSettings.describe
    send.add_argument(
        "--count", type=positive_int, default=default.count, metavar="N", help=describe("count")
    )
    send.add_argument(
        "--concurrency",
        type=positive_int,
        default=default.concurrency,
        metavar="C",
        help=describe("concurrency"),
    )
    send.add_argument(
        "--per-session",
        type=positive_int,
        default=default.per_session,
        metavar="N",
        help=describe("per_session"),
    )
    send.add_argument(
        "--reuse",
        dest="per_session",
        action="store_const",
        const=default.per_session,
        help=f"older spelling of --per-session {default.per_session} (the default)",
    )
    send.add_argument(
        "--no-reuse",
        dest="per_session",
        action="store_const",
        const=1,
        help="older spelling of --per-session 1: one SMTP session per notification",
    )
    send.add_argument(
        GAP_FLAG,
        dest="notification_gap",
        metavar="SECONDS",
        type=seconds,
        default=default.notification_gap_s,
        help=describe("notification_gap_s"),
    )
    for old, new in OLD_GAP_SPELLINGS.items():
        if new == GAP_FLAG:  # accepted, not shown
            send.add_argument(old, dest="notification_gap", type=seconds, help=argparse.SUPPRESS)
    send.add_argument(
        "--max-rate",
        type=float,
        default=default.max_rate,
        metavar="MSGS_PER_S",
        help=describe("max_rate"),
    )
    send.add_argument(
        "--no-control",
        dest="control",
        action="store_false",
        help="do not send the control message straight to the sink (default: send it; "
        "without it the verdict says the sink was not verified)",
    )

    judge = p.add_argument_group("waiting and judging")
    judge.add_argument(
        "--step-timeout",
        type=seconds,
        default=default.step_timeout_s,
        metavar="SECONDS",
        help=describe("step_timeout_s"),
    )
    judge.add_argument(
        "--breaker",
        type=non_negative_int,
        default=default.breaker,
        metavar="N",
        help=describe("breaker"),
    )
    patience, thresholds = Patience(), Thresholds()
    judge.add_argument(
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
    judge.add_argument(
        "--timeout",
        type=seconds,
        default=patience.timeout_s,
        metavar="SECONDS",
        help="longest wait for late mail after the burst, whatever the window "
        f"(default: {patience.timeout_s:g})",
    )
    judge.add_argument(
        "--grace",
        type=seconds,
        default=patience.grace_s,
        metavar="SECONDS",
        help=f"shortest window the gateway's history may teach (default: {patience.grace_s:g})",
    )
    judge.add_argument(
        "--slow-after",
        type=seconds,
        default=thresholds.slow_after_s,
        metavar="SECONDS",
        help="a delivery slower than this makes a complete run slow "
        f"(default: {thresholds.slow_after_s:g})",
    )
    add_client_security(p)
    add_sink_options(p)
    add_db(p)


def settings_from(args: argparse.Namespace) -> ProbeSettings:
    """The settings of one run; a usage error, before anything is sent, when they cannot make
    an honest run (a gateway that is the sink itself, a sink open to anyone)."""
    if args.gateway is not None:  # with its own sink or not: --sink is where the sink listens
        refuse_own_sink(args.gateway, args.sink)
    access = access_from(args)
    if args.own_sink:
        access.check_bind(args.sink.host)
    burst = BurstSettings(
        count=args.count,
        concurrency=args.concurrency,
        per_session=args.per_session,
        notification_gap_s=args.notification_gap,
        step_timeout_s=args.step_timeout,
        breaker=args.breaker,
        max_rate=args.max_rate,
        control=args.control,
    )
    return ProbeSettings(
        gateway=args.gateway,
        sink=args.sink,
        burst=burst,
        domain=args.domain,
        own_sink=args.own_sink,
        patience=Patience(settle_s=args.settle, grace_s=args.grace, timeout_s=args.timeout),
        thresholds=Thresholds(slow_after_s=args.slow_after),
        security=client_security_from(args),
        sink_limits=sink_limits_from(args),
        sink_access=access,
        sink_tls=sink_tls_from(args) if args.own_sink else None,
    )
