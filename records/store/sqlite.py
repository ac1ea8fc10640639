"""The embedded store: one SQLite file, shared safely by every process of the org on the machine.

- WAL journal: readers never wait for the writer, nor the writer for readers.
- Every write transaction starts with `BEGIN IMMEDIATE`, so it takes the file's write lock before it reads
  anything: two writers never hold read snapshots that each must upgrade (the deadlock SQLite answers with an
  immediate SQLITE_BUSY); the second simply waits, up to the busy timeout, and then sees the first one's rows.
- Writers of one process queue on a lock of their own before `BEGIN IMMEDIATE`. SQLite's busy handler waits by
  sleeping, in steps that grow to 100 ms, and does not wake when the lock frees: in a profile of a gateway taking a
  hundred claims a second, a quarter of its threads' samples were in that wait. Only writers of different processes
  still meet in the busy handler.
- Connections come from a small pool, one per thread at a time, so a thread never reads inside another's
  transaction.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from records.store.backend import Args, Backend, Duplicate, Exclusive, Pool, Sql

BUSY_TIMEOUT_S = 30.0

_writers: dict[Path, threading.RLock] = {}  # one per store file in this process
_writers_guard = threading.Lock()


def _writer_lock(path: Path) -> threading.RLock:
    with _writers_guard:
        return _writers.setdefault(path.resolve(), threading.RLock())


TABLES = """
CREATE TABLE IF NOT EXISTS patient_keys (
    patient    TEXT PRIMARY KEY,
    wrapped    BLOB,                  -- NULL once erased
    erased_at  TEXT,
    created    REAL NOT NULL DEFAULT 0 -- epoch seconds
);
CREATE TABLE IF NOT EXISTS resources (
    type         TEXT NOT NULL,
    id           TEXT NOT NULL,
    version      INTEGER NOT NULL,
    patient      TEXT NOT NULL,
    state        TEXT NOT NULL,       -- pending | committed
    batch        TEXT NOT NULL,
    tx_id        TEXT,
    last_updated TEXT NOT NULL,
    nonce        BLOB NOT NULL,
    ciphertext   BLOB NOT NULL,
    newest       INTEGER NOT NULL DEFAULT 0, -- 1: the newest committed version of (type, id)
    staged       REAL NOT NULL DEFAULT 0,    -- epoch seconds
    PRIMARY KEY (type, id, version)
);
CREATE TABLE IF NOT EXISTS identifiers (  -- keyed hashes of Type + identifier, for conditional create and search
    token   TEXT NOT NULL,
    type    TEXT NOT NULL,
    id      TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (token, type, id, version)
);
CREATE TABLE IF NOT EXISTS claim_outbox (  -- claims of a committed bundle, each submitted on chain after it
    key      TEXT PRIMARY KEY,    -- the claim's key on chain
    id       TEXT NOT NULL,       -- the Claim's id here
    batch    TEXT NOT NULL,
    patient  TEXT NOT NULL,
    digest   TEXT NOT NULL,
    state    TEXT NOT NULL,       -- staged | staged-held | queued | submitted | refused | held
    attempts INTEGER NOT NULL DEFAULT 0,
    tx_id    TEXT,
    reason   TEXT,
    updated  REAL NOT NULL DEFAULT 0 -- epoch seconds
)
"""

# Stores made before `newest`, `staged` and `created` existed get the columns, and `newest` is filled in once.
MIGRATIONS = [
    ("patient_keys", "created", "ALTER TABLE patient_keys ADD COLUMN created REAL NOT NULL DEFAULT 0"),
    ("resources", "staged", "ALTER TABLE resources ADD COLUMN staged REAL NOT NULL DEFAULT 0"),
    ("resources", "newest", "ALTER TABLE resources ADD COLUMN newest INTEGER NOT NULL DEFAULT 0"),
]
FILL_NEWEST = (
    "UPDATE resources SET newest = 1 WHERE state = 'committed' AND version ="
    " (SELECT MAX(x.version) FROM resources x WHERE x.type = resources.type AND x.id = resources.id"
    " AND x.state = 'committed')"
)

INDEXES = """
DROP INDEX IF EXISTS resources_by_patient;
DROP INDEX IF EXISTS resources_by_type;
CREATE INDEX IF NOT EXISTS resources_by_batch ON resources (batch);
CREATE INDEX IF NOT EXISTS resources_of_patient ON resources (patient);
CREATE INDEX IF NOT EXISTS resources_pending ON resources (staged) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS newest_by_type ON resources (type, last_updated, id) WHERE newest = 1;
CREATE INDEX IF NOT EXISTS newest_by_patient_type ON resources (patient, type, last_updated, id) WHERE newest = 1;
CREATE INDEX IF NOT EXISTS newest_by_patient ON resources (patient, last_updated, type, id) WHERE newest = 1;
CREATE INDEX IF NOT EXISTS identifiers_of_resource ON identifiers (type, id, version);
CREATE INDEX IF NOT EXISTS claim_outbox_by_state ON claim_outbox (state, updated);
CREATE INDEX IF NOT EXISTS claim_outbox_by_claim ON claim_outbox (id)
"""


class _Statements:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def rows(self, sql: str, args: Args = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, tuple(args)).fetchall()

    def one(self, sql: str, args: Args = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._db.execute(sql, tuple(args)).fetchone()
        return row

    def run(self, sql: str, args: Args = ()) -> int:
        try:
            return self._db.execute(sql, tuple(args)).rowcount
        except sqlite3.IntegrityError as e:
            raise Duplicate(str(e)) from None

    def many(self, sql: str, args: Sequence[Args]) -> None:
        try:
            self._db.executemany(sql, [tuple(a) for a in args])
        except sqlite3.IntegrityError as e:
            raise Duplicate(str(e)) from None


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._writer = _writer_lock(path)
        self._pool: Pool[sqlite3.Connection] = Pool(self._connect, lambda db: not db.in_transaction, _close)
        with self._pool.connection() as db:
            db.execute("PRAGMA journal_mode=WAL")  # kept in the file: every later connection uses it
        with self.write() as sql:
            for statement in _statements(TABLES):
                sql.run(statement)
            for table, column, alter in MIGRATIONS:
                if column not in {r[1] for r in sql.rows(f"PRAGMA table_info({table})")}:
                    sql.run(alter)
                    if column == "newest":
                        sql.run(FILL_NEWEST)
            for statement in _statements(INDEXES):
                sql.run(statement)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @contextmanager
    def read(self) -> Iterator[Sql]:
        with self._pool.connection() as db:
            yield _Statements(db)

    @contextmanager
    def write(self) -> Iterator[Sql]:
        if not self._writer.acquire(timeout=BUSY_TIMEOUT_S):
            raise sqlite3.OperationalError("database is locked")  # as the busy handler says after its timeout
        try:
            with self._pool.connection() as db:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield _Statements(db)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
        finally:
            self._writer.release()

    def exclusive(self) -> Exclusive:
        """An flock on `<store>.lock` beside the file: every process that opens the file on this machine (SQLite
        is not shared across machines) takes it in turn; the kernel releases it when the holder dies."""
        return _FileLock(self.path.with_name(self.path.name + ".lock"))

    def close(self) -> None:
        self._pool.close()


class _FileLock:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the lock


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _close(db: sqlite3.Connection) -> None:
    db.close()
