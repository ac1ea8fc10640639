"""The store in PostgreSQL (psycopg 3): for an org whose gateways and workers run on several machines, or whose
records outgrow one file.

- Write transactions run at read committed. Uniqueness is the database's: the primary key of a resource version
  refuses the second writer of a version (`Duplicate`, which the store reports as VersionTaken); two first writes
  of a new patient meet at the primary key of `patient_keys`, where `INSERT ... ON CONFLICT DO NOTHING` waits for
  the other transaction and then reads the key it saved.
- A write that uses a patient's key holds a share lock on the key row until it commits; erasing the patient or
  dropping an unused key takes the row's update lock first and decides in a later statement (a fresh snapshot),
  so neither can act on a patient whose rows are being written at that moment.
- Text columns use the "C" collation, so listings are in byte order, as in SQLite, whatever the database's locale.
- The schema is created under an advisory lock, so several processes starting at once do not race.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import errors
from psycopg.pq import TransactionStatus

from records.store.backend import Args, Backend, Duplicate, Exclusive, Pool, Sql

CONNECT_TIMEOUT_S = 10
SCHEMA_LOCK = 0x4341_5245  # pg_advisory_xact_lock key for schema changes
EXCLUSIVE_LOCK = 0x4341_5246  # pg_advisory_lock key of `PostgresBackend.exclusive`, with the store's schema

SCHEMA = """
CREATE TABLE IF NOT EXISTS patient_keys (
    patient    TEXT COLLATE "C" PRIMARY KEY,
    wrapped    BYTEA,
    erased_at  TEXT,
    created    DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS resources (
    type         TEXT COLLATE "C" NOT NULL,
    id           TEXT COLLATE "C" NOT NULL,
    version      INTEGER NOT NULL,
    patient      TEXT COLLATE "C" NOT NULL,
    state        TEXT COLLATE "C" NOT NULL,
    batch        TEXT COLLATE "C" NOT NULL,
    tx_id        TEXT,
    last_updated TEXT COLLATE "C" NOT NULL,
    nonce        BYTEA NOT NULL,
    ciphertext   BYTEA NOT NULL,
    newest       INTEGER NOT NULL DEFAULT 0,
    staged       DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (type, id, version)
);
CREATE TABLE IF NOT EXISTS identifiers (
    token   TEXT COLLATE "C" NOT NULL,
    type    TEXT COLLATE "C" NOT NULL,
    id      TEXT COLLATE "C" NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (token, type, id, version)
);
CREATE TABLE IF NOT EXISTS claim_outbox (
    key      TEXT COLLATE "C" PRIMARY KEY,
    id       TEXT COLLATE "C" NOT NULL,
    batch    TEXT COLLATE "C" NOT NULL,
    patient  TEXT COLLATE "C" NOT NULL,
    digest   TEXT NOT NULL,
    state    TEXT COLLATE "C" NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    tx_id    TEXT,
    reason   TEXT,
    updated  DOUBLE PRECISION NOT NULL DEFAULT 0
);
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


@lru_cache(maxsize=512)
def _dialect(sql: str) -> str:
    """The store's `?` placeholders as psycopg's; the store's SQL has no other `?` and no `%`."""
    return sql.replace("?", "%s")


class _Statements:
    def __init__(self, db: psycopg.Connection[tuple[Any, ...]]) -> None:
        self._db = db

    def rows(self, sql: str, args: Args = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(_dialect(sql), tuple(args)).fetchall()

    def one(self, sql: str, args: Args = ()) -> tuple[Any, ...] | None:
        return self._db.execute(_dialect(sql), tuple(args)).fetchone()

    def run(self, sql: str, args: Args = ()) -> int:
        try:
            return self._db.execute(_dialect(sql), tuple(args)).rowcount
        except (errors.UniqueViolation, errors.DeadlockDetected) as e:
            raise Duplicate(str(e).strip()) from None

    def many(self, sql: str, args: Sequence[Args]) -> None:
        try:
            with self._db.cursor() as cur:
                cur.executemany(_dialect(sql), [tuple(a) for a in args])
        except (errors.UniqueViolation, errors.DeadlockDetected) as e:
            raise Duplicate(str(e).strip()) from None


class PostgresBackend(Backend):
    name = "postgresql"
    share_lock = " FOR SHARE"
    update_lock = " FOR UPDATE"
    take_lock = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: Pool[psycopg.Connection[tuple[Any, ...]]] = Pool(self._connect, _usable, _close)
        with self.write() as sql:
            sql.one(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
            for statement in (s.strip() for s in SCHEMA.split(";")):
                if statement:
                    sql.run(statement)

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)

    @contextmanager
    def read(self) -> Iterator[Sql]:
        with self._pool.connection() as db:
            yield _Statements(db)

    @contextmanager
    def write(self) -> Iterator[Sql]:
        with self._pool.connection() as db, db.transaction():
            yield _Statements(db)

    def exclusive(self) -> Exclusive:
        """A session advisory lock on a connection of its own: every process of every machine that uses the
        database takes it in turn; the server releases it when the holder's connection ends."""
        return _AdvisoryLock(self.url)

    def close(self) -> None:
        self._pool.close()


class _AdvisoryLock:
    def __init__(self, url: str) -> None:
        self._url = url
        self._db: psycopg.Connection[tuple[Any, ...]] | None = None

    def acquire(self) -> None:
        db = psycopg.connect(self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        try:
            db.execute("SELECT pg_advisory_lock(%s, hashtext(current_schema()))", (EXCLUSIVE_LOCK,))
        except BaseException:
            db.close()
            raise
        self._db = db

    def release(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()  # the session ends: its advisory lock with it


def _usable(db: psycopg.Connection[tuple[Any, ...]]) -> bool:
    return not db.closed and not db.broken and db.info.transaction_status == TransactionStatus.IDLE


def _close(db: psycopg.Connection[tuple[Any, ...]]) -> None:
    db.close()
