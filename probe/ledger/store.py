"""`Ledger`: one SQLite file, every read and every write of the probe's records."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import structlog

from probe.correlation import TokenKey, TokenRef
from probe.errors import ProbeError
from probe.ledger import schema, sql
from probe.ledger.key import key_path, load_key
from probe.ledger.sql import Returned
from probe.records import (
    Bounce,
    BounceAction,
    Delivery,
    DeliveryHistory,
    FoundIn,
    Notification,
    ProcessStart,
    ReceivedMessage,
    Run,
    RunGlance,
    RunRecord,
    RunStatus,
    Submission,
)

log = structlog.get_logger("notifyprobe.ledger")


Op = Callable[[sqlite3.Connection], Any]


T = TypeVar("T")


class Ledger:
    """One SQLite file. Safe to share between threads: every use of the connection is locked."""

    def __init__(self, path: Path | str, *, read_only_ok: bool = False):
        """Open (and create or upgrade) the ledger. With `read_only_ok`, a ledger on a read-only
        filesystem or without write permission is opened read-only instead: enough for the
        commands that only read runs (`verdict`, `evidence`); any write then fails in one line."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self.commits = 0  # transactions committed: shows that group commit really groups
        self.read_only = False
        try:
            self._conn = schema.open_writable(path)
        except ProbeError:
            if not (read_only_ok and self.path.is_file()):
                raise
            self._conn = schema.open_read_only(self.path)
            self.read_only = True
        self._token_key: TokenKey | None = None

    @property
    def token_key(self) -> TokenKey:
        """The secret that signs this ledger's tokens, in `<ledger>.key` (0600), made on first
        use. A sink on another host that records into its own ledger needs a copy of it."""
        if self._token_key is None:
            self._token_key = (
                TokenKey.generate()
                if str(self.path) == ":memory:"
                else load_key(key_path(self.path))
            )
        return self._token_key

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------

    def apply(self, ops: list[Op]) -> list[Any]:
        """Run `ops` in one transaction. One op failing does not undo the others.

        Returns each op's result, or the exception it raised, whatever it was (a value SQLite
        cannot store raises UnicodeEncodeError or OverflowError, not sqlite3.Error). Raises only
        when the transaction itself fails, in which case nothing of the group was written, and
        the connection is always left outside any transaction: a failed group never makes the
        next one fail ("cannot start a transaction within a transaction").
        """
        if self.read_only:
            raise ProbeError(f"ledger {self.path} is read-only: nothing can be recorded in it")
        results: list[Any] = []
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                for op in ops:
                    conn.execute("SAVEPOINT op")
                    try:
                        results.append(op(conn))
                    except Exception as exc:  # this op only: the group goes on
                        conn.execute("ROLLBACK TO op")
                        results.append(exc)
                    conn.execute("RELEASE op")
                conn.execute("COMMIT")
                self.commits += 1
            except BaseException as exc:
                self._abandon()
                if not isinstance(exc, Exception):
                    raise
                raise ProbeError(schema.failure_line("write", self.path, exc)) from exc
        return results

    def _abandon(self) -> None:
        """Roll back whatever transaction a failed group left open, whatever failed."""
        with contextlib.suppress(sqlite3.Error):
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")

    def write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        result = self.apply([op])[0]
        if isinstance(result, Exception):
            raise ProbeError(schema.failure_line("write", self.path, result))
        return cast(T, result)

    def create_run(self, run: Run, *, control: bool = True) -> None:
        self.write(partial(sql.insert_run, run, control, self.token_key))

    def record_submission(self, run_id: str, seq: int, submission: Submission) -> None:
        self.write(partial(sql.update_submission, run_id, seq, submission))

    def record_not_attempted(self, run_id: str, seq: int, reason: str) -> None:
        self.write(partial(sql.update_not_attempted, run_id, seq, reason))

    def record_delivery(self, ref: TokenRef, found_in: FoundIn, message: ReceivedMessage) -> bool:
        return self.write(partial(sql.insert_delivery, ref, found_in, message))

    def record_returned(self, returned: Returned) -> list[bool]:
        """Keep a returned notification and its bounces; which bounces named a known one."""
        return self.write(partial(sql.insert_returned, returned))

    def finish_run(
        self, run_id: str, status: RunStatus, finished_at: float, verdict: str | None
    ) -> None:
        self.write(partial(sql.finish_run, run_id, status, finished_at, verdict))

    def record_failure(self, run_id: str, failure: str) -> None:
        """Keep why the probe failed to record part of a run (a ledger write that failed): the
        run is then judged an internal failure, never a run cut off."""
        self.write(partial(sql.record_failure, run_id, failure))

    def store_correction(self, run_id: str, verdict: str, at: float) -> None:
        """Keep a corrected verdict beside the original one, with the time it was found."""
        self.write(partial(sql.store_correction, run_id, verdict, at))

    def put_artifact(self, run_id: str, name: str, content: str) -> None:
        """Keep a named JSON document with a run (inventory, diagnosis, log), for `evidence`."""
        self.write(partial(sql.put_artifact, run_id, name, content))

    def put_artifacts(self, run_id: str, documents: Mapping[str, str]) -> None:
        """Keep several documents with a run in one commit (one fsync, not one each)."""
        ops: list[Op] = [
            partial(sql.put_artifact, run_id, name, text) for name, text in documents.items()
        ]
        for result in self.apply(ops):
            if isinstance(result, Exception):
                raise ProbeError(schema.failure_line("write", self.path, result))

    def delete_runs_before(self, cutoff: float) -> int:
        """Retention: drop finished runs started before `cutoff`, with all their rows."""
        return self.write(partial(sql.delete_runs_before, cutoff))

    # -- reading -------------------------------------------------------------------------

    def record_starts(self, run_id: str, starts: Sequence[ProcessStart]) -> None:
        """The gateway's process and service start times seen at a run."""
        self.write(partial(sql.insert_starts, run_id, tuple(starts)))

    def process_starts(self, gateway: str, limit: int) -> dict[str, list[ProcessStart]]:
        """The process starts of the `limit` latest runs against `gateway` that kept some, by
        run."""
        rows = self._query(
            "SELECT p.run_id, p.kind, p.name, p.pid, p.started_at FROM process_starts p"
            " JOIN runs r ON r.run_id = p.run_id WHERE r.gateway = ?"
            " AND p.run_id IN (SELECT DISTINCT q.run_id FROM process_starts q"
            "  JOIN runs s ON s.run_id = q.run_id WHERE s.gateway = ?"
            "  ORDER BY s.started_at DESC LIMIT ?)",
            (gateway, gateway, limit),
        )
        starts: dict[str, list[ProcessStart]] = {}
        for row in rows:
            kind = sql.start_kind(row["kind"])
            start = ProcessStart(kind, row["name"], row["pid"], row["started_at"])
            starts.setdefault(row["run_id"], []).append(start)
        return starts

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                cur = self._conn.execute(sql, tuple(params))
                cur.row_factory = sqlite3.Row
                return cur.fetchall()
            except sqlite3.Error as exc:
                raise ProbeError(f"cannot read ledger {self.path}: {exc}") from exc

    def run_ids(self, limit: int = 20) -> list[str]:
        rows = self._query("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT ?", (limit,))
        return [r["run_id"] for r in rows]

    def unjudged_runs(self) -> list[str]:
        """Runs with no stored verdict, oldest first: killed mid-burst, or stopped before judged."""
        rows = self._query("SELECT run_id FROM runs WHERE verdict IS NULL ORDER BY started_at")
        return [r["run_id"] for r in rows]

    def judged_runs(self, target: str, limit: int) -> list[str]:
        """The `limit` most recent judged runs of a `watch` target (its name is kept in the
        options), newest first."""
        rows = self._query(
            "SELECT run_id FROM runs WHERE verdict IS NOT NULL"
            " AND json_extract(options, '$.target') = ? ORDER BY started_at DESC LIMIT ?",
            (target, limit),
        )
        return [r["run_id"] for r in rows]

    def glances_before(self, run: Run, limit: int, offset: int = 0) -> list[RunGlance]:
        """The runs before `run` that probed the same thing (the same watch target, or for a
        run of no target the same gateway and domain by runs of no target either), newest
        first, `limit` of them after skipping `offset`: what the outage story walks back."""
        target = run.options.target
        rows = self._query(
            "SELECT r.run_id, r.started_at, r.finished_at,"
            " COALESCE(r.corrected_verdict, r.verdict) AS verdict,"
            " (SELECT COUNT(DISTINCT d.seq) FROM deliveries d"
            "  WHERE d.run_id = r.run_id AND d.seq > 0) AS delivered,"
            " (SELECT json_extract(n.transcript, '$[0].reply.text') FROM notifications n"
            "  WHERE n.run_id = r.run_id AND n.seq > 0 AND n.started_at IS NOT NULL"
            "  AND json_extract(n.transcript, '$[0].command') LIKE 'connect%'"
            "  ORDER BY n.started_at LIMIT 1) AS greeting"
            " FROM runs r WHERE r.gateway = ? AND r.domain = ? AND r.started_at < ?"
            " AND r.run_id != ? AND COALESCE(json_extract(r.options, '$.target'), '') = ?"
            " ORDER BY r.started_at DESC LIMIT ? OFFSET ?",
            (
                run.gateway,
                run.domain,
                run.started_at,
                run.run_id,
                "" if target is None else str(target),
                limit,
                offset,
            ),
        )
        ids = [row["run_id"] for row in rows]
        starts = self.starts_of(ids)
        return [
            RunGlance(
                run_id=row["run_id"],
                started_at=row["started_at"],
                finished_at=row["finished_at"],
                verdict=json.loads(row["verdict"]) if row["verdict"] else None,
                delivered=int(row["delivered"]),
                greeting=row["greeting"],
                starts=tuple(starts.get(row["run_id"], ())),
            )
            for row in rows
        ]

    def starts_of(self, run_ids: Sequence[str]) -> dict[str, list[ProcessStart]]:
        """The gateway process starts kept with each of `run_ids`, by run."""
        found: dict[str, list[ProcessStart]] = {}
        if not run_ids:
            return found
        marks = ", ".join("?" for _ in run_ids)
        rows = self._query(
            "SELECT run_id, kind, name, pid, started_at FROM process_starts"
            f" WHERE run_id IN ({marks}) ORDER BY name, pid",
            run_ids,
        )
        for row in rows:
            start = ProcessStart(
                sql.start_kind(row["kind"]), row["name"], row["pid"], row["started_at"]
            )
            found.setdefault(row["run_id"], []).append(start)
        return found

    def recent_runs(
        self, *, target: str | None = None, gateway: str | None = None, limit: int = 20
    ) -> list[str]:
        """The `limit` most recent runs, newest first; of one watch target (its name is kept in
        the options) or one gateway when given."""
        rows = self._query(
            "SELECT run_id FROM runs WHERE (? IS NULL OR json_extract(options, '$.target') = ?)"
            " AND (? IS NULL OR gateway = ?) ORDER BY started_at DESC LIMIT ?",
            (target, target, gateway, gateway, limit),
        )
        return [r["run_id"] for r in rows]

    def runs_with_prefix(self, prefix: str, limit: int = 10) -> list[str]:
        """Run ids that start with `prefix` (a short run id, as git takes a short hash)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._query(
            "SELECT run_id FROM runs WHERE run_id LIKE ? ESCAPE '\\' ORDER BY started_at DESC"
            " LIMIT ?",
            (escaped + "%", limit),
        )
        return [r["run_id"] for r in rows]

    def delivery_count(self, run_id: str) -> int:
        rows = self._query("SELECT COUNT(*) AS n FROM deliveries WHERE run_id = ?", (run_id,))
        return int(rows[0]["n"])

    def delivered_seqs(self, run_id: str) -> dict[int, float]:
        """First arrival time of each delivered notification of a run."""
        rows = self._query(
            "SELECT seq, MIN(received_at) AS t FROM deliveries WHERE run_id = ? GROUP BY seq",
            (run_id,),
        )
        return {r["seq"]: r["t"] for r in rows}

    def bounced_seqs(self, run_id: str) -> dict[int, tuple[float, BounceAction]]:
        """The latest report about each notification of a run that one came back about: when,
        and what it said (a separate sink records them; the waiting run polls)."""
        rows = self._by_run("bounces", run_id, order="id")
        return {r["seq"]: (r["received_at"], sql.bounce_action(r["action"])) for r in rows}

    def _by_run(self, table: str, run_id: str, order: str = "rowid") -> list[sqlite3.Row]:
        """A table's rows about one run; none from a read-only ledger written before the table
        existed (a writable one gains it when opened)."""
        if self.read_only and not self._query(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ):
            return []
        return self._query(f"SELECT * FROM {table} WHERE run_id = ? ORDER BY {order}", (run_id,))

    def delivery_history(self, gateway: str, limit: int) -> DeliveryHistory:
        """The latencies and gaps of the gateway's `limit` latest fully delivered runs.

        Fully delivered: finished, and every burst notification submitted and recorded by the
        sink, whenever it arrived (mail that came after the verdict counts: it is the
        gateway's real pace).
        """
        rows = self._query(
            "WITH recent AS (SELECT r.run_id FROM runs r WHERE r.gateway = ? AND r.status = 'done'"
            " AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.run_id = r.run_id"
            " AND n.seq > 0 AND (n.started_at IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries d"
            " WHERE d.run_id = n.run_id AND d.seq = n.seq)))"
            " ORDER BY r.started_at DESC LIMIT ?)"
            " SELECT n.run_id, n.started_at AS submitted, MIN(d.received_at) AS arrived"
            " FROM notifications n JOIN deliveries d ON d.run_id = n.run_id AND d.seq = n.seq"
            " WHERE n.seq > 0 AND n.run_id IN (SELECT run_id FROM recent)"
            " GROUP BY n.run_id, n.seq ORDER BY n.run_id, arrived",
            (gateway, limit),
        )
        latency = gap = 0.0
        previous: tuple[str, float] | None = None
        for row in rows:
            latency = max(latency, row["arrived"] - row["submitted"])
            if previous is not None and previous[0] == row["run_id"]:
                gap = max(gap, row["arrived"] - previous[1])
            previous = (row["run_id"], row["arrived"])
        runs = len({row["run_id"] for row in rows})
        return DeliveryHistory(runs=runs, max_latency_s=latency, max_gap_s=gap)

    def load(self, run_id: str) -> RunRecord:
        rows = self._query("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            raise ProbeError(f"no run {run_id!r} in ledger {self.path}")
        run = sql.run_from_row(rows[0])
        deliveries: dict[int, list[Delivery]] = {}
        for row in self._query(
            "SELECT * FROM deliveries WHERE run_id = ? ORDER BY received_at, id", (run_id,)
        ):
            deliveries.setdefault(row["seq"], []).append(
                Delivery(
                    run_id=run_id,
                    seq=row["seq"],
                    received_at=row["received_at"],
                    found_in=row["found_in"],
                    peer=row["peer"],
                    message_id=row["message_id"],
                    size=row["size"],
                )
            )
        bounces: dict[int, list[Bounce]] = {}
        for row in self._by_run("bounces", run_id, order="id"):
            bounces.setdefault(row["seq"], []).append(sql.bounce_from_row(row))
        notifications = tuple(
            Notification(
                run_id=run_id,
                seq=row["seq"],
                token=row["token"],
                submission=sql.submission_from_row(row),
                deliveries=tuple(deliveries.get(row["seq"], ())),
                not_attempted=row["not_attempted"],
                bounces=tuple(bounces.get(row["seq"], ())),
            )
            for row in self._query(
                "SELECT * FROM notifications WHERE run_id = ? ORDER BY seq", (run_id,)
            )
        )
        unmatched = self._query(
            "SELECT COUNT(*) AS n FROM foreign_messages WHERE run_id = ? AND reason LIKE 'bounce%'",
            (run_id,),
        )[0]["n"]
        return RunRecord(run=run, notifications=notifications, unmatched_bounces=int(unmatched))

    def artifacts(self, run_id: str) -> dict[str, str]:
        """The named documents kept with a run, by name."""
        rows = self._query(
            "SELECT name, content FROM run_artifacts WHERE run_id = ? ORDER BY name", (run_id,)
        )
        return {r["name"]: r["content"] for r in rows}

    def rows(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        """Every ledger row about one run, table by table, as stored (for the evidence bundle).

        Foreign messages count when they name the run (bounces) or arrived while it ran.
        """
        runs = self._query("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        if not runs:
            raise ProbeError(f"no run {run_id!r} in ledger {self.path}")
        started, finished = runs[0]["started_at"], runs[0]["finished_at"]
        tables = {r["name"] for r in self._query("SELECT name FROM sqlite_master")}
        by_run = "SELECT * FROM {} WHERE run_id = ? ORDER BY rowid"
        out = {
            "runs": runs,
            "notifications": self._query(by_run.format("notifications"), (run_id,)),
            "deliveries": self._query(by_run.format("deliveries"), (run_id,)),
            "bounces": self._by_run("bounces", run_id),
            "foreign_messages": self._query(
                "SELECT * FROM foreign_messages WHERE run_id = ? OR (run_id IS NULL AND"
                " received_at BETWEEN ? AND ?) ORDER BY id",
                (run_id, started, finished if finished is not None else started + 86400),
            ),
        }
        if "process_starts" in tables:
            out["process_starts"] = self._query(by_run.format("process_starts"), (run_id,))
        return {name: [dict(row) for row in rows] for name, rows in out.items()}

    def returned_messages(self, run_id: str) -> list[tuple[int, bytes]]:
        """The messages that came back about a run (bounces), as received (capped), by id."""
        rows = self._by_run("returned_messages", run_id, order="id")
        return [(int(r["id"]), bytes(r["content"])) for r in rows]

    def stored_verdict(self, run_id: str) -> dict[str, Any] | None:
        """The verdict given when the run ended (or when it was recovered), never corrected."""
        return self._verdict_column(run_id, "verdict")

    def corrected_verdict(self, run_id: str) -> dict[str, Any] | None:
        """The latest correction of the run's verdict by mail that arrived after it, if any."""
        return self._verdict_column(run_id, "corrected_verdict")

    def corrected_at(self, run_id: str) -> float | None:
        """When the latest correction of the run's verdict was stored, if any."""
        rows = self._query("SELECT corrected_at FROM runs WHERE run_id = ?", (run_id,))
        return float(rows[0]["corrected_at"]) if rows and rows[0]["corrected_at"] else None

    def _verdict_column(self, run_id: str, column: str) -> dict[str, Any] | None:
        rows = self._query(f"SELECT {column} AS v FROM runs WHERE run_id = ?", (run_id,))
        if not rows or rows[0]["v"] is None:
            return None
        verdict: dict[str, Any] = json.loads(rows[0]["v"])
        return verdict
