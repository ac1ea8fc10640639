"""What the chain says about one org's claims and its patients' consents, kept from the chain's own events so that a
console can page, count and chart them without reading the chain again.

The contracts answer one claim or one consent by key; they have no "every claim of this provider" query, and a
range scan of the public state would read other members' claims too. So each org's gateway follows its own peer's
chaincode events (`follow`) and keeps, in a small SQLite file of its own, the claims it is a party to (provider or
insurer), each claim's events with their transaction ids, and the consent grants and revocations of the providers
channel. Applying an event twice changes nothing, so following resumes from the block of the last event kept.
Everything here is what the org's own peer already holds; nothing is PHI (patients are pseudonyms).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fabric_gateway import AsyncNetwork, FabricError
from ledger.contracts import CLAIMS, PROVIDERS

log = logging.getLogger("careledger.ledger")

STATES = ("submitted", "pended", "adjudicated", "denied", "paid", "cancelled")
PERCENTILES = (50, 90)

SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    claim_id TEXT PRIMARY KEY, use TEXT, provider TEXT, insurer TEXT, state TEXT, outcome TEXT,
    service_date TEXT, currency TEXT, total_cents INTEGER, approved_cents INTEGER, paid_cents INTEGER,
    submitted_at TEXT, adjudicated_at TEXT, paid_at TEXT, cancelled_at TEXT, last_block INTEGER);
CREATE INDEX IF NOT EXISTS claims_by_state ON claims (state, submitted_at, claim_id);
CREATE INDEX IF NOT EXISTS claims_by_time ON claims (submitted_at, claim_id);
CREATE TABLE IF NOT EXISTS claim_events (
    claim_id TEXT, block INTEGER, tx_id TEXT, event TEXT, at TEXT, state TEXT, outcome TEXT,
    PRIMARY KEY (claim_id, tx_id, event));
CREATE TABLE IF NOT EXISTS consents (
    consent_id TEXT PRIMARY KEY, patient TEXT, grantee TEXT, purpose TEXT, scope TEXT, period_start TEXT,
    period_end TEXT, status TEXT, granted_by TEXT, granted_at TEXT, grant_tx TEXT, revoked_at TEXT,
    revoked_by TEXT, revoke_tx TEXT);
CREATE INDEX IF NOT EXISTS consents_by_patient ON consents (patient, granted_at);
CREATE TABLE IF NOT EXISTS followed (channel TEXT PRIMARY KEY, block INTEGER);
"""


@dataclass(frozen=True)
class ClaimRow:
    claim_id: str
    use: str
    provider: str
    insurer: str
    state: str
    outcome: str
    service_date: str
    currency: str
    total_cents: int
    approved_cents: int
    paid_cents: int
    submitted_at: str
    adjudicated_at: str
    paid_at: str


@dataclass(frozen=True)
class ClaimPage:
    claims: list[ClaimRow]
    next_cursor: str  # "" on the last page


@dataclass(frozen=True)
class ClaimEvent:
    block: int
    tx_id: str
    event: str
    at: str
    state: str
    outcome: str


@dataclass(frozen=True)
class DayFigures:
    day: str  # YYYY-MM-DD
    submitted: int
    decided: int  # adjudicated (any outcome) that day
    p50_hours: float | None  # turnaround, submission to adjudication, of the claims decided that day
    p90_hours: float | None


@dataclass(frozen=True)
class ConsentRow:
    consent_id: str
    patient: str
    grantee: str
    purpose: str
    scope: str
    period_start: str
    period_end: str
    status: str
    granted_by: str
    granted_at: str
    grant_tx: str
    revoked_at: str
    revoked_by: str
    revoke_tx: str


def claim_state(claim: Mapping[str, Any]) -> str:
    """The queue a claim is in: its status, except that a denial is its own queue."""
    status = str(claim.get("status") or "")
    if status in ("adjudicated", "decided") and claim.get("outcome") == "denied":
        return "denied"
    if status == "decided":  # a prior authorisation approved
        return "adjudicated"
    return "submitted" if status == "appealed" else status


def _claims_in(payload: Any) -> list[dict[str, Any]]:
    """The claims an event carries: one Claim, or a batch's `claims`."""
    if isinstance(payload, dict) and "claimId" in payload and "status" in payload:
        return [payload]
    if isinstance(payload, dict) and isinstance(payload.get("claims"), list):
        return [c for c in payload["claims"] if isinstance(c, dict)]
    return []


def _event_time(claim: Mapping[str, Any], state: str) -> str:
    field = {"submitted": "submittedAt", "paid": "paidAt", "cancelled": "cancelledAt"}.get(state, "adjudicatedAt")
    return str(claim.get(field) or claim.get("decidedAt") or claim.get("submittedAt") or "")


