"""What goes into the store and what comes out: rows to stage, stored versions, queries and their pages."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass


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


@dataclass(frozen=True, order=True)
class Cursor:
    """Where a page ends, in the order every listing uses: (lastUpdated, type, id) of its last resource. The next
    page starts after it, so a page costs the same wherever it is, and resources added meanwhile (a later
    lastUpdated) are not skipped and do not shift what follows. Opaque to clients: `encode` / `decode`."""

    last_updated: str
    type: str
    id: str

    @classmethod
    def after(cls, stored: Stored) -> Cursor:
        return cls(stored.last_updated, stored.type, stored.id)

    def encode(self) -> str:
        raw = json.dumps([self.last_updated, self.type, self.id], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """The cursor `encode` made; ValueError for anything else."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            parts = json.loads(raw)
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise ValueError("not a paging cursor of this server") from None
        if (
            not isinstance(parts, list)
            or len(parts) != 3
            or not all(isinstance(p, str) and 0 < len(p) <= 128 for p in parts)
        ):
            raise ValueError("not a paging cursor of this server")
        return cls(parts[0], parts[1], parts[2])


@dataclass(frozen=True)
class Query:
    """A search over one resource type; times are `lastUpdated` instants as stored (UTC, ISO 8601). Results come
    in (lastUpdated, id) order, `count` at a time, starting after `after`."""

    type: str
    patient: str | None = None
    updated_from: str | None = None
    updated_before: str | None = None
    ids: tuple[str, ...] | None = None
    count: int = 50
    after: Cursor | None = None


@dataclass(frozen=True)
class Page:
    """One page of a listing: its resources, how many match in all, and where the next page starts (None: last)."""

    items: list[Stored]
    total: int
    next: Cursor | None


@dataclass(frozen=True)
class OutboxClaim:
    """A claim of a committed bundle, waiting for (or past) its own Claims transaction.

    state: `queued` (to submit), `submitted` (on chain: `tx_id`), `refused` (the contract refused it: `reason`),
    `held` (it names no payer of the consortium: kept here only)."""

    key: str
    id: str
    patient: str
    digest: str
    state: str = "queued"
    attempts: int = 0
    tx_id: str | None = None
    reason: str | None = None
