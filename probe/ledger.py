"""The ledger: runs, notifications and deliveries in SQLite.

Everything the probe learns is written here first, so a run that was killed can still be judged,
a separate sink process and a burst can share one ledger file, and history builds up.
Writes from many coroutines are grouped into one transaction (one fsync) by `LedgerWriter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import platformdirs
import structlog

from probe.correlation import TokenKey, TokenRef
from probe.errors import ProbeError
from probe.host import read_host_file
from probe.records import (
    BOUNCE_ACTIONS,
    Bounce,
    BounceAction,
    Delivery,
    DeliveryHistory,
    ErrorKind,
    FoundIn,
    Notification,
    ReceivedMessage,
    Run,
    RunRecord,
    RunStatus,
    SmtpPhase,
    SmtpReply,
    Step,
    Submission,
)

log = structlog.get_logger("notifyprobe.ledger")
Op = Callable[[sqlite3.Connection], Any]

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    started_at  REAL NOT NULL,
    finished_at REAL,
    gateway     TEXT NOT NULL,
    sink        TEXT NOT NULL DEFAULT '',
    domain      TEXT NOT NULL,
    count       INTEGER NOT NULL,
    status      TEXT NOT NULL DEFAULT 'running',
    options     TEXT NOT NULL DEFAULT '{}',
    verdict     TEXT
);
CREATE TABLE IF NOT EXISTS notifications (
    run_id      TEXT NOT NULL REFERENCES runs(run_id),
    seq         INTEGER NOT NULL,
    token       TEXT NOT NULL,
    started_at  REAL,
    finished_at REAL,
    stage       TEXT,
    code        INTEGER,
    enhanced    TEXT,
    text        TEXT,
    error       TEXT,
    error_kind  TEXT,
    transcript  TEXT,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS deliveries (
    id          INTEGER PRIMARY KEY,
    run_id      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    received_at REAL NOT NULL,
    found_in    TEXT NOT NULL,
    peer        TEXT NOT NULL DEFAULT '',
    mail_from   TEXT NOT NULL DEFAULT '',
    rcpts       TEXT NOT NULL DEFAULT '',
    message_id  TEXT NOT NULL DEFAULT '',
    size        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS deliveries_by_run ON deliveries (run_id, seq);
CREATE INDEX IF NOT EXISTS runs_by_gateway ON runs (gateway, started_at);
CREATE TABLE IF NOT EXISTS process_starts (
    run_id      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS run_artifacts (
    run_id      TEXT NOT NULL,
    name        TEXT NOT NULL,
    content     TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS returned_messages (
    id          INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    run_id      TEXT,
    peer        TEXT NOT NULL DEFAULT '',
    mail_from   TEXT NOT NULL DEFAULT '',
    rcpts       TEXT NOT NULL DEFAULT '',
    format      TEXT NOT NULL DEFAULT '',
    content     BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS bounces (
    id            INTEGER PRIMARY KEY,
    run_id        TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    received_at   REAL NOT NULL,
    action        TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT '',
    diagnostic    TEXT NOT NULL DEFAULT '',
    remote_mta    TEXT NOT NULL DEFAULT '',
    reporting_mta TEXT NOT NULL DEFAULT '',
    recipient     TEXT NOT NULL DEFAULT '',
    named_by      TEXT NOT NULL,
    confirmed     INTEGER NOT NULL DEFAULT 0,
    format        TEXT NOT NULL DEFAULT '',
    returned_id   INTEGER REFERENCES returned_messages(id)
);
CREATE INDEX IF NOT EXISTS bounces_by_run ON bounces (run_id, seq);
CREATE TABLE IF NOT EXISTS foreign_messages (
    id          INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    reason      TEXT NOT NULL,
    run_id      TEXT,
    peer        TEXT NOT NULL DEFAULT '',
    mail_from   TEXT NOT NULL DEFAULT '',
    rcpts       TEXT NOT NULL DEFAULT '',
    subject     TEXT NOT NULL DEFAULT '',
    size        INTEGER NOT NULL DEFAULT 0
);
"""


def _failure(doing: str, path: Path, exc: BaseException) -> str:
    """One line; a full disk is named as such, since freeing space is all it takes (SQLite may
    only say "disk I/O error" when it cannot even create its journal)."""
    if isinstance(exc, sqlite3.Error) and ("full" in str(exc).lower() or _no_space(path)):
        return f"ledger full: cannot {doing} {path} ({exc}); free space on its filesystem"
    return f"cannot {doing} ledger {path}: {exc}"


