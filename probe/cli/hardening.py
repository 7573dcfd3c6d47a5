"""Options shared by `sink` and `burst`: sink limits and access, TLS and AUTH for submission.

Not a subcommand: a helper the subcommands call, so both expose the same names and defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from probe.cli.common import positive_int, seconds
from probe.delivery import (
    TLS_MODES,
    Access,
    ClientSecurity,
    Secret,
    SinkLimits,
    client_network,
    password_from_env,
    password_from_file,
    server_context,
)
from probe.errors import UsageError

if TYPE_CHECKING:
    import ssl

_DEFAULT = SinkLimits()


def add_sink_options(parser: argparse._ActionsContainer) -> None:
    g = parser.add_argument_group("sink limits and access")
    g.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow the sink to listen on a non-loopback address (needs --allow-client; "
        "default: loopback only)",
    )
    g.add_argument(
        "--allow-client",
        action="append",
        default=[],
        metavar="CIDR",
        help="address or network that may deliver to the sink (repeatable; default: none, "
        "loopback always may)",
    )
    g.add_argument(
        "--max-message-bytes",
        type=positive_int,
        default=_DEFAULT.max_message_bytes,
        metavar="BYTES",
        help=f"larger messages get 552 (default: {_DEFAULT.max_message_bytes})",
    )
    g.add_argument(
        "--max-connections",
        type=positive_int,
        default=_DEFAULT.max_connections,
        metavar="N",
        help=f"live sessions in all (default: {_DEFAULT.max_connections})",
    )
    g.add_argument(
        "--max-per-client",
        type=positive_int,
        default=_DEFAULT.max_per_client,
        metavar="N",
        help=f"live sessions per client address (default: {_DEFAULT.max_per_client})",
    )
    g.add_argument(
        "--max-recipients",
        type=positive_int,
        default=_DEFAULT.max_recipients,
        metavar="N",
        help=f"recipients per message (default: {_DEFAULT.max_recipients})",
    )
    g.add_argument(
        "--idle-timeout",
        type=seconds,
        default=_DEFAULT.idle_timeout_s,
        metavar="SECONDS",
        help=f"close a session with no complete command for this long "
        f"(default: {_DEFAULT.idle_timeout_s:g})",
    )
    g.add_argument(
        "--session-timeout",
        type=seconds,
        default=_DEFAULT.session_timeout_s,
        metavar="SECONDS",
        help=f"longest session (default: {_DEFAULT.session_timeout_s:g})",
    )
    g.add_argument(
        "--tls-cert",
        type=Path,
        metavar="PEM",
        help="offer STARTTLS with this certificate (default: no STARTTLS)",
    )
    g.add_argument("--tls-key", type=Path, metavar="PEM", help="the key of --tls-cert")


def sink_limits_from(args: argparse.Namespace) -> SinkLimits:
    if args.idle_timeout <= 0 or args.session_timeout <= 0:
        raise UsageError("--idle-timeout and --session-timeout must be above 0")
    return SinkLimits(
        max_message_bytes=args.max_message_bytes,
        max_connections=args.max_connections,
        max_per_client=args.max_per_client,
        max_recipients=args.max_recipients,
        idle_timeout_s=args.idle_timeout,
        session_timeout_s=args.session_timeout,
    )


def access_from(args: argparse.Namespace) -> Access:
    return Access(
        allow_remote=args.allow_remote,
        allowed_clients=tuple(client_network(text) for text in args.allow_client),
    )


def sink_tls_from(args: argparse.Namespace) -> ssl.SSLContext | None:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if args.tls_cert is None:
        return None
    return server_context(args.tls_cert, args.tls_key)


def add_client_security(parser: argparse._ActionsContainer) -> None:
    g = parser.add_argument_group("submission security (TLS and AUTH)")
    g.add_argument(
        "--tls",
        choices=TLS_MODES,
        default="none",
        help="TLS to the gateway: STARTTLS, implicit TLS (SMTPS) or none (default)",
    )
    g.add_argument(
        "--ca-file",
        type=Path,
        metavar="PEM",
        help="verify the gateway's certificate against this CA (default: system CAs)",
    )
    g.add_argument(
        "--insecure",
        action="store_true",
        help="do NOT verify the gateway's certificate (reported as a warning; default: verify)",
    )
    g.add_argument("--user", metavar="NAME", help="AUTH user name (default: no AUTH)")
    source = g.add_mutually_exclusive_group()
    source.add_argument(
        "--password-env",
        metavar="VAR",
        help="take the AUTH password from this environment variable",
    )
    source.add_argument(
        "--password-file",
        type=Path,
        metavar="PATH",
        help="take the AUTH password from the first line of this file",
    )


def client_security_from(args: argparse.Namespace) -> ClientSecurity:
    password: Secret | None = None
    if args.password_env:
        password = password_from_env(args.password_env)
    elif args.password_file:
        password = password_from_file(args.password_file)
    return ClientSecurity(
        tls=args.tls,
        ca_file=args.ca_file,
        insecure=args.insecure,
        user=args.user,
        password=password,
    )
