"""Gateways written for the watch tests (not the lab's code): one that delivers in batches, like
a queue runner, and one that hangs after DATA. Each runs in process (`batching_gateway`,
`hung_gateway`) or as its own process for the service tests:

    python -m tests.monitor.gateways batching --relay 127.0.0.1:2525 --every 3 [--first-at-once]
    python -m tests.monitor.gateways hung

which prints `listening on 127.0.0.1:PORT` once it accepts connections (and the hung one
`holding a message unconfirmed` once it holds one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import subprocess
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session

from probe.records import Endpoint, SmtpPhase
from tests.delivery.test_stalls import raw_gateway, silent_at
from tests.test_cli import ENV


class QueueRunner:
    """Accepts every message at once (250) and relays what it holds to `relay` every `every_s`
    seconds, in one batch. A batch the relay cannot take (the sink is down: the probe was
    stopped) stays queued for the next run, as a real MTA's queue keeps it. With
    `first_at_once`, the first message of each SMTP session is relayed before the 250 and only
    the later ones wait (a per-connection queueing limit): its bursts look first-only until
    the queue runs."""

    def __init__(self, relay: Endpoint, every_s: float, first_at_once: bool = False):
        self.relay = relay
        self.every_s = every_s
        self.first_at_once = first_at_once
        self.queue: list[tuple[str, list[str], bytes]] = []
        self.sessions: weakref.WeakSet[Session] = weakref.WeakSet()  # those that relayed one

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        message = (
            envelope.mail_from or "",
            list(envelope.rcpt_tos),
            envelope.original_content or b"",
        )
        if self.first_at_once and session not in self.sessions:
            self.sessions.add(session)
            if await self.send(*message):
                return "250 2.0.0 delivered"
        self.queue.append(message)
        return "250 2.0.0 queued for the next queue run"

    async def send(self, sender: str, rcpts: list[str], content: bytes) -> bool:
        try:
            relay = self.relay
            await aiosmtplib.send(
                content,
                sender=sender,
                recipients=rcpts,
                hostname=relay.host,
                port=relay.port,
                timeout=5,
            )
        except (aiosmtplib.SMTPException, OSError):
            return False
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            batch, self.queue = self.queue, []
            for index, message in enumerate(batch):
                if not await self.send(*message):
                    self.queue[:0] = batch[index:]  # the relay is down: keep the rest
                    break


@asynccontextmanager
async def batching_gateway(
    relay: Endpoint, every_s: float, first_at_once: bool = False
) -> AsyncIterator[Endpoint]:
    runner = QueueRunner(relay, every_s, first_at_once)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(runner), "127.0.0.1", 0)
    task = asyncio.create_task(runner.run())
    try:
        yield Endpoint("127.0.0.1", server.sockets[0].getsockname()[1])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.close()


@asynccontextmanager
async def hung_gateway(holding: asyncio.Event | None = None) -> AsyncIterator[Endpoint]:
    """Answers until the message is sent, then never confirms it (hangs after DATA).
    `holding` is set once it holds a whole message unconfirmed."""
    async with raw_gateway(silent_at(SmtpPhase.END_OF_DATA, holding)) as endpoint:
        yield endpoint


@contextmanager
def gateway_process(*args: str, holding: threading.Event | None = None) -> Iterator[int]:
    """One of these gateways in its own process; yields the port it listens on. `holding` is
    set once the hung gateway holds a whole message unconfirmed (it says so on stdout)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.monitor.gateways", *args],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert proc.stdout is not None
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", proc.stdout.readline())
        assert match, f"gateway {args} did not start"
        if holding is not None:
            stdout = proc.stdout

            def watch_stdout() -> None:
                if any(line.startswith("holding") for line in stdout):
                    holding.set()

            threading.Thread(target=watch_stdout, daemon=True).start()
        yield int(match.group(1))
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


async def serve(args: argparse.Namespace) -> None:
    if args.kind == "batching":
        gateway = batching_gateway(Endpoint.parse(args.relay), args.every, args.first_at_once)
        async with gateway as endpoint:
            print(f"listening on {endpoint}", flush=True)
            await asyncio.Event().wait()
    holding = asyncio.Event()
    async with hung_gateway(holding) as endpoint:
        print(f"listening on {endpoint}", flush=True)
        await holding.wait()
        print("holding a message unconfirmed", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=("batching", "hung"))
    parser.add_argument("--relay", default="127.0.0.1:2525")
    parser.add_argument("--every", type=float, default=3.0, help="seconds between queue runs")
    parser.add_argument("--first-at-once", action="store_true")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
