"""The store's one implementation over either backend: encryption, keys, two-phase writes, listings."""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from records.errors import PatientErased, Tampered, VersionTaken
from records.store.backend import Backend, Duplicate, Exclusive, Sql
from records.store.model import Cursor, OutboxClaim, Page, Query, Row, Stored

DIGEST_KEY_LABEL = b"careledger/digest-key/v1"
INDEX_KEY_LABEL = b"careledger/identifier-index/v1"
LEDGER_KEY_LABEL = b"careledger/ledger-key/v1"
UNUSED_KEY_GRACE_S = 3600.0  # a key with no rows this old belongs to a request that died before staging
ISSUED_KEYS_KEPT = 4096

STORED = (
    "SELECT r.type, r.id, r.version, r.patient, r.last_updated, r.nonce, r.ciphertext, r.tx_id, k.wrapped,"
    " k.erased_at FROM resources r LEFT JOIN patient_keys k ON k.patient = r.patient"
)


def open_backend(location: Path | str) -> Backend:
    """The backend a store location names: a path or `sqlite:///abs/path` (SQLite), `postgresql://...`."""
    if isinstance(location, Path):
        from records.store.sqlite import SqliteBackend

        return SqliteBackend(location)
    scheme = urlparse(location).scheme
    if scheme in ("postgresql", "postgres"):
        from records.store.postgres import PostgresBackend

        return PostgresBackend(location)
    if scheme == "sqlite":
        return open_backend(Path(urlparse(location).path))
    if scheme == "":
        return open_backend(Path(location))
    raise ValueError(f"{location!r}: a store is a path, sqlite:///<path> or postgresql://user@host:port/database")


