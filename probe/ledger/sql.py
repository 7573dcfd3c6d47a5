"""The SQL behind each operation, and the rows turned back into records."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

from probe.correlation import TokenKey, TokenRef
from probe.records import (
    BOUNCE_ACTIONS,
    Bounce,
    BounceAction,
    ErrorKind,
    FoundIn,
    ProcessStart,
    ReceivedMessage,
    Run,
    RunOptions,
    RunStatus,
    SmtpPhase,
    SmtpReply,
    StartKind,
    Step,
    Submission,
)


def insert_run(run: Run, control: bool, key: TokenKey, conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO runs (run_id, started_at, gateway, sink, domain, count, status, options)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run.run_id,
            run.started_at,
            run.gateway,
            run.sink,
            run.domain,
            run.count,
            run.status,
            run.options.to_json(),
        ),
    )
    first = 0 if control else 1
    conn.executemany(
        "INSERT INTO notifications (run_id, seq, token) VALUES (?, ?, ?)",
        ((run.run_id, seq, key.token(run.run_id, seq)) for seq in range(first, run.count + 1)),
    )


def update_submission(run_id: str, seq: int, s: Submission, conn: sqlite3.Connection) -> None:
    conn.execute(
        "UPDATE notifications SET started_at = ?, finished_at = ?, stage = ?, code = ?,"
        " enhanced = ?, text = ?, error = ?, error_kind = ?, transcript = ?, session = ?,"
        " position = ?, stalled_at = ? WHERE run_id = ? AND seq = ?",
        (
            s.started_at,
            s.finished_at,
            s.stage,
            s.reply.code if s.reply else None,
            s.reply.enhanced if s.reply else None,
            s.reply.text if s.reply else None,
            s.error,
            s.error_kind.value if s.error_kind else None,
            json.dumps([_step_to_json(step) for step in s.steps]),
            s.session,
            s.position,
            s.stalled_at.value if s.stalled_at else None,
            run_id,
            seq,
        ),
    )


def update_not_attempted(run_id: str, seq: int, reason: str, conn: sqlite3.Connection) -> None:
    conn.execute(
        "UPDATE notifications SET not_attempted = ? WHERE run_id = ? AND seq = ?",
        (reason, run_id, seq),
    )


def insert_delivery(
    ref: TokenRef, found_in: FoundIn, f: ReceivedMessage, conn: sqlite3.Connection
) -> bool:
    """Record one copy; False (and a foreign row) when the token names no known notification."""
    cur = conn.execute(
        "INSERT INTO deliveries (run_id, seq, received_at, found_in, peer, mail_from, rcpts,"
        " message_id, size, helo) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
        " WHERE EXISTS (SELECT 1 FROM notifications WHERE run_id = ? AND seq = ?)",
        (
            ref.run_id,
            ref.seq,
            f.received_at,
            found_in,
            f.peer,
            f.mail_from,
            ",".join(f.rcpts),
            f.message_id,
            f.size,
            f.helo,
            ref.run_id,
            ref.seq,
        ),
    )
    if cur.rowcount == 1:
        return True
    insert_foreign(f"unknown token {ref}", f, None, conn)
    return False


def insert_foreign(
    reason: str, f: ReceivedMessage, run_id: str | None, conn: sqlite3.Connection
) -> None:
    conn.execute(
        "INSERT INTO foreign_messages (received_at, reason, run_id, peer, mail_from, rcpts,"
        " subject, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            f.received_at,
            reason,
            run_id,
            f.peer,
            f.mail_from,
            ",".join(f.rcpts),
            f.subject[:200],
            f.size,
        ),
    )


RETURNED_BYTES = 256 * 1024  # what is kept of one returned message: its report and headers


@dataclass(frozen=True)
class Returned:
    """A message that came back to the probe's envelope sender, and the bounces read from it."""

    message: ReceivedMessage
    content: bytes
    format: str
    run_id: str | None  # the run it names, when it names one
    bounces: tuple[Bounce, ...]
    unmatched: str = "bounce naming no known notification"  # kept as, when no bounce counts


def insert_returned(r: Returned, conn: sqlite3.Connection) -> list[bool]:
    """Keep the message (capped) and one row per bounce of a known notification; a bounce
    that names none is kept as a foreign message of its run, never judged by."""
    f = r.message
    returned_id = conn.execute(
        "INSERT INTO returned_messages (received_at, run_id, peer, mail_from, rcpts, format,"
        " content) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            f.received_at,
            r.run_id,
            f.peer,
            f.mail_from,
            ",".join(f.rcpts),
            r.format,
            r.content[:RETURNED_BYTES],
        ),
    ).lastrowid
    known = []
    for b in r.bounces:
        cur = conn.execute(
            "INSERT INTO bounces (run_id, seq, received_at, action, status, diagnostic,"
            " remote_mta, reporting_mta, recipient, named_by, confirmed, format, returned_id)"
            " SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
            " WHERE EXISTS (SELECT 1 FROM notifications WHERE run_id = ? AND seq = ?)",
            (
                b.run_id,
                b.seq,
                b.received_at,
                b.action,
                b.status,
                b.diagnostic,
                b.remote_mta,
                b.reporting_mta,
                b.recipient,
                b.named_by,
                int(b.confirmed),
                b.format,
                returned_id,
                b.run_id,
                b.seq,
            ),
        )
        known.append(cur.rowcount == 1)
    if not any(known):
        insert_foreign(r.unmatched, f, r.run_id, conn)
    return known


