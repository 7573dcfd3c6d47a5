"""`notifyprobe lab gateway`: a relay with deterministic faults, to rehearse the probe."""

from __future__ import annotations

import argparse
import asyncio
import sys

from probe.cli.common import endpoint, stop_on_signals
from probe.delivery import password_from_env
from probe.errors import UsageError
from probe.lab import FaultMode, LabGateway


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    lab = subparsers.add_parser("lab", help="lab tools: a simulated gateway with fault modes")
    lab_commands = lab.add_subparsers(dest="lab_command", metavar="LAB_COMMAND")
    lab_commands.required = True
    p = lab_commands.add_parser(
        "gateway",
        parents=parents,
        help="run a lab gateway that relays to --relay with a fault --mode",
        description="An SMTP relay with deterministic faults. Modes: healthy, "
        "first-only[:drop|4xx|5xx|bounce], drop-after-k:K, intermittent:P, slow:SECONDS, "
        "batch:SECONDS (a queue runner: the first at once, the rest every SECONDS), "
        "queue-per-session:K[:W], duplicate, reject, "
        "stall:PHASE (silent from that phase on: greeting, ehlo, mail, rcpt, data, end_of_data), "
        "hang-up:PHASE (closes the connection at that phase, same phases), down.",
    )
    p.add_argument("--listen", type=endpoint, default=endpoint("127.0.0.1:2526"))
    p.add_argument("--relay", type=endpoint, default=endpoint("127.0.0.1:2525"))
    p.add_argument("--mode", type=FaultMode.parse, default=FaultMode("healthy"))
    p.add_argument("--seed", type=int, default=0, help="seed for intermittent (default: 0)")
    p.add_argument(
        "--rewrite",
        action="store_true",
        help="rebuild each message from a template (new envelope, encoded Subject, base64 body)",
    )
    p.add_argument("--auth-user", metavar="NAME", help="require SMTP AUTH as this user")
    p.add_argument(
        "--auth-password-env", metavar="VAR", help="environment variable holding its password"
    )
    p.set_defaults(handler=run)


async def serve(args: argparse.Namespace) -> None:
    if bool(args.auth_user) != bool(args.auth_password_env):
        raise UsageError("lab gateway: --auth-user and --auth-password-env go together")
    auth = (args.auth_user, password_from_env(args.auth_password_env)) if args.auth_user else None
    gateway = LabGateway(
        args.listen, args.relay, args.mode, seed=args.seed, rewrite=args.rewrite, auth=auth
    )
    stopped = stop_on_signals()
    await gateway.start()
    state = "not listening (down)" if args.mode.name == "down" else f"listening on {gateway.listen}"
    print(
        f"lab gateway {state}, relaying to {args.relay}, mode {args.mode.name}",
        file=sys.stderr,
        flush=True,
    )
    try:
        await stopped.wait()
    finally:
        await gateway.stop()


def run(args: argparse.Namespace) -> int:
    asyncio.run(serve(args))
    return 0
