"""Faults around the probe: the right verdict or a clear exit 3, and a consistent ledger."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sqlite3
import struct
import sys
import time
from pathlib import Path

import aiosmtplib
import pytest

from probe.correlation import TokenRef, recipient_for
from probe.delivery.burst import Sender
from probe.delivery.run import ProbeSettings, Progress, _Tracker, run_probe
from probe.delivery.settings import BurstSettings
from probe.delivery.settle import Patience, settle_deadline
from probe.delivery.sink import Sink
from probe.ledger import Ledger, LedgerWriter
from probe.records import (
    Delivery,
    Endpoint,
    ErrorKind,
    Notification,
    Run,
    RunRecord,
    SmtpPhase,
    SmtpReply,
    Submission,
)
from probe.verdict import Pattern, Severity, classify
from tests.cli import DEVNULL, PIPE, run_cli, start_cli
from tests.conftest import TEST_KEY, with_test_key
from tests.known import submitted
from tests.ports import unused_port

PROBE = [sys.executable, "-m", "probe"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
DOMAIN = "probe.invalid"


def integrity_ok(db: Path) -> bool:
    with sqlite3.connect(db) as conn:
        (result,) = conn.execute("PRAGMA integrity_check").fetchone()
        return bool(result == "ok")


@pytest.mark.real
async def test_gateway_killed_mid_burst_is_degraded_and_every_notification_is_accounted(tmp_path):
    sink_port = unused_port()
    gateway = start_cli(
        "lab",
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--relay",
        f"127.0.0.1:{sink_port}",
        stderr=PIPE,
        stdout=DEVNULL,
        env=ENV,
    )
    assert gateway.stderr is not None  # a pipe
    try:
        match = re.search(r"listening on [\d.]+:(\d+)", gateway.stderr.readline())
        assert match
        killed_at: list[int] = []

        def progress(p: Progress) -> None:
            if p.delivered >= 5 and not killed_at:  # part-way, with mail already through
                gateway.send_signal(signal.SIGKILL)
                killed_at.append(p.sent)

        settings = ProbeSettings(
            gateway=Endpoint("127.0.0.1", int(match.group(1))),
            sink=Endpoint("127.0.0.1", sink_port),
            burst=BurstSettings(count=40, notification_gap_s=0.03, step_timeout_s=2.0),
            patience=Patience(timeout_s=2.0),
        )
        with Ledger(tmp_path / "died.sqlite3") as ledger:
            outcome = await run_probe(ledger, settings, progress)
    finally:
        if gateway.poll() is None:
            gateway.kill()
        gateway.wait(timeout=10)
        gateway.stderr.close()
    verdict, burst = outcome.verdict, outcome.record.burst
    assert killed_at and killed_at[0] < 40
    assert verdict.pattern is Pattern.DEGRADED_AFTER_K, verdict.summary
    assert verdict.severity is Severity.CRITICAL and verdict.delivered >= 5
    # every notification has its outcome: sent, or left out by the circuit breaker with why
    assert all((n.submission is None) == bool(n.not_attempted) for n in burst)
    failed = [n.submission for n in burst if n.submission and not n.submission.accepted]
    assert failed and all(
        s.error_kind in (ErrorKind.CONNECTION_REFUSED, ErrorKind.RESET) for s in failed
    )
    assert verdict.not_attempted == sum(1 for n in burst if n.not_attempted)
    assert outcome.record.run.status == "done"
    assert integrity_ok(tmp_path / "died.sqlite3")


@pytest.mark.real
async def test_connection_reset_mid_data_is_a_reset_at_the_data_stage():
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 resetter ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                await reader.readline()  # the first line of the message, then pull the plug
                writer.transport.abort()
                return
            writer.write(b"250-resetter\r\n250 OK\r\n" if verb == b"EHLO" else b"250 OK\r\n")
            await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        sender = Sender(Endpoint("127.0.0.1", port), timeout=5, per_session=None, helo=None)
        token = TEST_KEY.token("abcdef0123", 1)
        big = f"Subject: {token}\r\n\r\n".encode() + b"line of text\r\n" * 20000
        result = await sender.submit("a@example.org", recipient_for(token, DOMAIN), big)
    finally:
        server.close()
        await server.wait_closed()
    assert (result.stage, result.error_kind) == ("data", ErrorKind.RESET), result.describe()
    assert not result.accepted


@pytest.mark.real
@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_gateway_that_takes_the_connection_and_hangs_up_is_no_connection_refusal(how):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if how == "reset":  # RST, no FIN
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        sender = Sender(Endpoint("127.0.0.1", port), timeout=5, per_session=None, helo=None)
        results = [await sender.submit("a@example.org", "b@example.org", b"x") for _ in range(3)]
    finally:
        server.close()
        await server.wait_closed()
    for result in results:
        assert (result.stage, result.error_kind) == ("connect", ErrorKind.RESET), result.describe()
        assert result.hung_up and not result.unreachable
        assert result.hung_up_at in (SmtpPhase.CONNECT, SmtpPhase.GREETING)


@pytest.mark.real
async def test_a_port_where_nothing_listens_is_still_a_refused_connection():
    port = unused_port()
    sender = Sender(Endpoint("127.0.0.1", port), timeout=5, per_session=None, helo=None)
    result = await sender.submit("a@example.org", "b@example.org", b"x")
    assert (result.stage, result.error_kind) == ("connect", ErrorKind.CONNECTION_REFUSED)
    assert result.unreachable and not result.hung_up


@pytest.mark.real
async def test_full_ledger_makes_the_sink_answer_451_and_every_250_is_stored(tmp_path):
    db = tmp_path / "full.sqlite3"
    run_id = "f011f011f0"
    with Ledger(with_test_key(db)) as ledger:
        ledger.create_run(Run(run_id, "gw:25", DOMAIN, count=2000, started_at=time.time()))
        pages = ledger._conn.execute("PRAGMA page_count").fetchone()[0]
        # "disk full" for SQLite (SQLITE_FULL): the file may not grow beyond two more pages.
        ledger._conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        writer = LedgerWriter(ledger)
        acked: list[int] = []
        refused: list[int] = []
        async with Sink(writer, host="127.0.0.1", port=0, domain=DOMAIN) as sink:
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port, timeout=5)
            await smtp.connect()
            for seq in range(1, 2001):  # bounded: the ledger fills long before
                token = TEST_KEY.token(run_id, seq)
                data = f"Subject: {token}\r\n\r\n{'x' * 200}\r\n".encode()
                try:
                    await smtp.sendmail("a@example.org", [recipient_for(token, DOMAIN)], data)
                    acked.append(seq)
                except aiosmtplib.SMTPResponseException as exc:
                    assert exc.code == 451, exc
                    refused.append(seq)
                    if len(refused) >= 3:
                        break
            assert (await smtp.noop())[0] == 250  # the session survives the refusals
            smtp.close()
        await writer.close()
    assert acked and len(refused) == 3
    with sqlite3.connect(db) as conn:
        stored = {s for (s,) in conn.execute("SELECT seq FROM deliveries")}
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert set(acked) == stored  # every 250 on disk, nothing refused half-written


@pytest.mark.real
@pytest.mark.parametrize("where", ["directory", "under_a_file", "read_only_fs"])
def test_unwritable_ledger_is_a_one_line_exit_3(tmp_path, where):
    if where == "directory":
        db = tmp_path / "ledger.sqlite3"
        db.mkdir()
    elif where == "under_a_file":
        (tmp_path / "afile").write_text("x")
        db = tmp_path / "afile" / "ledger.sqlite3"
    else:
        if not Path("/proc/self").exists():
            pytest.skip("needs Linux /proc, a filesystem that refuses new files even to root")
        db = Path("/proc/notifyprobe-ledger.sqlite3")
    for args in (
        [
            "burst",
            "--gateway",
            f"127.0.0.1:{unused_port()}",
            "--sink",
            f"127.0.0.1:{unused_port()}",
        ],
        ["sink", "--listen", "127.0.0.1:0"],
    ):
        result = run_cli(*args, "--db", str(db), timeout=30, env=ENV)
        assert result.returncode == 3, result.stderr
        assert "cannot open ledger" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.real
def test_sink_on_a_non_loopback_address_without_allow_remote_is_exit_3(tmp_path):
    for extra in ([], ["--allow-remote"]):
        result = run_cli(
            "sink",
            "--listen",
            "0.0.0.0:0",
            "--db",
            str(tmp_path / "l.db"),
            *extra,
            timeout=30,
            env=ENV,
        )
        assert result.returncode == 3 and "--allow-client" in result.stderr
        assert not (tmp_path / "l.db").exists()  # refused before anything was created
    result = run_cli(
        "burst",
        "--gateway",
        "127.0.0.1:1",
        "--sink",
        "0.0.0.0:2525",
        "--db",
        str(tmp_path / "l.db"),
        timeout=30,
        env=ENV,
    )
    assert result.returncode == 3 and "--allow-remote" in result.stderr


@pytest.mark.real
def test_max_rate_paces_the_burst_and_is_capped(tmp_path):
    result = run_cli(
        "burst",
        "--gateway",
        "127.0.0.1:1",
        "--max-rate",
        "5000",
        "--db",
        str(tmp_path / "l.db"),
        timeout=30,
        env=ENV,
    )
    assert result.returncode == 3 and "--max-rate" in result.stderr


@pytest.mark.real
async def test_rate_cap_spaces_submissions(ledger):
    from tests.conftest import probe_lab

    outcome = await probe_lab(ledger, "healthy", count=6, concurrency=3, max_rate=20.0)
    starts = sorted(submitted(n).started_at for n in outcome.record.burst)
    assert starts[-1] - starts[0] >= 5 / 20.0 * 0.9  # 6 notifications at ≤ 20/s, 3 connections
    assert outcome.verdict.pattern is Pattern.HEALTHY


def test_sender_refuses_a_recipient_outside_the_probe_domain():
    from probe.delivery.burst import ensure_probe_recipient
    from probe.errors import ProbeError

    ensure_probe_recipient("probe+np-0123456789-1@probe.invalid", "probe.invalid")
    for bad in ("victim@example.com", "x@probe.invalid.evil.example", "@probe.invalid", "x"):
        with pytest.raises(ProbeError, match="refusing to send"):
            ensure_probe_recipient(bad, "probe.invalid")


# -- clock jumps ---------------------------------------------------------------------------


def test_wall_clock_stepped_back_gives_zero_latency_not_negative_or_slow():
    run_id = "c10c0c10c0"
    ok = SmtpReply(250, "2.0.0 OK", "2.0.0")
    notes = [
        Notification(
            run_id,
            seq,
            TEST_KEY.token(run_id, seq),
            Submission(started_at=2000.0 + seq, finished_at=2000.1 + seq, stage="data", reply=ok),
            # the clock went back an hour between submission and arrival
            (Delivery(run_id, seq, received_at=2000.0 + seq - 3600, found_in="envelope"),),
        )
        for seq in range(0, 4)
    ]
    record = RunRecord(Run(run_id, "gw", DOMAIN, count=3, started_at=1999.0), tuple(notes))
    assert all(n.latency_s == 0.0 for n in record.notifications)
    assert classify(record).pattern is Pattern.HEALTHY


def test_a_clock_stepped_back_never_shortens_the_settle_window():
    tracker = _Tracker("c10c0c10c0", 2, None)
    ok = SmtpReply(250, "2.0.0 OK", "2.0.0")
    for seq in (1, 2):
        tracker.on_submission(seq, Submission(1000.0, 1000.1, "data", reply=ok))
    tracker.on_delivery(TokenRef("c10c0c10c0", 1), 400.0)  # the wall clock went back
    assert tracker.pending() == 1
    deadline = settle_deadline(tracker.pending(), tracker.last_delivery_at(), 1000.2, 15.0, 30.0)
    assert deadline == 1000.2 + 15.0  # silence counts from the end of the burst


def test_watch_config_with_a_non_loopback_sink_needs_its_gateways_listed():
    from probe.errors import UsageError
    from probe.monitor.config import parse

    base = '[[target]]\nname = "gw"\ngateway = "127.0.0.1:25"\n'
    with pytest.raises(UsageError, match="sink_allow_clients"):
        parse('sink = "0.0.0.0:2525"\n' + base)
    config = parse('sink = "0.0.0.0:2525"\nsink_allow_clients = ["10.0.0.0/8"]\n' + base)
    assert config.sink_access.permits("10.1.2.3") and not config.sink_access.permits("192.0.2.1")
    assert parse(base).sink_access.allowed_clients == ()
