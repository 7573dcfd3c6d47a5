"""Every table and every migration, and opening a ledger file (WAL, read-only fallback)."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import platformdirs

from probe.errors import ProbeError

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


def failure_line(doing: str, path: Path, exc: BaseException) -> str:
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


def default_path() -> Path:
    return platformdirs.user_data_path("notifyprobe", appauthor=False) / "ledger.sqlite3"


OPEN_TIMEOUT_S = 30.0  # how long opening waits for another process holding the ledger


NEARLY_FULL_BYTES = 64 * 1024  # less than this free beside the ledger: a write error is "full"


def open_writable(path: Path | str) -> sqlite3.Connection:
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
        raise ProbeError(failure_line("open", Path(path), exc)) from exc


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


def open_read_only(path: Path) -> sqlite3.Connection:
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