class Store:
    """The custodian's encrypted store. `location`: a path or URL, see `open_backend`."""

    def __init__(self, location: Path | str, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise ValueError("the master key is 32 bytes (AES-256)")
        self._master = AESGCM(master_key)
        self._index_key = hmac.new(master_key, INDEX_KEY_LABEL, hashlib.sha256).digest()
        self._ledger_key = hmac.new(master_key, LEDGER_KEY_LABEL, hashlib.sha256).digest()
        # Data keys digest_key handed out, until the write that uses them stages its rows (see stage).
        self._issued: dict[str, bytes] = {}
        self._issued_lock = threading.Lock()
        self._db = open_backend(location)
        self._drop_unused_keys()

    @property
    def backend(self) -> str:
        """The backend's name: sqlite or postgresql."""
        return self._db.name

    def close(self) -> None:
        self._db.close()

    def exclusive(self) -> Exclusive:
        """A lock shared by every process that opens this store (`Backend.exclusive`)."""
        return self._db.exclusive()

    # ----- keys ------------------------------------------------------------------------------------------------

    def _wrap(self, patient: str, key: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._master.encrypt(nonce, key, patient.encode())

    def _unwrap(self, patient: str, wrapped: bytes) -> bytes:
        try:
            return self._master.decrypt(wrapped[:12], wrapped[12:], patient.encode())
        except InvalidTag:
            raise Tampered("a patient's wrapped data key fails authentication: it was changed in the store") from None

    def _saved_key(self, sql: Sql, patient: str, lock: str = "") -> bytes | None:
        row = sql.one(f"SELECT wrapped, erased_at FROM patient_keys WHERE patient = ?{lock}", (patient,))
        if row is None:
            return None
        if row[0] is None:
            raise PatientErased(f"the patient's data was erased at {row[1]}")
        return self._unwrap(patient, bytes(row[0]))

    def _save_key(self, sql: Sql, patient: str, candidate: bytes) -> bytes:
        """Save `candidate` as the patient's key unless another writer saved one first; the key saved."""
        sql.run(
            "INSERT INTO patient_keys (patient, wrapped, created) VALUES (?, ?, ?) ON CONFLICT (patient) DO NOTHING",
            (patient, self._wrap(patient, candidate), time.time()),
        )
        key = self._saved_key(sql, patient, self._db.share_lock)
        assert key is not None
        return key

    def digest_key(self, patient: str) -> bytes:
        """The key of the patient's on-chain digests, derived from their data key.

        A new patient's data key is saved here, before their first rows: every process that writes the patient
        then uses that one key (the patient key's primary key decides between processes that start at once). A
        request that is then refused leaves the key without rows; `discard` drops it at once, and a key that a
        request which died before staging left behind is dropped after an hour, when a store is opened. Until then
        it is harmless: a random key, wrapped by the master key, bound to a pseudonym, and not used for anything.
        """
        with self._db.read() as sql:
            key = self._saved_key(sql, patient)
        if key is None:
            with self._db.write() as sql:
                key = self._save_key(sql, patient, AESGCM.generate_key(256))
        with self._issued_lock:
            self._issued.pop(patient, None)
            self._issued[patient] = key
            if len(self._issued) > ISSUED_KEYS_KEPT:
                del self._issued[next(iter(self._issued))]
        return hmac.new(key, DIGEST_KEY_LABEL, hashlib.sha256).digest()

    def _key_for_rows(self, sql: Sql, patient: str, issued: bytes | None) -> bytes:
        """The key a staging write encrypts with, share-locked until it commits. When the key this process handed
        out for the write's digests was dropped meanwhile (the request that made it was refused), it is saved
        again; when another key replaced it, the digests are wrong and the write must be prepared again."""
        key = self._saved_key(sql, patient, self._db.share_lock)
        if key is None:
            key = self._save_key(sql, patient, issued or AESGCM.generate_key(256))
        if issued is not None and key != issued:
            raise VersionTaken("the patient's data key was replaced while this write was prepared; send it again")
        return key

    def _drop_unused_key(self, sql: Sql, patient: str) -> None:
        """Delete the patient's key if no row uses it: lock the key row first, then look for rows in a statement of
        its own, which sees whatever a writer holding the key committed."""
        sql.one(f"SELECT patient FROM patient_keys WHERE patient = ?{self._db.update_lock}", (patient,))
        sql.run(
            "DELETE FROM patient_keys WHERE patient = ? AND wrapped IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM resources r WHERE r.patient = ?)",
            (patient, patient),
        )

    def _drop_unused_keys(self) -> None:
        with self._db.read() as sql:
            unused = sql.rows(
                "SELECT patient FROM patient_keys k WHERE wrapped IS NOT NULL AND created < ?"
                " AND NOT EXISTS (SELECT 1 FROM resources r WHERE r.patient = k.patient)",
                (time.time() - UNUSED_KEY_GRACE_S,),
            )
        for (patient,) in unused:
            with self._db.write() as sql:
                self._drop_unused_key(sql, patient)

    def erase(self, patient: str, at: str) -> bool:
        """Crypto-shred: destroy the patient's data key and their ciphertexts, and drop their resources from every
        listing. False if nothing was held."""
        with self._db.write() as sql:
            erased = sql.run(
                "UPDATE patient_keys SET wrapped = NULL, erased_at = ? WHERE patient = ? AND wrapped IS NOT NULL",
                (at, patient),
            )
            # No longer listed anywhere (searches, a record's pages); a read of a version says it was erased.
            sql.run("UPDATE resources SET ciphertext = ?, nonce = ?, newest = 0 WHERE patient = ?", (b"", b"", patient))
            sql.run(
                "DELETE FROM identifiers WHERE (type, id, version) IN"
                " (SELECT type, id, version FROM resources WHERE patient = ?)",
                (patient,),
            )
        with self._issued_lock:
            self._issued.pop(patient, None)
        return erased > 0

    def is_erased(self, patient: str) -> bool:
        with self._db.read() as sql:
            row = sql.one("SELECT wrapped IS NULL FROM patient_keys WHERE patient = ?", (patient,))
        return bool(row and row[0])

    # ----- writes ----------------------------------------------------------------------------------------------

    def issued(self, patients: Iterable[str]) -> dict[str, bytes]:
        """The data keys `digest_key` handed out for these patients, taken: for a write that stages in another
        thread, taken right after its digests were made, before another write of the same patient can ask."""
        with self._issued_lock:
            return {p: k for p in set(patients) if (k := self._issued.pop(p, None)) is not None}

    def stage(
        self,
        batch: str,
        rows: Sequence[Row],
        claims: Sequence[OutboxClaim] = (),
        committed: bool = False,
        issued: dict[str, bytes] | None = None,
    ) -> None:
        """Encrypt and insert rows as pending, all or none. VersionTaken when another writer has a version.
        `claims`: claims among the rows to submit on chain once the batch commits (the claim outbox).
        `committed`: rows no ledger write stands behind (kept here only) are committed in the same transaction, so
        a process killed in between leaves both or neither, never a pending row holding the version for good.
        `issued`: the keys the rows' digests were made with (`issued`); by default those handed out last."""
        rows = sorted(rows, key=lambda r: (r.type, r.id, r.version))  # one lock order for every writer
        patients = sorted({r.patient for r in rows})
        if issued is None:
            issued = self.issued(patients)
        now = time.time()
        try:
            with self._db.write() as sql:
                keys = {p: self._key_for_rows(sql, p, issued.get(p)) for p in patients}
                values = []
                for r in rows:
                    nonce = os.urandom(12)
                    ciphertext = AESGCM(keys[r.patient]).encrypt(nonce, r.content, _aad(r.type, r.id, r.version))
                    values.append((r.type, r.id, r.version, r.patient, batch, r.last_updated, nonce, ciphertext, now))
                sql.many(
                    "INSERT INTO resources (type, id, version, patient, state, batch, last_updated, nonce,"
                    " ciphertext, staged) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
                    values,
                )
                tokens = [(self._token(r.type, s, v), r.type, r.id, r.version) for r in rows for s, v in r.identifiers]
                if tokens:
                    sql.many(
                        "INSERT INTO identifiers (token, type, id, version) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        tokens,
                    )
                if claims:
                    sql.many(
                        "INSERT INTO claim_outbox (key, id, batch, patient, digest, state, updated)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [
                            (
                                c.key,
                                c.id,
                                batch,
                                c.patient,
                                c.digest,
                                "staged-held" if c.state == "held" else "staged",
                                now,
                            )
                            for c in claims
                        ],
                    )
                if committed:
                    self._commit(sql, batch, "")
        except Duplicate as e:
            raise VersionTaken(str(e)) from None

    def commit(self, batch: str, tx_id: str) -> None:
        """The batch's rows become readable, each the newest version of its resource: a row is written once here,
        and a resource's previous newest version once more when the batch updates it."""
        self.commit_many([(batch, tx_id)])

    def commit_many(self, batches: Sequence[tuple[str, str]]) -> None:
        """`commit` of each (batch, tx id), in one store transaction."""
        with self._db.write() as sql:
            for batch, tx_id in sorted(batches):  # one order everywhere: two processes' groups never deadlock
                self._commit(sql, batch, tx_id)

    def _commit(self, sql: Sql, batch: str, tx_id: str) -> None:
        committed = sql.run(
            "UPDATE resources SET state = 'committed', tx_id = ?, newest = CASE WHEN NOT EXISTS"
            " (SELECT 1 FROM resources x WHERE x.type = resources.type AND x.id = resources.id"
            " AND (x.state = 'committed' OR x.batch = ?) AND x.version > resources.version) THEN 1 ELSE 0 END"
            " WHERE batch = ? AND state = 'pending'",
            (tx_id, batch, batch),
        )
        if not committed:
            return
        sql.run(
            "UPDATE claim_outbox SET state = CASE state WHEN 'staged' THEN 'queued' ELSE 'held' END, updated = ?"
            " WHERE batch = ? AND state IN ('staged', 'staged-held')",
            (time.time(), batch),
        )
        # Resources the batch gives a next version: the older versions stop being the newest. Row by row on the
        # primary key, so that the plan never depends on the database's statistics.
        later = sql.rows(
            "SELECT type, id, MAX(version) FROM resources WHERE batch = ? AND version > 1 GROUP BY type, id",
            (batch,),
        )
        if later:
            sql.many(
                "UPDATE resources SET newest = 0 WHERE type = ? AND id = ? AND version < ? AND newest = 1",
                later,
            )

    def discard(self, batch: str) -> None:
        """Delete the batch's pending rows, and the key of a patient that has no rows left (a refused first write)."""
        with self._db.write() as sql:
            patients = [
                p
                for (p,) in sql.rows(
                    "SELECT DISTINCT patient FROM resources WHERE batch = ? AND state = 'pending'", (batch,)
                )
            ]
            sql.run(
                "DELETE FROM identifiers WHERE (type, id, version) IN"
                " (SELECT type, id, version FROM resources WHERE batch = ? AND state = 'pending')",
                (batch,),
            )
            sql.run("DELETE FROM resources WHERE batch = ? AND state = 'pending'", (batch,))
            sql.run("DELETE FROM claim_outbox WHERE batch = ? AND state IN ('staged', 'staged-held')", (batch,))
            for patient in sorted(patients):
                self._drop_unused_key(sql, patient)

    def pending_batches(self, older_than_s: float | None = None) -> list[str]:
        """Batches staged and neither committed nor discarded; with `older_than_s`, only those staged that long ago
        (a gateway that shares the store with other live processes should not settle their batches in flight)."""
        since = time.time() - older_than_s if older_than_s is not None else None
        with self._db.read() as sql:
            if since is None:
                found = sql.rows("SELECT DISTINCT batch FROM resources WHERE state = 'pending'")
            else:
                found = sql.rows(
                    "SELECT DISTINCT batch FROM resources WHERE state = 'pending' AND staged < ?", (since,)
                )
        return [str(r[0]) for r in found]

    def batch_rows(self, batch: str) -> list[tuple[str, str, int]]:
        with self._db.read() as sql:
            found = sql.rows("SELECT type, id, version FROM resources WHERE batch = ? ORDER BY type, id", (batch,))
        return [(str(r[0]), str(r[1]), int(r[2])) for r in found]

    # ----- the claim outbox ------------------------------------------------------------------------------------

    def claims_due(self, limit: int, retry_after_s: float) -> list[OutboxClaim]:
        """Queued claims to submit, taken for `retry_after_s`: those never tried, and those whose last try (or
        taking) is `retry_after_s` old. Taking them keeps the org's other processes from trying the same claims at
        the same time (it would be safe, the chain files a claim once, but wasted); one that dies holding them
        leaves them due again after `retry_after_s`."""
        now = time.time()
        with self._db.write() as sql:
            rows = sql.rows(
                OUTBOX + " WHERE state = 'queued' AND ((attempts = 0 AND reason IS NULL) OR updated < ?)"
                f" ORDER BY updated LIMIT ?{self._db.take_lock}",
                (now - retry_after_s, limit),
            )
            if rows:
                sql.many(
                    f"UPDATE claim_outbox SET reason = '{BEING_SUBMITTED}', updated = ? WHERE key = ?",
                    [(now, r[0]) for r in rows],
                )
        return [_outbox_claim(r) for r in rows]

    def claims_queued(self) -> int:
        """How many claims of committed bundles wait to be submitted on chain (the outbox's backlog)."""
        with self._db.read() as sql:
            row = sql.one("SELECT COUNT(*) FROM claim_outbox WHERE state = 'queued'", ())
        return int(row[0]) if row else 0

    def outbox_claim(self, claim_id: str) -> OutboxClaim | None:
        """The outbox entry of a Claim held here (None: the claim was not filed through the outbox)."""
        with self._db.read() as sql:
            row = sql.one(OUTBOX + " WHERE id = ? AND state NOT IN ('staged', 'staged-held')", (claim_id,))
        return _outbox_claim(row) if row else None

    def claim_settled(self, key: str, state: str, tx_id: str | None = None, reason: str | None = None) -> None:
        """A queued claim is submitted, refused or held for good."""
        with self._db.write() as sql:
            sql.run(
                "UPDATE claim_outbox SET state = ?, tx_id = ?, reason = ?, updated = ?"
                " WHERE key = ? AND state = 'queued'",
                (state, tx_id, reason, time.time(), key),
            )

    def claim_retry(self, key: str, reason: str) -> None:
        """A try whose outcome is unknown or that could not reach the ledger: tried again later."""
        with self._db.write() as sql:
            sql.run(
                "UPDATE claim_outbox SET attempts = attempts + 1, reason = ?, updated = ?"
                " WHERE key = ? AND state = 'queued'",
                (reason, time.time(), key),
            )

    # ----- reads -----------------------------------------------------------------------------------------------

    def head(self, type_: str, id_: str) -> tuple[int, str] | None:
        """(newest committed version, patient) of a resource, or None."""
        with self._db.read() as sql:
            row = sql.one(
                "SELECT version, patient FROM resources WHERE type = ? AND id = ? AND state = 'committed'"
                " ORDER BY version DESC LIMIT 1",
                (type_, id_),
            )
        return (int(row[0]), str(row[1])) if row else None

    def read(self, type_: str, id_: str, version: int | None = None) -> Stored | None:
        sql_text = STORED + " WHERE r.type = ? AND r.id = ? AND r.state = 'committed'"
        args: tuple[object, ...] = (type_, id_)
        if version is not None:
            sql_text += " AND r.version = ?"
            args += (version,)
        with self._db.read() as sql:
            row = sql.one(sql_text + " ORDER BY r.version DESC LIMIT 1", args)
        return self._opener()(row) if row else None

    def history(self, type_: str, id_: str) -> list[Stored]:
        with self._db.read() as sql:
            rows = sql.rows(
                STORED + " WHERE r.type = ? AND r.id = ? AND r.state = 'committed' ORDER BY r.version DESC",
                (type_, id_),
            )
        return list(map(self._opener(), rows))

    def patient_resources(self, patient: str) -> list[Stored]:
        """The newest committed version of every resource of the patient, in (lastUpdated, type, id) order."""
        with self._db.read() as sql:
            rows = sql.rows(
                STORED + " WHERE r.patient = ? AND r.newest = 1 ORDER BY r.last_updated, r.type, r.id", (patient,)
            )
        return list(map(self._opener(), rows))

    def patient_page(self, patient: str, count: int, after: Cursor | None = None) -> Page:
        """A page of `patient_resources`: `count` resources after the cursor."""
        where, args = "r.patient = ? AND r.newest = 1", [patient]
        with self._db.read() as sql:
            (total,) = sql.one("SELECT COUNT(*) FROM resources r WHERE " + where, args) or (0,)
            if after is not None:
                where += " AND (r.last_updated, r.type, r.id) > (?, ?, ?)"
                args += [after.last_updated, after.type, after.id]
            rows = sql.rows(
                STORED + f" WHERE {where} ORDER BY r.last_updated, r.type, r.id LIMIT ?", [*args, count + 1]
            )
        return self._page(rows, count, int(total))

    def with_identifier(self, type_: str, system: str, value: str) -> list[tuple[str, int]]:
        """(id, version) of the newest committed versions of `type_` resources that carry the identifier."""
        with self._db.read() as sql:
            rows = sql.rows(
                "SELECT i.id, i.version FROM identifiers i JOIN resources r"
                " ON r.type = i.type AND r.id = i.id AND r.version = i.version"
                " WHERE i.token = ? AND i.type = ? AND r.newest = 1",
                (self._token(type_, system, value), type_),
            )
        return [(str(r[0]), int(r[1])) for r in rows]

    def search(self, query: Query) -> tuple[int, list[Stored]]:
        """(total count, the requested page), as `search_page`."""
        page = self.search_page(query)
        return page.total, page.items

    def search_page(self, query: Query) -> Page:
        """The newest committed versions matching the query, in (lastUpdated, id) order: `query.count` of them after
        `query.after`, the total that match, and the cursor of the next page. A page costs the same wherever it is."""
        where = ["r.type = ?", "r.newest = 1"]
        args: list[object] = [query.type]
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
            if not query.ids:
                return Page([], 0, None)
            where.append(f"r.id IN ({','.join('?' * len(query.ids))})")
            args += list(query.ids)
        with self._db.read() as sql:
            (total,) = sql.one("SELECT COUNT(*) FROM resources r WHERE " + " AND ".join(where), args) or (0,)
            if query.after is not None:
                where.append("(r.last_updated, r.id) > (?, ?)")
                args += [query.after.last_updated, query.after.id]
            rows = sql.rows(
                STORED + " WHERE " + " AND ".join(where) + " ORDER BY r.last_updated, r.id LIMIT ?",
                [*args, query.count + 1],
            )
        return self._page(rows, query.count, int(total))

    def patient_of_pseudonym(self, patient: str) -> str | None:
        """The id of this store's Patient resource filed under the pseudonym, if any."""
        with self._db.read() as sql:
            row = sql.one(
                "SELECT id FROM resources WHERE type = 'Patient' AND patient = ? AND state = 'committed' LIMIT 1",
                (patient,),
            )
        return str(row[0]) if row else None

    # ----- helpers ---------------------------------------------------------------------------------------------

    def ledger_key(self, type_: str, id_: str) -> str:
        """The opaque key a resource (or claim, or consent) has on chain: a keyed hash of its type and id under this
        org's own key, so a client-chosen id (which can be an MRN) never reaches the ledger, and two orgs' equal ids
        never share a key."""
        return hmac.new(self._ledger_key, f"{type_}/{id_}".encode(), hashlib.sha256).hexdigest()

    def _token(self, type_: str, system: str, value: str) -> str:
        return hmac.new(self._index_key, f"{type_}|{system}|{value}".encode(), hashlib.sha256).hexdigest()

    def _page(self, rows: list[tuple[Any, ...]], count: int, total: int) -> Page:
        items = list(map(self._opener(), rows[:count]))
        more = len(rows) > count and count > 0
        return Page(items, total, Cursor.after(items[-1]) if more else None)

    def _opener(self) -> Callable[[tuple[Any, ...]], Stored]:
        """Decrypts rows of the `STORED` select, unwrapping each patient's key once."""
        keys: dict[str, bytes] = {}

        def open_row(row: tuple[Any, ...]) -> Stored:
            type_, id_, version, patient = str(row[0]), str(row[1]), int(row[2]), str(row[3])
            wrapped, erased_at = row[8], row[9]
            if wrapped is None:
                if erased_at is not None:
                    raise PatientErased(f"the patient's data was erased at {erased_at}")
                raise Tampered(f"{type_}/{id_} has no data key")
            key = keys.get(patient)
            if key is None:
                key = keys[patient] = self._unwrap(patient, bytes(wrapped))
            try:
                content = AESGCM(key).decrypt(bytes(row[5]), bytes(row[6]), _aad(type_, id_, version))
            except InvalidTag:
                raise Tampered(
                    f"{type_}/{id_}/_history/{version} fails authentication: it was changed in the store"
                ) from None
            return Stored(type_, id_, version, patient, str(row[4]), content, None if row[7] is None else str(row[7]))

        return open_row


BEING_SUBMITTED = "being submitted"  # the reason of a queued claim one process is submitting now
OUTBOX = "SELECT key, id, patient, digest, state, attempts, tx_id, reason FROM claim_outbox"


def _outbox_claim(row: tuple[Any, ...]) -> OutboxClaim:
    key, id_, patient, digest, state, attempts, tx_id, reason = row
    return OutboxClaim(str(key), str(id_), str(patient), str(digest), str(state), int(attempts), tx_id, reason)


def _aad(type_: str, id_: str, version: int) -> bytes:
    return f"{type_}/{id_}/{version}".encode()
