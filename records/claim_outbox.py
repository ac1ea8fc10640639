"""Claims filed inside a transaction bundle: each submitted on the claims channel right after the bundle commits.

A Fabric transaction runs on one channel. A bundle's records are registered in one Records transaction on
`providers`; each Claim in it needs a Claims transaction of its own on `claims`. So the bundle's claims are staged
with its rows as outbox entries, which become `queued` in the same database transaction that commits the rows (and
vanish with them when the ledger refuses the bundle). A submitter then files each queued claim: at once when the
bundle commits, and again every few seconds (the gateway's reconciler) until the chain has answered.

Exactly once: before each retry, and after any refusal, the chain is asked whether the claim's key is there, and the
Claims contract files a key only once, so tries that overlap (a retry after an unknown outcome, two gateway
processes) file the claim once; whether it was filed is always read from the chain, never guessed from an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from ledger.contracts import Ledger
from ledger.errors import LedgerNotFound, LedgerRefused
from records import fhir_claim
from records.errors import FhirInvalid, PatientErased
from records.store import OutboxClaim, Query, Store

log = logging.getLogger("careledger.records")

RETRY_AFTER_S = 5.0
BATCH = 200


MAX_COVERAGES = 100  # of one patient, looked at to find a claim's payer


def held_here(store: Store, patient: str, written: Sequence[tuple[dict[str, Any], str]] = ()) -> fhir_claim.HeldHere:
    """What a claim of `patient` may point at to name its payer: the resources written with it (`written`: resource
    and the patient it is filed under, as the write assigned them), then what the store holds."""
    by_ref = {f"{r['resourceType']}/{r['id']}": r for r, _ in written}

    def resource(reference: str) -> dict[str, Any] | None:
        if reference in by_ref:
            return by_ref[reference]
        rtype, _, rid = reference.partition("/")
        stored = store.read(rtype, rid)
        return json.loads(stored.content) if stored is not None else None

    def coverages() -> list[dict[str, Any]]:
        mine = [r for r, p in written if r["resourceType"] == "Coverage" and p == patient]
        ids = {r["id"] for r in mine}
        _, found = store.search(Query("Coverage", patient=patient, count=MAX_COVERAGES))
        return mine + [c for s in found if (c := json.loads(s.content))["id"] not in ids]

    return fhir_claim.HeldHere(resource, coverages)


class ClaimOutbox:
    def __init__(self, store: Store, ledger: Ledger, payers: fhir_claim.PayerDirectory) -> None:
        self.store = store
        self.ledger = ledger
        self.payers = payers
        self._running: asyncio.Task[dict[str, int]] | None = None

    def kick(self) -> None:
        """Submit what is due now, in the background, unless a run is already under way (it picks it up)."""
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(self._drain())

    async def idle(self) -> None:
        """Wait for the background run `kick` started, if any."""
        if self._running is not None:
            await asyncio.shield(self._running)

    async def _drain(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        try:
            while True:
                round_ = await self.submit_due(retry_after_s=RETRY_AFTER_S)
                for state, n in round_.items():
                    counts[state] = counts.get(state, 0) + n
                if sum(round_.values()) < BATCH or round_.get("queued", 0):
                    return counts
        except Exception as e:  # the store is unreachable: the reconciler's next round tries again
            log.warning("submitting queued claims failed", extra={"error": type(e).__name__})
            return counts

    async def submit_due(self, retry_after_s: float = RETRY_AFTER_S) -> dict[str, int]:
        """Try every due claim once, together (so the ledger can file them in one transaction); counts by the state
        each is left in: submitted, refused, held, or queued (to try again)."""
        due = self.store.claims_due(BATCH, retry_after_s)
        states = await asyncio.gather(*(self._submit(c) for c in due))
        counts: dict[str, int] = {}
        for state in states:
            counts[state] = counts.get(state, 0) + 1
        return counts

    async def _submit(self, claim: OutboxClaim) -> str:
        try:
            # A claim tried (or taken) before may be on chain already; a first try need not ask, which saves a round
            # trip per claim of a bundle: should another try have come first after all, the contract refuses the
            # key and the chain is asked then.
            first_try = claim.attempts == 0 and claim.reason is None
            filed = None if first_try else await self._on_chain(claim.key)
            if filed is not None:
                return self._settled(claim, "submitted", tx_id=str(filed.get("txId") or ""))
            arguments = self._arguments(claim)
            if arguments is None:
                return self._settled(claim, "held", reason="the claim names no payer of the consortium")
            try:
                committed = await self.ledger.submit_claim(arguments.submission, arguments.detail)
            except LedgerRefused as refusal:
                filed = await self._on_chain(claim.key)  # a concurrent try may have filed it
                if filed is not None:
                    return self._settled(claim, "submitted", tx_id=str(filed.get("txId") or ""))
                return self._settled(claim, "refused", reason=refusal.message)
            return self._settled(claim, "submitted", tx_id=committed.tx_id)
        except _Refused as e:
            return self._settled(claim, "refused", reason=str(e))
        except Exception as e:  # unreachable, timed out, outcome unknown: the chain is asked again next time
            self.store.claim_retry(claim.key, type(e).__name__)
            return "queued"

    async def _on_chain(self, key: str) -> dict[str, Any] | None:
        try:
            return await self.ledger.claim(key)
        except LedgerNotFound:
            return None

    def _arguments(self, claim: OutboxClaim) -> fhir_claim.ClaimForLedger | None:
        try:
            stored = self.store.read("Claim", claim.id, 1)
        except PatientErased:
            raise _Refused("the patient's data was erased before the claim was submitted") from None
        if stored is None:
            raise _Refused("the claim is no longer held here")
        try:
            held = held_here(self.store, claim.patient)
            return fhir_claim.for_ledger(
                json.loads(stored.content), claim.key, claim.patient, claim.digest, self.payers, held
            )
        except FhirInvalid as e:
            raise _Refused("; ".join(i.diagnostics for i in e.issues)) from None
        except PatientErased:
            raise _Refused("the patient's data was erased before the claim was submitted") from None

    def _settled(self, claim: OutboxClaim, state: str, tx_id: str | None = None, reason: str | None = None) -> str:
        self.store.claim_settled(claim.key, state, tx_id, reason)
        log.info("claim from a bundle settled", extra={"claim": claim.key, "state": state})
        return state


class _Refused(Exception):
    """The claim cannot be submitted as it is held here."""