class ActivityIndex:
    """One org's claims and its channel's consents, as the chain's events told them."""

    def __init__(self, path: Path | str, msp: str) -> None:
        self.msp = msp
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # Not synced at every commit (an fsync per chain event held up the gateway's event loop): the index is made
        # from the chain's events and resumes from the block its last commit kept with them, so a commit lost to a
        # power cut is only replayed.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ----- following --------------------------------------------------------------------------------------------

    def resume_block(self, channel: str) -> int:
        """The block to follow a channel from: the one of the last event kept (events apply idempotently)."""
        row = self._db.execute("SELECT block FROM followed WHERE channel = ?", (channel,)).fetchone()
        return int(row["block"]) if row else 0

    def apply(self, channel: str, block: int, tx_id: str, event: str, payload: bytes) -> None:
        """Keep what one chaincode event says, if it concerns this org; remember the block either way."""
        try:
            body = json.loads(payload) if payload else None
        except ValueError:
            body = None
        with self._tx() as db:
            if channel == CLAIMS and event.startswith("Claims."):
                self._apply_claims(db, block, tx_id, event, body)
            elif channel == PROVIDERS and event in ("Consent.Granted", "Consent.Revoked") and isinstance(body, dict):
                self._apply_consent(db, tx_id, event, body)
            db.execute(
                "INSERT INTO followed VALUES (?, ?) ON CONFLICT (channel) DO UPDATE SET block = excluded.block",
                (channel, block),
            )

    def _ours(self, claim: Mapping[str, Any]) -> bool:
        return self.msp in (claim.get("provider"), claim.get("insurer"))

    def _apply_claims(self, db: sqlite3.Connection, block: int, tx_id: str, event: str, body: Any) -> None:
        if event == "Claims.PaidBatch" and isinstance(body, dict):
            self._apply_payment(db, block, tx_id, event, body)
            return
        for claim in _claims_in(body):
            if self._ours(claim):
                self._upsert_claim(db, block, claim)
                state = claim_state(claim)
                row = (claim["claimId"], block, tx_id, event, _event_time(claim, state), state, claim.get("outcome"))
                db.execute("INSERT OR IGNORE INTO claim_events VALUES (?, ?, ?, ?, ?, ?, ?)", row)

    def _upsert_claim(self, db: sqlite3.Connection, block: int, c: Mapping[str, Any]) -> None:
        row = (
            c["claimId"], c.get("use") or "claim", c.get("provider"), c.get("insurer"), claim_state(c),
            c.get("outcome") or "", c.get("serviceDate") or "", c.get("currency") or "", c.get("totalCents") or 0,
            c.get("approvedCents") or 0, c.get("paidCents") or 0, c.get("submittedAt") or "",
            c.get("adjudicatedAt") or c.get("decidedAt") or "", c.get("paidAt") or "", c.get("cancelledAt") or "",
            block,
        )  # fmt: skip
        db.execute(_UPSERT_CLAIM, row)

    def _apply_payment(
        self, db: sqlite3.Connection, block: int, tx_id: str, event: str, pay: Mapping[str, Any]
    ) -> None:
        if not self._ours(pay):
            return
        paid_at = str(pay.get("paidAt") or "")
        for line in pay.get("lines") or []:
            claim_id, amount = str(line.get("claimId")), int(line.get("amountCents") or 0)
            db.execute(
                "UPDATE claims SET state = 'paid', paid_at = ?, paid_cents = ?, last_block = ? "
                "WHERE claim_id = ? AND last_block <= ?",
                (paid_at, amount, block, claim_id, block),
            )
            row = (claim_id, block, tx_id, event, paid_at, "paid", "")
            db.execute("INSERT OR IGNORE INTO claim_events VALUES (?, ?, ?, ?, ?, ?, ?)", row)

    def _apply_consent(self, db: sqlite3.Connection, tx_id: str, event: str, c: Mapping[str, Any]) -> None:
        if event == "Consent.Revoked":
            db.execute(
                "UPDATE consents SET status = 'revoked', revoked_at = ?, revoked_by = ?, revoke_tx = ? "
                "WHERE consent_id = ?",
                (c.get("revokedAt") or "", c.get("revokedBy") or "", tx_id, c.get("consentId")),
            )
            return
        row = (
            c.get("consentId"), c.get("patient"), c.get("grantee"), c.get("purpose"), ",".join(c.get("scope") or []),
            c.get("start") or "", c.get("end") or "", c.get("status") or "active", c.get("grantedBy") or "",
            c.get("grantedAt") or "", tx_id, "", "", "",
        )  # fmt: skip
        db.execute("INSERT OR IGNORE INTO consents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)

    # ----- reading ----------------------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Claims per queue (every state, zero included)."""
        found = dict.fromkeys(STATES, 0)
        for row in self._db.execute("SELECT state, COUNT(*) AS n FROM claims GROUP BY state"):
            found[str(row["state"])] = int(row["n"])
        return found

    def queue(self, state: str | None, limit: int, cursor: str = "") -> ClaimPage:
        """Claims of one queue (None: every queue), newest submission first, `limit` a page. The cursor is the last
        row's (submitted_at, claim_id), so every page costs the same."""
        where, args = ["1 = 1"], []
        if state:
            where.append("state = ?")
            args.append(state)
        if cursor:
            at, _, claim_id = cursor.partition("|")
            where.append("(submitted_at, claim_id) < (?, ?)")
            args += [at, claim_id]
        sql = f"SELECT * FROM claims WHERE {' AND '.join(where)} ORDER BY submitted_at DESC, claim_id DESC LIMIT ?"
        rows = [_claim_row(r) for r in self._db.execute(sql, (*args, limit + 1))]
        more = len(rows) > limit
        rows = rows[:limit]
        return ClaimPage(rows, f"{rows[-1].submitted_at}|{rows[-1].claim_id}" if more else "")

    def claim(self, claim_id: str) -> ClaimRow | None:
        row = self._db.execute("SELECT * FROM claims WHERE claim_id = ?", (claim_id,)).fetchone()
        return _claim_row(row) if row else None

    def timeline(self, claim_id: str) -> list[ClaimEvent]:
        """A claim's events, in chain order."""
        rows = self._db.execute(
            "SELECT block, tx_id, event, at, state, outcome FROM claim_events WHERE claim_id = ? ORDER BY block, at",
            (claim_id,),
        )
        return [
            ClaimEvent(int(r["block"]), r["tx_id"], r["event"], r["at"], r["state"], r["outcome"] or "") for r in rows
        ]

    def daily(self, since_day: str) -> list[DayFigures]:
        """Per day from `since_day` (YYYY-MM-DD): claims submitted, claims decided, and the turnaround percentiles
        of those decided (nearest rank), computed by SQLite over the rows, not in memory."""
        submitted = {
            str(r["day"]): int(r["n"])
            for r in self._db.execute(
                "SELECT substr(submitted_at, 1, 10) AS day, COUNT(*) AS n FROM claims "
                "WHERE submitted_at >= ? GROUP BY day",
                (since_day,),
            )
        }
        decided = {str(r["day"]): r for r in self._db.execute(_TURNAROUND_SQL, (since_day,))}
        days = sorted(set(submitted) | set(decided))
        return [_day(d, submitted.get(d, 0), decided.get(d)) for d in days]

    def consents(self, patients: list[str]) -> list[ConsentRow]:
        """Every consent recorded for these pseudonyms, oldest grant first."""
        if not patients:
            return []
        marks = ",".join("?" * len(patients))
        rows = self._db.execute(
            f"SELECT * FROM consents WHERE patient IN ({marks}) ORDER BY granted_at, consent_id", patients
        )
        return [ConsentRow(**{k: str(r[k] or "") for k in r.keys()}) for r in rows]  # noqa: SIM118


_UPSERT_CLAIM = """
INSERT INTO claims VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (claim_id) DO UPDATE
SET state = excluded.state, outcome = excluded.outcome, approved_cents = excluded.approved_cents,
    paid_cents = excluded.paid_cents, adjudicated_at = excluded.adjudicated_at, paid_at = excluded.paid_at,
    cancelled_at = excluded.cancelled_at, last_block = excluded.last_block
WHERE last_block <= excluded.last_block
"""

_TURNAROUND_SQL = """
WITH t AS (
    SELECT substr(adjudicated_at, 1, 10) AS day,
           (julianday(adjudicated_at) - julianday(submitted_at)) * 24.0 AS hours
    FROM claims WHERE adjudicated_at != '' AND submitted_at != '' AND adjudicated_at >= ?
), r AS (
    SELECT day, hours, ROW_NUMBER() OVER (PARTITION BY day ORDER BY hours) AS rn,
           COUNT(*) OVER (PARTITION BY day) AS n
    FROM t
)
SELECT day, MAX(n) AS n,
       MAX(CASE WHEN rn = (50 * n + 99) / 100 THEN hours END) AS p50,
       MAX(CASE WHEN rn = (90 * n + 99) / 100 THEN hours END) AS p90
FROM r GROUP BY day
"""


def _day(day: str, submitted: int, decided: sqlite3.Row | None) -> DayFigures:
    if decided is None:
        return DayFigures(day, submitted, 0, None, None)
    return DayFigures(day, submitted, int(decided["n"]), float(decided["p50"]), float(decided["p90"]))


def _claim_row(r: sqlite3.Row) -> ClaimRow:
    return ClaimRow(
        claim_id=r["claim_id"], use=r["use"], provider=r["provider"], insurer=r["insurer"], state=r["state"],
        outcome=r["outcome"], service_date=r["service_date"], currency=r["currency"], total_cents=r["total_cents"],
        approved_cents=r["approved_cents"], paid_cents=r["paid_cents"], submitted_at=r["submitted_at"],
        adjudicated_at=r["adjudicated_at"], paid_at=r["paid_at"],
    )  # fmt: skip


async def follow(network: AsyncNetwork, chaincode: str, index: ActivityIndex, retry_after_s: float = 2.0) -> None:
    """Keep `index` up to date with the channel's chaincode events, for ever: from the block of the last event kept,
    and again after a broken stream. Cancel the task to stop."""
    while True:
        start = index.resume_block(network.name)
        try:
            async for event in network.chaincode_events(chaincode, start_block=start):
                index.apply(network.name, event.block_number, event.tx_id, event.name, event.payload)
        except FabricError as e:
            log.warning("following chain events failed", extra={"channel": network.name, "error": str(e)[:200]})
        await asyncio.sleep(retry_after_s)
