"""A write that fails costs that write only: the writer's transaction state recovers from any
exception, the rest of the group is committed, and the next group starts cleanly."""

from __future__ import annotations

import asyncio
import sqlite3
from functools import partial
from pathlib import Path

import pytest

from probe.errors import ProbeError
from probe.ledger import Ledger, LedgerWriter
from probe.records import Run, SmtpReply, Submission
from tests.conftest import with_test_key

RUN = "abcdef0123"


def _run(ledger: Ledger) -> None:
    ledger.create_run(Run(RUN, "gw:25", "probe.invalid", 3, 1000.0))


def _insert(value: object, conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO run_artifacts (run_id, name, content) VALUES (?, ?, ?)",
        (RUN, repr(value)[:20], value),
    )


def test_an_op_sqlite_cannot_encode_fails_alone_and_the_next_group_starts(tmp_path: Path):
    with Ledger(with_test_key(tmp_path / "l.db")) as ledger:
        _run(ledger)
        surrogate = "f\udcfcr"  # what surrogateescape makes of a cp1252 byte
        results = ledger.apply(
            [partial(_insert, "before"), partial(_insert, surrogate), partial(_insert, "after!")]
        )
        assert isinstance(results[1], UnicodeEncodeError)
        assert set(ledger.artifacts(RUN).values()) == {"before", "after!"}
        ledger.put_artifact(RUN, "next", "a new transaction")  # no "within a transaction"
        assert ledger.artifacts(RUN)["next"] == "a new transaction"


def test_a_group_that_fails_as_a_whole_leaves_no_transaction_open(tmp_path: Path):
    with Ledger(with_test_key(tmp_path / "l.db")) as ledger:
        _run(ledger)

        def interrupted(conn: sqlite3.Connection) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            ledger.apply([partial(_insert, "lost"), interrupted])
        assert not ledger._conn.in_transaction
        ledger.put_artifact(RUN, "next", "written")
        assert ledger.artifacts(RUN) == {"next": "written"}


async def test_a_failed_submission_write_is_kept_as_the_runs_failure(tmp_path: Path):
    with Ledger(with_test_key(tmp_path / "l.db")) as ledger:
        _run(ledger)
        writer = LedgerWriter(ledger)
        good = Submission(1000.0, 1000.1, "data", reply=SmtpReply(250, "ok"))
        # a reply built without parse(), as before: its text cannot be stored
        bad = Submission(1000.0, 1000.1, "data", reply=SmtpReply(250, "f\udcfcr"))
        writer.record_submission(RUN, 1, good)
        writer.record_submission(RUN, 2, bad)
        await writer.drain()
        await asyncio.sleep(0)
        assert "notification 2" in writer.failures[RUN]
        assert ledger.load(RUN).notifications[1].submission == good


def test_a_value_sqlite_cannot_store_is_one_probe_error(tmp_path: Path):
    with Ledger(with_test_key(tmp_path / "l.db")) as ledger:
        with pytest.raises(ProbeError):
            ledger.write(partial(_insert, object()))
