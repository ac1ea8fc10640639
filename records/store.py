"""The custodian's off-chain store: FHIR content encrypted at rest, one data key per patient.

- Content: AES-256-GCM with a random 96-bit nonce; the associated data binds a ciphertext to its
  `Type/id/version`, so rows cannot be swapped unnoticed.
- Keys: each patient's 256-bit data key is stored wrapped (AES-256-GCM) by the org's master key, with the patient's
  pseudonym as associated data. The digest key, which keys the digests on chain, is derived from the data key:
  destroying the data key (erasure) makes the content unreadable and the digests unlinkable.
- Writes are two-phase with the ledger: rows are staged `pending`, the bundle is registered on chain, then the rows
  become `committed`, or are discarded when the ledger refuses. Reads see committed rows only. A crash in between
  leaves pending rows that `pending_batches` lists for reconciliation against the ledger.

SQLite in the run folder is the embedded default. The class's public methods are the whole interface the gateway
uses, so another database (PostgreSQL) can stand behind the same methods.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from records.errors import PatientErased, Tampered, VersionTaken

DIGEST_KEY_LABEL = b"careledger/digest-key/v1"
INDEX_KEY_LABEL = b"careledger/identifier-index/v1"
LEDGER_KEY_LABEL = b"careledger/ledger-key/v1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS patient_keys (
    patient    TEXT PRIMARY KEY,
    wrapped    BLOB,            -- NULL once erased
    erased_at  TEXT
);
CREATE TABLE IF NOT EXISTS resources (
    type         TEXT NOT NULL,
    id           TEXT NOT NULL,
    version      INTEGER NOT NULL,
    patient      TEXT NOT NULL,
    state        TEXT NOT NULL,   -- pending | committed
    batch        TEXT NOT NULL,
    tx_id        TEXT,
    last_updated TEXT NOT NULL,
    nonce        BLOB NOT NULL,
    ciphertext   BLOB NOT NULL,
    PRIMARY KEY (type, id, version)
);
CREATE INDEX IF NOT EXISTS resources_by_patient ON resources (patient, type, last_updated);
CREATE INDEX IF NOT EXISTS resources_by_type ON resources (type, last_updated);
CREATE INDEX IF NOT EXISTS resources_by_batch ON resources (batch);
CREATE TABLE IF NOT EXISTS identifiers (  -- keyed hashes of Type + identifier, for conditional create and search
    token   TEXT NOT NULL,
    type    TEXT NOT NULL,
    id      TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (token, type, id, version)
);
"""


@dataclass(frozen=True)
class Row:
    """A resource version to stage: plaintext here, encrypted by the store."""

    type: str
    id: str
    version: int
    patient: str
    last_updated: str
    content: bytes
    identifiers: tuple[tuple[str, str], ...] = ()  # (system, value) pairs, indexed as keyed hashes


@dataclass(frozen=True)
class Stored:
    type: str
    id: str
    version: int
    patient: str
    last_updated: str
    content: bytes
    tx_id: str | None


@dataclass(frozen=True)
class Query:
    """A search over one resource type; times are `lastUpdated` instants as stored (UTC, ISO 8601)."""

    type: str
    patient: str | None = None
    updated_from: str | None = None
    updated_before: str | None = None
    ids: tuple[str, ...] | None = None
    count: int = 50
    offset: int = 0


