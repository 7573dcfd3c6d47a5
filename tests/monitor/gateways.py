"""Gateways written for the watch tests (not the lab's code): one that delivers in batches, like
a queue runner, and one that hangs after DATA. Each runs in process (`batching_gateway`,
`hung_gateway`) or as its own process for the service tests:

    python -m tests.monitor.gateways batching --relay 127.0.0.1:2525 --every 3
    python -m tests.monitor.gateways hung

which prints `listening on 127.0.0.1:PORT` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import subprocess
import sys
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
    stopped) stays queued for the next run, as a real MTA's queue keeps it."""

    def __init__(self, relay: Endpoint, every_s: float):
        self.relay = relay
        self.every_s = every_s
        self.queue: list[tuple[str, list[str], bytes]] = []
        self.relayed = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.queue.append((envelope.mail_from or "", list(envelope.rcpt_tos), content))
        return "250 2.0.0 queued for the next queue run"

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            batch, self.queue = self.queue, []
            left = []
            for index, (sender, rcpts, content) in enumerate(batch):
                try:
                    await aiosmtplib.send(content, sender=sender, recipients=rcpts,
                                          hostname=self.relay.host, port=self.relay.port,
                                          timeout=5)  # fmt: skip
                    self.relayed += 1
                except (aiosmtplib.SMTPException, OSError):
                    left = batch[index:]  # the relay is down: keep the rest for the next run
                    break
            self.queue = left + self.queue


@asynccontextmanager
async def batching_gateway(relay: Endpoint, every_s: float) -> AsyncIterator[Endpoint]:
    runner = QueueRunner(relay, every_s)
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
async def hung_gateway() -> AsyncIterator[Endpoint]:
    """Answers until the message is sent, then never confirms it (hangs after DATA)."""
    async with raw_gateway(silent_at(SmtpPhase.END_OF_DATA)) as endpoint:
        yield endpoint


@contextmanager
def gateway_process(*args: str) -> Iterator[int]:
    """One of these gateways in its own process; yields the port it listens on."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.monitor.gateways", *args],
                            stdout=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    try:
        assert proc.stdout is not None
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", proc.stdout.readline())
        assert match, f"gateway {args} did not start"
        yield int(match.group(1))
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


async def serve(args: argparse.Namespace) -> None:
    if args.kind == "batching":
        gateway = batching_gateway(Endpoint.parse(args.relay), args.every)
    else:
        gateway = hung_gateway()
    async with gateway as endpoint:
        print(f"listening on {endpoint}", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=("batching", "hung"))
    parser.add_argument("--relay", default="127.0.0.1:2525")
    parser.add_argument("--every", type=float, default=3.0, help="seconds between queue runs")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
