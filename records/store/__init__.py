"""The custodian's off-chain store: FHIR content encrypted at rest, one data key per patient.

- Content: AES-256-GCM with a random 96-bit nonce; the associated data binds a ciphertext to its
  `Type/id/version`, so rows cannot be swapped unnoticed.
- Keys: each patient's 256-bit data key is stored wrapped (AES-256-GCM) by the org's master key, with the patient's
  pseudonym as associated data. The digest key, which keys the digests on chain, is derived from the data key:
  destroying the data key (erasure) makes the content unreadable and the digests unlinkable. A patient has ONE data
  key however many processes write their first rows at once: it is saved, insert-or-read, the first time a digest
  key is asked for (see `Store.digest_key` for what a refused request leaves and how it goes away).
- Writes are two-phase with the ledger: rows are staged `pending`, the bundle is registered on chain, then the rows
  become `committed`, or are discarded when the ledger refuses. Reads see committed rows only. A crash in between
  leaves pending rows that `pending_batches` lists for reconciliation against the ledger.
- Listings (search, a patient's record) are pages in (lastUpdated, type, id) order that start after a `Cursor`,
  read through partial indexes of the newest committed versions: a page costs the same at the start and at the end
  of a large record, and the total is an index count.

One `Store` class, two backends (`records.store.backend`): SQLite in the run folder, the embedded default
(`records.store.sqlite`), and PostgreSQL (`records.store.postgres`), chosen by the location the store is opened
with: a path or `sqlite:///path`, or `postgresql://user@host:port/database`. Either is safe for several processes
of the org (gateways, workers) writing at once.
"""

from records.errors import PatientErased, Tampered, VersionTaken
from records.store.core import Store, open_backend
from records.store.model import Cursor, OutboxClaim, Page, Query, Row, Stored

__all__ = [
    "Cursor",
    "OutboxClaim",
    "Page",
    "PatientErased",
    "Query",
    "Row",
    "Store",
    "Stored",
    "Tampered",
    "VersionTaken",
    "open_backend",
]
