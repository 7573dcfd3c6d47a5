"""A 250 from the sink means the message is on disk: group commit, and SIGKILL at any moment."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import sys
import time
from pathlib import Path

import aiosmtplib
import pytest

from probe.correlation import recipient_for
from probe.delivery.sink import Sink
from probe.ledger import Ledger, LedgerWriter
from probe.records import Run
from tests.cli import DEVNULL, PIPE, CliProcess, start_cli
from tests.conftest import TEST_KEY, with_test_key

pytestmark = pytest.mark.real

DOMAIN = "probe.invalid"
RUN = "feedc0ffee"
PROBE = [sys.executable, "-m", "probe"]


def message(seq: int) -> tuple[bytes, str]:
    token = TEST_KEY.token(RUN, seq)
    return f"Subject: durable {token}\r\nX-Probe-Token: {token}\r\n\r\nbody\r\n".encode(), token


def recorded_seqs(db: Path) -> set[int]:
    """What is on disk, read by a connection of its own (sees only committed data)."""
    with sqlite3.connect(db) as conn:
        return {s for (s,) in conn.execute("SELECT seq FROM deliveries WHERE run_id = ?", (RUN,))}


async def client(port: int, seqs: range, acked: list[int], on_ack=None) -> None:
    """One SMTP connection sending `seqs`; appends each seq that got 250. Stops at an error."""
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10)
    try:
        await smtp.connect()
        for seq in seqs:
            data, token = message(seq)
            _, reply = await smtp.sendmail("ops@example.org", [recipient_for(token, DOMAIN)], data)
            assert "Recorded" in reply
            acked.append(seq)
            if on_ack is not None:
                on_ack(seq)
    except (aiosmtplib.SMTPException, OSError):
        return  # the sink died under us: what was acknowledged so far is what counts
    finally:
        smtp.close()


async def test_concurrent_sessions_share_commits_and_250_follows_the_commit(tmp_path):
    db = tmp_path / "group.sqlite3"
    clients, each = 20, 10
    with Ledger(with_test_key(db)) as ledger:
        ledger.create_run(Run(RUN, "gw:25", DOMAIN, count=clients * each, started_at=time.time()))
        writer = LedgerWriter(ledger)
        early: list[int] = []

        def on_ack(seq: int) -> None:  # runs right after the client read 250
            if seq not in recorded_seqs(db):
                early.append(seq)

        async with Sink(writer, host="127.0.0.1", port=0, domain=DOMAIN) as sink:
            commits_before = ledger.commits
            acked: list[int] = []
            await asyncio.gather(
                *(
                    client(sink.port, range(1 + c * each, 1 + (c + 1) * each), acked, on_ack)
                    for c in range(clients)
                )
            )
            commits = ledger.commits - commits_before
        await writer.close()
    assert sorted(acked) == list(range(1, clients * each + 1))
    assert early == []  # no 250 was ever sent before its commit
    assert commits <= len(acked) // 2, f"{commits} commits for {len(acked)} messages"


async def test_sigkill_of_the_sink_loses_no_acknowledged_message(tmp_path):
    db = tmp_path / "killed.sqlite3"
    clients, each, kill_after = 8, 200, 300
    with Ledger(with_test_key(db)) as ledger:
        ledger.create_run(Run(RUN, "gw:25", DOMAIN, count=clients * each + 1, started_at=0.0))

    def start_sink() -> tuple[CliProcess[str], int]:
        proc = start_cli(
            "sink",
            "--listen",
            "127.0.0.1:0",
            "--domain",
            DOMAIN,
            "--db",
            str(db),
            stderr=PIPE,
            stdout=DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stderr is not None  # a pipe
        line = proc.stderr.readline()
        match = re.search(r"listening on [\d.]+:(\d+)", line)
        assert match, line
        return proc, int(match.group(1))

    proc, port = start_sink()
    assert proc.stderr is not None
    acked: list[int] = []
    killed = asyncio.Event()

    def on_ack(_: int) -> None:
        if len(acked) >= kill_after and not killed.is_set():
            os.kill(proc.pid, signal.SIGKILL)  # part-way, while other sessions are mid-flight
            killed.set()

    try:
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    client(port, range(1 + c * each, 1 + (c + 1) * each), acked, on_ack)
                    for c in range(clients)
                )
            ),
            timeout=60,
        )
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stderr.close()
    assert killed.is_set() and proc.returncode == -signal.SIGKILL
    assert kill_after <= len(acked) < clients * each  # really killed part-way

    proc, port = start_sink()  # restart on the same ledger: recovery, then business as usual
    assert proc.stderr is not None
    try:
        after: list[int] = []
        await client(port, range(clients * each + 1, clients * each + 2), after)
        assert after == [clients * each + 1]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        proc.stderr.close()

    on_disk = recorded_seqs(db)
    assert set(acked) <= on_disk, f"lost after 250: {sorted(set(acked) - on_disk)[:10]}"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
