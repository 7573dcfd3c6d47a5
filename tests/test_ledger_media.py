"""A real full disk, or a read-only one, under the ledger: small tmpfs mounts, for real.

The sink must answer 4xx (never 250 for a message it could not commit), stay up, and accept
mail again once space returns. Needs root to mount; CI runs as root and fails rather than skips.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest

from probe.correlation import recipient_for
from probe.delivery.sink import Sink
from probe.errors import ProbeError
from probe.ledger import Ledger, LedgerWriter
from probe.records import Run
from tests.cli import run_cli
from tests.conftest import TEST_KEY, with_test_key

pytestmark = pytest.mark.real

DOMAIN = "probe.invalid"
RUN = "d15cf011d0"


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if mounted.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs in CI: {mounted.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


def fill(disk: Path) -> Path:
    """Take every free byte of the filesystem with one file (bounded by the tmpfs size)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle, contextlib.suppress(OSError):
        for _ in range(64 * 1024):  # at most 64 MiB, far above the tmpfs size
            handle.write(b"\0" * 1024)
    return filler


async def test_a_full_disk_makes_the_sink_answer_4xx_and_it_resumes_when_space_returns(
    tmp_path: Path,
) -> None:
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        db = with_test_key(disk / "ledger.sqlite3")
        with Ledger(db) as ledger:
            ledger.create_run(Run(RUN, "gw:25", DOMAIN, count=400, started_at=time.time()))
            writer = LedgerWriter(ledger)
            acked: list[int] = []
            refused: list[int] = []
            async with Sink(writer, host="127.0.0.1", port=0, domain=DOMAIN) as sink:
                smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port, timeout=10)
                await smtp.connect()

                async def send(seq: int) -> int:
                    token = TEST_KEY.token(RUN, seq)
                    data = f"Subject: {token}\r\n\r\n{'x' * 200}\r\n".encode()
                    try:
                        await smtp.sendmail("a@example.org", [recipient_for(token, DOMAIN)], data)
                    except aiosmtplib.SMTPResponseException as exc:
                        return exc.code
                    return 250

                filler = fill(disk)
                for seq in range(1, 201):  # bounded: the disk is full from the start
                    code = await send(seq)
                    (acked if code == 250 else refused).append(seq)
                    assert code in (250, 451), code
                    if len(refused) >= 3:
                        break
                assert len(refused) == 3
                filler.unlink()
                after = [await send(seq) for seq in range(300, 305)]
                assert after == [250] * 5, after  # space is back: the sink records again
                smtp.close()
            await writer.close()
        with sqlite3.connect(db) as conn:
            stored = {s for (s,) in conn.execute("SELECT seq FROM deliveries")}
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert stored == set(acked) | set(range(300, 305))


def test_a_burst_onto_a_full_ledger_disk_says_ledger_full_in_one_line(tmp_path: Path) -> None:
    import socket

    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        db = disk / "ledger.sqlite3"
        with Ledger(db) as ledger:
            ledger.token_key  # noqa: B018  (made now: a full disk could not take it later)
        fill(disk)
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        proc = run_cli(
            "burst",
            "--gateway",
            f"127.0.0.1:{port}",
            "--sink",
            "127.0.0.1:0",
            "--db",
            str(db),
            "--count",
            "2",
            "--timeout",
            "1",
            timeout=60,
        )
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "ledger full" in proc.stderr, proc.stderr


async def test_verdict_and_evidence_read_a_ledger_on_a_read_only_filesystem(tmp_path: Path) -> None:

    from tests.conftest import probe_lab

    with small_tmpfs(tmp_path / "disk", "4m") as disk:
        db = disk / "ledger.sqlite3"
        with Ledger(db) as ledger:
            outcome = await probe_lab(ledger, "first-only", count=3)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True, timeout=30)
        verdict = run_cli("verdict", "--last", "--db", str(db), "--json", "-", timeout=60)
        bundle = run_cli(
            "evidence", "--last", "--db", str(db), "--out", str(tmp_path / "case.zip"), timeout=60
        )
        with Ledger(db, read_only_ok=True) as ledger:
            assert ledger.read_only
            with pytest.raises(ProbeError, match="read-only"):
                ledger.create_run(Run("0123456789", "gw:25", DOMAIN, 1, 1.0))
    assert verdict.returncode == 2, verdict.stderr  # first_only is critical, and it is read
    assert outcome.record.run.run_id in verdict.stdout
    assert bundle.returncode == 0, bundle.stderr
    assert (tmp_path / "case.zip").stat().st_size > 0
