"""Each notification's SMTP session and place in it, kept in the ledger; older ledgers gain the
columns when opened and their runs are judged as before."""

from __future__ import annotations

import sqlite3

from probe.ledger import SCHEMA, Ledger
from probe.records import Run, SmtpReply, Submission
from probe.verdict import Pattern, judge_recorded
from tests.known import submitted

RUN = "0123456789"
OK = SmtpReply(250, "2.0.0 Queued", "2.0.0")


def test_a_ledger_written_before_sessions_were_kept_opens_and_is_judged_as_before(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:  # the schema as notifyprobe wrote it before
        conn.executescript(SCHEMA)
        conn.execute(
            "INSERT INTO runs (run_id, started_at, gateway, domain, count, status)"
            " VALUES (?, 1000.0, 'gw:25', 'probe.invalid', 2, 'done')",
            (RUN,),
        )
        conn.executemany(
            "INSERT INTO notifications (run_id, seq, token, started_at, finished_at, stage, code,"
            " enhanced, text) VALUES (?, ?, ?, 1000.0, 1000.1, 'data', 250, '2.0.0', 'Queued')",
            [(RUN, seq, f"np-{RUN}-{seq}") for seq in (1, 2)],
        )
        conn.execute("PRAGMA user_version=1")
    conn.close()
    with Ledger(path) as ledger:
        record = ledger.load(RUN)
        assert [submitted(n).session for n in record.burst] == [None, None]
        assert judge_recorded(record).pattern is Pattern.NONE_DELIVERED
        submission = Submission(1001.0, 1001.1, "data", reply=OK, session=3, position=2)
        ledger.record_submission(RUN, 2, submission)
        assert ledger.load(RUN).burst[1].submission == submission


def test_session_and_position_round_trip_through_the_ledger(tmp_path):
    with Ledger(tmp_path / "new.sqlite3") as ledger:
        ledger.create_run(Run(RUN, "gw:25", "probe.invalid", count=1, started_at=1000.0))
        submission = Submission(1000.0, 1000.1, "data", reply=OK, session=1, position=1)
        ledger.record_submission(RUN, 1, submission)
        (stored,) = ledger.load(RUN).burst
    assert (submitted(stored).session, submitted(stored).position) == (1, 1)