def bounce_from_row(row: sqlite3.Row) -> Bounce:
    return Bounce(
        run_id=row["run_id"],
        seq=row["seq"],
        received_at=row["received_at"],
        action=bounce_action(row["action"]),
        status=row["status"],
        diagnostic=row["diagnostic"],
        remote_mta=row["remote_mta"],
        reporting_mta=row["reporting_mta"],
        recipient=row["recipient"],
        named_by="token" if row["named_by"] == "token" else "verp",
        confirmed=bool(row["confirmed"]),
        format=row["format"],
    )


def bounce_action(text: str) -> BounceAction:
    return next((a for a in BOUNCE_ACTIONS if a == text), "failed")


def put_artifact(run_id: str, name: str, content: str, conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO run_artifacts (run_id, name, content) VALUES (?, ?, ?)",
        (run_id, name, content),
    )


def finish_run(
    run_id: str,
    status: RunStatus,
    finished_at: float,
    verdict: str | None,
    conn: sqlite3.Connection,
) -> None:
    conn.execute(
        "UPDATE runs SET status = ?, finished_at = ?, verdict = ? WHERE run_id = ?",
        (status, finished_at, verdict, run_id),
    )


def record_failure(run_id: str, failure: str, conn: sqlite3.Connection) -> None:
    conn.execute(
        "UPDATE runs SET failure = COALESCE(failure, ?) WHERE run_id = ?", (failure, run_id)
    )


def store_correction(run_id: str, verdict: str, at: float, conn: sqlite3.Connection) -> None:
    conn.execute(
        "UPDATE runs SET corrected_verdict = ?, corrected_at = ? WHERE run_id = ?",
        (verdict, at, run_id),
    )


def delete_runs_before(cutoff: float, conn: sqlite3.Connection) -> int:
    old = "SELECT run_id FROM runs WHERE started_at < ? AND verdict IS NOT NULL"
    conn.execute(f"DELETE FROM deliveries WHERE run_id IN ({old})", (cutoff,))
    conn.execute(f"DELETE FROM bounces WHERE run_id IN ({old})", (cutoff,))
    conn.execute("DELETE FROM returned_messages WHERE received_at < ?", (cutoff,))
    conn.execute(f"DELETE FROM notifications WHERE run_id IN ({old})", (cutoff,))
    conn.execute(f"DELETE FROM run_artifacts WHERE run_id IN ({old})", (cutoff,))
    conn.execute(f"DELETE FROM process_starts WHERE run_id IN ({old})", (cutoff,))
    conn.execute("DELETE FROM foreign_messages WHERE received_at < ?", (cutoff,))
    return conn.execute(
        "DELETE FROM runs WHERE started_at < ? AND verdict IS NOT NULL", (cutoff,)
    ).rowcount


def _step_to_json(step: Step) -> dict[str, Any]:
    data: dict[str, Any] = {"at": step.at, "command": step.command}
    if step.reply is not None:
        reply = asdict(step.reply)
        raw = reply.pop("raw")
        data["reply"] = reply
        if raw:  # beside the reply, not in it: older versions rebuild the reply from its keys
            data["raw"] = raw
    if step.error is not None:
        data["error"] = step.error
    return data


def _step_from_json(data: dict[str, Any]) -> Step:
    reply = data.get("reply")
    return Step(
        at=data["at"],
        command=data["command"],
        reply=SmtpReply(**reply, raw=str(data.get("raw", ""))) if reply else None,
        error=data.get("error"),
    )


def submission_from_row(row: sqlite3.Row) -> Submission | None:
    if row["started_at"] is None:
        return None
    steps = tuple(_step_from_json(s) for s in json.loads(row["transcript"] or "[]"))
    reply = None
    if row["code"] is not None:
        reply = SmtpReply(code=row["code"], text=row["text"] or "", enhanced=row["enhanced"])
        # its raw bytes are kept with the same reply in the transcript
        same = [
            s.reply
            for s in steps
            if s.reply is not None and s.reply.code == reply.code and s.reply.text == reply.text
        ]
        if same:
            reply = same[-1]
    return Submission(
        started_at=row["started_at"],
        finished_at=row["finished_at"] if row["finished_at"] is not None else row["started_at"],
        stage=row["stage"] or "connect",
        reply=reply,
        error=row["error"],
        error_kind=ErrorKind(row["error_kind"]) if row["error_kind"] else None,
        steps=steps,
        session=row["session"],
        position=row["position"],
        stalled_at=SmtpPhase(row["stalled_at"]) if row["stalled_at"] else None,
    )


def run_from_row(row: sqlite3.Row) -> Run:
    return Run(
        run_id=row["run_id"],
        gateway=row["gateway"],
        domain=row["domain"],
        count=row["count"],
        started_at=row["started_at"],
        sink=row["sink"],
        finished_at=row["finished_at"],
        status=row["status"],
        options=RunOptions.from_json(row["options"]),
        failure=str(dict(row).get("failure") or ""),  # absent from a read-only older ledger
    )


def insert_starts(run_id: str, starts: tuple[ProcessStart, ...], conn: sqlite3.Connection) -> None:
    conn.executemany(
        "INSERT INTO process_starts (run_id, kind, name, pid, started_at) VALUES (?,?,?,?,?)",
        [(run_id, s.kind, s.name, s.pid, s.started_at) for s in starts],
    )


def start_kind(text: str) -> StartKind:
    return "service" if text == "service" else "process"
