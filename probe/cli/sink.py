"""`notifyprobe sink`: run the sink alone, as a long-lived service recording into the ledger."""

from __future__ import annotations

import argparse
import asyncio
import sys

from probe.cli.common import add_db, domain, endpoint, open_ledger, stop_on_signals
from probe.cli.hardening import access_from, add_sink_options, sink_limits_from, sink_tls_from
from probe.delivery import Sink
from probe.ledger import LedgerWriter


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    p = subparsers.add_parser(
        "sink",
        parents=parents,
        help="run the sink alone (for `burst --no-sink` on another host or process)",
        description="Receive probe mail for --domain and record it in the ledger until stopped.",
    )
    p.add_argument("--listen", type=endpoint, default=endpoint("127.0.0.1:2525"))
    p.add_argument("--domain", type=domain, default="probe.invalid")
    add_sink_options(p)
    add_db(p)
    p.set_defaults(handler=run)


async def serve(args: argparse.Namespace) -> None:
    limits, access, tls = sink_limits_from(args), access_from(args), sink_tls_from(args)
    access.check_bind(args.listen.host)  # before the ledger is created or opened
    with open_ledger(args.db) as ledger:
        writer = LedgerWriter(ledger)
        sink = Sink(
            writer,
            host=args.listen.host,
            port=args.listen.port,
            domain=args.domain,
            limits=limits,
            access=access,
            tls_context=tls,
        )
        stopped = stop_on_signals()
        try:
            await sink.start()
        except BaseException:
            await writer.close()
            raise
        print(
            f"notifyprobe sink listening on {sink.address} for @{args.domain}, "
            f"recording to {ledger.path}",
            file=sys.stderr,
            flush=True,
        )
        try:
            await stopped.wait()
        finally:
            await sink.stop()
            await writer.close()


def run(args: argparse.Namespace) -> int:
    asyncio.run(serve(args))
    return 0