class Store:
    def __init__(self, path: Path, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise ValueError("the master key is 32 bytes (AES-256)")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._master = AESGCM(master_key)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._unsaved_keys: dict[str, bytes] = {}  # data keys of new patients, until their first rows are staged
        self._index_key = hmac.new(master_key, INDEX_KEY_LABEL, hashlib.sha256).digest()
        self._ledger_key = hmac.new(master_key, LEDGER_KEY_LABEL, hashlib.sha256).digest()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ----- keys ------------------------------------------------------------------------------------------------

    def _data_key(self, db: sqlite3.Connection, patient: str, create: bool) -> bytes | None:
        row = db.execute("SELECT wrapped, erased_at FROM patient_keys WHERE patient = ?", (patient,)).fetchone()
        if row is not None:
            if row[0] is None:
                raise PatientErased(f"the patient's data was erased at {row[1]}")
            wrapped = bytes(row[0])
            return self._master.decrypt(wrapped[:12], wrapped[12:], patient.encode())
        if not create:
            return None
        key = self._unsaved_keys.pop(patient, None) or AESGCM.generate_key(256)
        nonce = os.urandom(12)
        wrapped = nonce + self._master.encrypt(nonce, key, patient.encode())
        db.execute("INSERT INTO patient_keys (patient, wrapped) VALUES (?, ?)", (patient, wrapped))
        return key

    def digest_key(self, patient: str) -> bytes:
        """The key of the patient's on-chain digests. For a new patient the data key is made here but saved only
        when their first rows are staged, so a request that is then refused leaves nothing behind."""
        with self._lock:
            key = self._data_key(self._db, patient, create=False)
            if key is None:
                key = self._unsaved_keys.setdefault(patient, AESGCM.generate_key(256))
        return hmac.new(key, DIGEST_KEY_LABEL, hashlib.sha256).digest()

    def erase(self, patient: str, at: str) -> bool:
        """Crypto-shred: destroy the patient's data key and their ciphertexts. False if nothing was held."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE patient_keys SET wrapped = NULL, erased_at = ? WHERE patient = ? AND wrapped IS NOT NULL",
                (at, patient),
            )
            db.execute("UPDATE resources SET ciphertext = x'', nonce = x'' WHERE patient = ?", (patient,))
            db.execute(
                "DELETE FROM identifiers WHERE (type, id, version) IN"
                " (SELECT type, id, version FROM resources WHERE patient = ?)",
                (patient,),
            )
            return cur.rowcount > 0

    def is_erased(self, patient: str) -> bool:
        row = self._db.execute("SELECT wrapped IS NULL FROM patient_keys WHERE patient = ?", (patient,)).fetchone()
        return bool(row and row[0])

    # ----- writes ----------------------------------------------------------------------------------------------

    def stage(self, batch: str, rows: Sequence[Row]) -> None:
        """Encrypt and insert rows as pending, all or none."""
        try:
            with self._tx() as db:
                for r in rows:
                    key = self._data_key(db, r.patient, create=True)
                    assert key is not None
                    nonce = os.urandom(12)
                    ct = AESGCM(key).encrypt(nonce, r.content, _aad(r.type, r.id, r.version))
                    db.execute(
                        "INSERT INTO resources (type, id, version, patient, state, batch, last_updated, nonce,"
                        " ciphertext) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
                        (r.type, r.id, r.version, r.patient, batch, r.last_updated, nonce, ct),
                    )
                    db.executemany(
                        "INSERT OR IGNORE INTO identifiers (token, type, id, version) VALUES (?, ?, ?, ?)",
                        [(self._token(r.type, s, v), r.type, r.id, r.version) for s, v in r.identifiers],
                    )
        except sqlite3.IntegrityError as e:
            raise VersionTaken(str(e)) from None

    def commit(self, batch: str, tx_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE resources SET state = 'committed', tx_id = ? WHERE batch = ?", (tx_id, batch))

    def discard(self, batch: str) -> None:
        with self._tx() as db:
            db.execute(
                "DELETE FROM identifiers WHERE (type, id, version) IN"
                " (SELECT type, id, version FROM resources WHERE batch = ? AND state = 'pending')",
                (batch,),
            )
            db.execute("DELETE FROM resources WHERE batch = ? AND state = 'pending'", (batch,))

    def pending_batches(self, staged_before: str | None = None) -> list[str]:
        """Batches with pending rows; only those staged before an instant (lastUpdated form) when given."""
        if staged_before is None:
            return [r[0] for r in self._db.execute("SELECT DISTINCT batch FROM resources WHERE state = 'pending'")]
        rows = self._db.execute(
            "SELECT DISTINCT batch FROM resources WHERE state = 'pending' AND last_updated < ?", (staged_before,)
        )
        return [r[0] for r in rows]

    def batch_rows(self, batch: str) -> list[tuple[str, str, int]]:
        return [
            (r[0], r[1], int(r[2]))
            for r in self._db.execute("SELECT type, id, version FROM resources WHERE batch = ?", (batch,))
        ]

    # ----- reads -----------------------------------------------------------------------------------------------

    def head(self, type_: str, id_: str) -> tuple[int, str] | None:
        """(newest committed version, patient) of a resource, or None."""
        row = self._db.execute(
            "SELECT version, patient FROM resources WHERE type = ? AND id = ? AND state = 'committed'"
            " ORDER BY version DESC LIMIT 1",
            (type_, id_),
        ).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def read(self, type_: str, id_: str, version: int | None = None) -> Stored | None:
        sql = "SELECT type, id, version, patient, last_updated, nonce, ciphertext, tx_id FROM resources"
        sql += " WHERE type = ? AND id = ? AND state = 'committed'"
        args: tuple[object, ...] = (type_, id_)
        if version is not None:
            sql += " AND version = ?"
            args += (version,)
        row = self._db.execute(sql + " ORDER BY version DESC LIMIT 1", args).fetchone()
        return self._open(row) if row else None

    def history(self, type_: str, id_: str) -> list[Stored]:
        rows = self._db.execute(
            "SELECT type, id, version, patient, last_updated, nonce, ciphertext, tx_id FROM resources"
            " WHERE type = ? AND id = ? AND state = 'committed' ORDER BY version DESC",
            (type_, id_),
        ).fetchall()
        return [self._open(r) for r in rows]

    def patient_resources(self, patient: str) -> list[Stored]:
        """The newest committed version of every resource of the patient."""
        rows = self._db.execute(
            "SELECT type, id, version, patient, last_updated, nonce, ciphertext, tx_id FROM resources r"
            " WHERE patient = ? AND state = 'committed' AND version ="
            " (SELECT MAX(version) FROM resources WHERE type = r.type AND id = r.id AND state = 'committed')"
            " ORDER BY type, id",
            (patient,),
        ).fetchall()
        return [self._open(r) for r in rows]

    def with_identifier(self, type_: str, system: str, value: str) -> list[tuple[str, int]]:
        """(id, version) of the newest committed versions of `type_` resources that carry the identifier."""
        rows = self._db.execute(
            "SELECT i.id, i.version FROM identifiers i JOIN resources r"
            " ON r.type = i.type AND r.id = i.id AND r.version = i.version"
            " WHERE i.token = ? AND i.type = ? AND r.state = 'committed' AND r.version ="
            " (SELECT MAX(version) FROM resources WHERE type = r.type AND id = r.id AND state = 'committed')",
            (self._token(type_, system, value), type_),
        ).fetchall()
        return [(str(r[0]), int(r[1])) for r in rows]

    def search(self, query: Query) -> tuple[int, list[Stored]]:
        """The newest committed versions matching the query: (total count, the requested page), oldest first."""
        where = ["r.type = ?", "r.state = 'committed'"]
        args: list[object] = [query.type]
        where.append(
            "r.version = (SELECT MAX(version) FROM resources WHERE type = r.type AND id = r.id AND state = 'committed')"
        )
        if query.patient is not None:
            where.append("r.patient = ?")
            args.append(query.patient)
        if query.updated_from is not None:
            where.append("r.last_updated >= ?")
            args.append(query.updated_from)
        if query.updated_before is not None:
            where.append("r.last_updated < ?")
            args.append(query.updated_before)
        if query.ids is not None:
            where.append(f"r.id IN ({','.join('?' * len(query.ids))})")
            args += list(query.ids)
        sql = " FROM resources r WHERE " + " AND ".join(where)
        (total,) = self._db.execute("SELECT COUNT(*)" + sql, args).fetchone()
        rows = self._db.execute(
            "SELECT r.type, r.id, r.version, r.patient, r.last_updated, r.nonce, r.ciphertext, r.tx_id"
            + sql
            + " ORDER BY r.last_updated, r.id LIMIT ? OFFSET ?",
            [*args, query.count, query.offset],
        ).fetchall()
        return int(total), [self._open(r) for r in rows]

    def patient_of_pseudonym(self, patient: str) -> str | None:
        """The id of this store's Patient resource filed under the pseudonym, if any."""
        row = self._db.execute(
            "SELECT id FROM resources WHERE type = 'Patient' AND patient = ? AND state = 'committed' LIMIT 1",
            (patient,),
        ).fetchone()
        return str(row[0]) if row else None

    def ledger_key(self, type_: str, id_: str) -> str:
        """The opaque key a resource (or claim, or consent) has on chain: a keyed hash of its type and id under this
        org's own key, so a client-chosen id (which can be an MRN) never reaches the ledger, and two orgs' equal ids
        never share a key."""
        return hmac.new(self._ledger_key, f"{type_}/{id_}".encode(), hashlib.sha256).hexdigest()

    def _token(self, type_: str, system: str, value: str) -> str:
        return hmac.new(self._index_key, f"{type_}|{system}|{value}".encode(), hashlib.sha256).hexdigest()

    def _open(self, row: tuple[object, ...]) -> Stored:
        type_, id_, version, patient = str(row[0]), str(row[1]), int(str(row[2])), str(row[3])
        key = self._data_key(self._db, patient, create=False)
        if key is None:
            raise Tampered(f"{type_}/{id_} has no data key")
        try:
            nonce, ciphertext = row[5], row[6]
            assert isinstance(nonce, bytes) and isinstance(ciphertext, bytes)
            content = AESGCM(key).decrypt(nonce, ciphertext, _aad(type_, id_, version))
        except InvalidTag:
            raise Tampered(
                f"{type_}/{id_}/_history/{version} fails authentication: it was changed in the store"
            ) from None
        return Stored(type_, id_, version, patient, str(row[4]), content, None if row[7] is None else str(row[7]))


def _aad(type_: str, id_: str, version: int) -> bytes:
    return f"{type_}/{id_}/{version}".encode()