def _no_space(path: Path) -> bool:
    try:
        usage = shutil.disk_usage(path.parent)
    except OSError:
        return False
    return usage.total > 0 and usage.free < NEARLY_FULL_BYTES  # /proc and friends have no size


@contextlib.contextmanager
def exclusive_use(ledger: Path, purpose: str) -> Iterator[None]:
    """Hold `<ledger>.lock` for `purpose` (one watch per ledger), or stop with who holds it.

    The lock is the kernel's (flock, or a byte-range lock on Windows): a process killed while
    holding it releases it with its last descriptor, so a crashed watch never blocks the next.
    """
    path = ledger.with_name(ledger.name + ".lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NO_FOLLOW, 0o600)
    except OSError as exc:
        raise ProbeError(f"cannot lock {path}: {exc.strerror or exc}") from None
    try:
        try:
            _lock(fd)
        except OSError:
            os.lseek(fd, 0, os.SEEK_SET)
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            raise ProbeError(
                f"{ledger} is already in use ({holder}): one {purpose} per ledger"
            ) from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{purpose}, pid {os.getpid()}".encode())
        yield
    finally:
        os.close(fd)


def _lock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def key_path(ledger: Path) -> Path:
    return ledger.with_name(ledger.name + ".key")


def load_key(path: Path) -> TokenKey:
    """The token key at `path`; made when there is none (0600, written whole before it appears
    under its name, so a sink and a burst starting together agree on one key)."""
    with contextlib.suppress(FileNotFoundError):
        return _read_key(path)
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise ProbeError(f"cannot create the token key {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES).hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
    except OSError as exc:
        raise ProbeError(f"cannot create the token key {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)
    return _read_key(path)


def _read_key(path: Path) -> TokenKey:
    try:
        data = read_host_file(path, KEY_BYTES * 4)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ProbeError(f"cannot read the token key {path}: {exc.strerror or exc}") from None
    try:
        return TokenKey(bytes.fromhex(data.decode("ascii").strip()))
    except (UnicodeDecodeError, ValueError):
        raise ProbeError(f"token key {path} is not what notifyprobe writes") from None


def default_path() -> Path:
    return platformdirs.user_data_path("notifyprobe", appauthor=False) / "ledger.sqlite3"


T = TypeVar("T")
KEY_BYTES = 32
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
OPEN_TIMEOUT_S = 30.0  # how long opening waits for another process holding the ledger
NEARLY_FULL_BYTES = 64 * 1024  # less than this free beside the ledger: a write error is "full"


def _open_writable(path: Path | str) -> sqlite3.Connection:
    conn: sqlite3.Connection | None = None
    try:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(path), timeout=OPEN_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        _use_wal(conn)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ProbeError(f"ledger {path} was written by a newer notifyprobe (schema {version})")
        conn.executescript(SCHEMA)
        _migrate(conn)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return conn
    except (sqlite3.Error, OSError, ProbeError) as exc:
        if conn is not None:
            conn.close()  # never leave a half-opened ledger behind
        if isinstance(exc, ProbeError):
            raise
        raise ProbeError(_failure("open", Path(path), exc)) from exc


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switching a new ledger to WAL needs it alone for a moment, and SQLite says "locked" at
    once, without its busy timeout, when another process opens it at the same time (a sink and
    a burst started together): wait for the other opener as the busy timeout would."""
    deadline = time.monotonic() + OPEN_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _open_read_only(path: Path) -> sqlite3.Connection:
    """Read-only, as it stands: `mode=ro` when SQLite can still use the WAL's shared memory,
    `immutable=1` when it cannot (a read-only filesystem, where nobody can be writing it)."""
    failure: sqlite3.Error | None = None
    for flags in ("mode=ro", "immutable=1"):
        conn = None
        try:
            uri = f"{path.resolve().as_uri()}?{flags}"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute("SELECT count(*) FROM runs").fetchone()
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            failure = exc
            continue
        if version != SCHEMA_VERSION:
            conn.close()
            raise ProbeError(
                f"ledger {path} is read-only and of another notifyprobe (schema {version}): "
                "open it once where it can be written"
            )
        return conn
    raise ProbeError(f"cannot open ledger {path}: {failure}")


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
            self._conn = _open_writable(path)
        except ProbeError:
            if not (read_only_ok and self.path.is_file()):
                raise
            self._conn = _open_read_only(self.path)
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
                raise ProbeError(_failure("write", self.path, exc)) from exc
        return results

    def _abandon(self) -> None:
        """Roll back whatever transaction a failed group left open, whatever failed."""
        with contextlib.suppress(sqlite3.Error):
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")

    def write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        result = self.apply([op])[0]
        if isinstance(result, Exception):
            raise ProbeError(_failure("write", self.path, result))
        return cast(T, result)

    def create_run(self, run: Run, *, control: bool = True) -> None:
        self.write(partial(_insert_run, run, control, self.token_key))

    def record_submission(self, run_id: str, seq: int, submission: Submission) -> None:
        self.write(partial(_update_submission, run_id, seq, submission))

    def record_not_attempted(self, run_id: str, seq: int, reason: str) -> None:
        self.write(partial(_update_not_attempted, run_id, seq, reason))

    def record_delivery(self, ref: TokenRef, found_in: FoundIn, message: ReceivedMessage) -> bool:
        return self.write(partial(_insert_delivery, ref, found_in, message))

    def record_returned(self, returned: Returned) -> list[bool]:
        """Keep a returned notification and its bounces; which bounces named a known one."""
        return self.write(partial(_insert_returned, returned))

    def finish_run(
        self, run_id: str, status: RunStatus, finished_at: float, verdict: str | None
    ) -> None:
        self.write(partial(_finish_run, run_id, status, finished_at, verdict))

    def record_failure(self, run_id: str, failure: str) -> None:
        """Keep why the probe failed to record part of a run (a ledger write that failed): the
        run is then judged an internal failure, never a run cut off."""
        self.write(partial(_record_failure, run_id, failure))

    def store_correction(self, run_id: str, verdict: str, at: float) -> None:
        """Keep a corrected verdict beside the original one, with the time it was found."""
        self.write(partial(_store_correction, run_id, verdict, at))

    def put_artifact(self, run_id: str, name: str, content: str) -> None:
        """Keep a named JSON document with a run (inventory, diagnosis, log), for `evidence`."""
        self.write(partial(_put_artifact, run_id, name, content))

    def delete_runs_before(self, cutoff: float) -> int:
        """Retention: drop finished runs started before `cutoff`, with all their rows."""
        return self.write(partial(_delete_runs_before, cutoff))

    # -- reading -------------------------------------------------------------------------

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """A read for the modules that keep their own tables here (process starts)."""
        return self._query(sql, params)

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

    def delivery_count(self, run_id: str) -> int:
        rows = self._query("SELECT COUNT(*) AS n FROM deliveries WHERE run_id = ?", (run_id,))
        return int(rows[0]["n"])

    def foreign_reasons(self, limit: int = 100) -> list[str]:
        """Why recent messages were not counted (no token, unknown token, bounce), newest first."""
        rows = self._query("SELECT reason FROM foreign_messages ORDER BY id DESC LIMIT ?", (limit,))
        return [r["reason"] for r in rows]

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
        return {r["seq"]: (r["received_at"], _action(r["action"])) for r in rows}

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
        run = _run_from_row(rows[0])
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
            bounces.setdefault(row["seq"], []).append(_bounce_from_row(row))
        notifications = tuple(
            Notification(
                run_id=run_id,
                seq=row["seq"],
                token=row["token"],
                submission=_submission_from_row(row),
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


class LedgerWriter:
    """Group commit for coroutines: every write queued while a commit runs joins the next one.

    A caller that must not answer before its row is durable (the sink's 250) awaits the future
    its `record_*` call returns; one commit (one fsync) then serves all the sessions that were
    waiting, so durability costs little throughput. A single thread does the SQLite work so the
    event loop never blocks on I/O.
    """

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self._pending: list[tuple[Op, asyncio.Future[Any]]] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._flusher: asyncio.Task[None] | None = None
        # run id → the first write about that run's notifications that failed, with its cause:
        # the run cannot be judged from the ledger then, and must say why
        self.failures: dict[str, str] = {}

    def defer(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue `op`; the returned future resolves once it is committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return future

    def record_delivery(
        self, ref: TokenRef, found_in: FoundIn, message: ReceivedMessage
    ) -> asyncio.Future[bool]:
        """Queue one delivery; the future says True, or False when the token is unknown."""
        return self.defer(partial(_insert_delivery, ref, found_in, message))

    def record_foreign(
        self, reason: str, message: ReceivedMessage, run_id: str | None = None
    ) -> asyncio.Future[None]:
        return self.defer(partial(_insert_foreign, reason, message, run_id))

    def record_returned(self, returned: Returned) -> asyncio.Future[list[bool]]:
        """Queue a returned notification and its bounces; the future says, bounce by bounce,
        whether it named a known notification."""
        return self.defer(partial(_insert_returned, returned))

    def record_submission(self, run_id: str, seq: int, submission: Submission) -> None:
        """Queued, not awaited: the burst goes on. A failure is logged, never silent."""
        future = self.defer(partial(_update_submission, run_id, seq, submission))
        future.add_done_callback(partial(self._failed, run_id, f"the result of notification {seq}"))

    def record_not_attempted(self, run_id: str, seq: int, reason: str) -> None:
        """Queued like a submission: the probe chose not to send this one, and says why."""
        future = self.defer(partial(_update_not_attempted, run_id, seq, reason))
        future.add_done_callback(
            partial(self._failed, run_id, f"why notification {seq} was not sent")
        )

    async def drain(self) -> None:
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def close(self) -> None:
        await self.drain()
        self._executor.shutdown(wait=True)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await loop.run_in_executor(
                    self._executor, self.ledger.apply, [op for op, _ in batch]
                )
            except Exception as exc:  # the commit failed: nobody in the group is durable
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=False):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(ProbeError(f"ledger write failed: {result}"))
                else:
                    future.set_result(result)

    def _failed(self, run_id: str, what: str, future: asyncio.Future[Any]) -> None:
        """A write the burst did not wait for failed: logged, and kept as the run's failure."""
        if future.cancelled() or future.exception() is None:
            return
        error = str(future.exception())
        log.error("ledger_write_failed", run_id=run_id, error=error)
        self.failures.setdefault(run_id, f"cannot record {what}: {error}")


# -- the SQL behind each operation ---------------------------------------------------------


def _insert_run(run: Run, control: bool, key: TokenKey, conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO runs (run_id, started_at, gateway, sink, domain, count, status, options)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (run.run_id, run.started_at, run.gateway, run.sink, run.domain, run.count, run.status,
         json.dumps(run.options, sort_keys=True, default=str)),
    )  # fmt: skip
    first = 0 if control else 1
    conn.executemany(
        "INSERT INTO notifications (run_id, seq, token) VALUES (?, ?, ?)",
        ((run.run_id, seq, key.token(run.run_id, seq)) for seq in range(first, run.count + 1)),
    )


def _update_submission(run_id: str, seq: int, s: Submission, conn: sqlite3.Connection) -> None:
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


def _update_not_attempted(run_id: str, seq: int, reason: str, conn: sqlite3.Connection) -> None:
    conn.execute(
        "UPDATE notifications SET not_attempted = ? WHERE run_id = ? AND seq = ?",
        (reason, run_id, seq),
    )


def _insert_delivery(
    ref: TokenRef, found_in: FoundIn, f: ReceivedMessage, conn: sqlite3.Connection
) -> bool:
    """Record one copy; False (and a foreign row) when the token names no known notification."""
    cur = conn.execute(
        "INSERT INTO deliveries (run_id, seq, received_at, found_in, peer, mail_from, rcpts,"
        " message_id, size, helo) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
        " WHERE EXISTS (SELECT 1 FROM notifications WHERE run_id = ? AND seq = ?)",
        (ref.run_id, ref.seq, f.received_at, found_in, f.peer, f.mail_from, ",".join(f.rcpts),
         f.message_id, f.size, f.helo, ref.run_id, ref.seq),
    )  # fmt: skip
    if cur.rowcount == 1:
        return True
    _insert_foreign(f"unknown token {ref}", f, None, conn)
    return False


def _insert_foreign(
    reason: str, f: ReceivedMessage, run_id: str | None, conn: sqlite3.Connection
) -> None:
    conn.execute(
        "INSERT INTO foreign_messages (received_at, reason, run_id, peer, mail_from, rcpts,"
        " subject, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (f.received_at, reason, run_id, f.peer, f.mail_from, ",".join(f.rcpts), f.subject[:200],
         f.size),
    )  # fmt: skip


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


def _insert_returned(r: Returned, conn: sqlite3.Connection) -> list[bool]:
    """Keep the message (capped) and one row per bounce of a known notification; a bounce
    that names none is kept as a foreign message of its run, never judged by."""
    f = r.message
    returned_id = conn.execute(
        "INSERT INTO returned_messages (received_at, run_id, peer, mail_from, rcpts, format,"
        " content) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (f.received_at, r.run_id, f.peer, f.mail_from, ",".join(f.rcpts), r.format,
         r.content[:RETURNED_BYTES]),
    ).lastrowid  # fmt: skip
    known = []
    for b in r.bounces:
        cur = conn.execute(
            "INSERT INTO bounces (run_id, seq, received_at, action, status, diagnostic,"
            " remote_mta, reporting_mta, recipient, named_by, confirmed, format, returned_id)"
            " SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
            " WHERE EXISTS (SELECT 1 FROM notifications WHERE run_id = ? AND seq = ?)",
            (b.run_id, b.seq, b.received_at, b.action, b.status, b.diagnostic, b.remote_mta,
             b.reporting_mta, b.recipient, b.named_by, int(b.confirmed), b.format, returned_id,
             b.run_id, b.seq),
        )  # fmt: skip
        known.append(cur.rowcount == 1)
    if not any(known):
        _insert_foreign(r.unmatched, f, r.run_id, conn)
    return known


def _bounce_from_row(row: sqlite3.Row) -> Bounce:
    return Bounce(
        run_id=row["run_id"],
        seq=row["seq"],
        received_at=row["received_at"],
        action=_action(row["action"]),
        status=row["status"],
        diagnostic=row["diagnostic"],
        remote_mta=row["remote_mta"],
        reporting_mta=row["reporting_mta"],
        recipient=row["recipient"],
        named_by="token" if row["named_by"] == "token" else "verp",
        confirmed=bool(row["confirmed"]),
        format=row["format"],
    )


def _action(text: str) -> BounceAction:
    return next((a for a in BOUNCE_ACTIONS if a == text), "failed")


ADDED_COLUMNS = (
    ("deliveries", "helo", "TEXT NOT NULL DEFAULT ''"),
    # A verdict re-judged with mail that arrived after it; the original stays in `verdict`.
    ("runs", "corrected_verdict", "TEXT"),
    ("runs", "corrected_at", "REAL"),
    ("notifications", "session", "INTEGER"),  # NULL in runs recorded before sessions were kept
    ("notifications", "position", "INTEGER"),
    ("notifications", "stalled_at", "TEXT"),  # SmtpPhase where the gateway stopped answering
    ("notifications", "not_attempted", "TEXT"),  # why the probe did not send it (breaker)
    ("runs", "failure", "TEXT"),  # a write of the run that failed: an internal failure
)


def _migrate(conn: sqlite3.Connection) -> None:
    """Columns added after schema 1; older notifyprobe versions ignore them."""
    for table, column, definition in ADDED_COLUMNS:
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column in columns:
            continue
        try:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        except sqlite3.OperationalError as exc:  # another process added it first
            if "duplicate column" not in str(exc):
                raise


def _put_artifact(run_id: str, name: str, content: str, conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO run_artifacts (run_id, name, content) VALUES (?, ?, ?)",
        (run_id, name, content),
    )


def _finish_run(
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


def _record_failure(run_id: str, failure: str, conn: sqlite3.Connection) -> None:
    conn.execute(
        "UPDATE runs SET failure = COALESCE(failure, ?) WHERE run_id = ?", (failure, run_id)
    )


def _store_correction(run_id: str, verdict: str, at: float, conn: sqlite3.Connection) -> None:
    conn.execute(
        "UPDATE runs SET corrected_verdict = ?, corrected_at = ? WHERE run_id = ?",
        (verdict, at, run_id),
    )


def _delete_runs_before(cutoff: float, conn: sqlite3.Connection) -> int:
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


def _submission_from_row(row: sqlite3.Row) -> Submission | None:
    if row["started_at"] is None:
        return None
    steps = tuple(_step_from_json(s) for s in json.loads(row["transcript"] or "[]"))
    reply = None
    if row["code"] is not None:
        reply = SmtpReply(code=row["code"], text=row["text"] or "", enhanced=row["enhanced"])
        # its raw bytes are kept with the same reply in the transcript
        same = [s.reply for s in steps if s.reply is not None and s.reply.code == reply.code
                and s.reply.text == reply.text]  # fmt: skip
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


def _run_from_row(row: sqlite3.Row) -> Run:
    return Run(
        run_id=row["run_id"],
        gateway=row["gateway"],
        domain=row["domain"],
        count=row["count"],
        started_at=row["started_at"],
        sink=row["sink"],
        finished_at=row["finished_at"],
        status=row["status"],
        options=json.loads(row["options"] or "{}"),
        failure=str(dict(row).get("failure") or ""),  # absent from a read-only older ledger
    )
