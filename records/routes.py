"""How each kind of resource reaches the ledger: a table from resource type to route.

| route | resource types | ledger transaction | who keeps them |
|---|---|---|---|
| records | every other clinical type | Records:Register, one per bundle, on `providers` | providers |
| claim | Claim | Claims:Submit (new) or Claims:Cancel (status cancelled), on `claims` | providers |
| consent | Consent | Consent:Grant (new, active) or Consent:Revoke (status inactive), on `providers` | providers |
| held | Coverage, ClaimResponse, PaymentReconciliation, Subscription, Bundle | none: kept here only | both kinds |

A claim or consent is a transaction of its own, so it is posted on its own. Each route also knows how to ask the
ledger which digest the ledger holds (`$verify`). Held Subscriptions and Bundles are topic-based subscriptions and
the notifications kept for them (`records.subscriptions`).
The ledger names each resource, claim and consent by its opaque key (`records.store.Store.ledger_key`), never by
the id a client chose.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ledger.contracts import Committed, Ledger
from ledger.transport import OnPrepared
from records import fhir_claim, fhir_consent
from records.errors import FhirInvalid, Issue

LedgerCall = Callable[[OnPrepared], Awaitable[Committed]]  # given where to keep the signed transaction


@dataclass(frozen=True)
class Ledgers:
    """Where a write goes: the contracts, and the payer directory that says which insurer a claim is for."""

    ledger: Ledger
    payers: fhir_claim.PayerDirectory
    held: fhir_claim.HeldHere = fhir_claim.NOTHING_HELD  # what a claim may point at to name its payer


@dataclass(frozen=True)
class OnChain:
    """What the ledger holds for a stored version: the digest registered, the transaction that did it."""

    digest: str
    tx_id: str
    first_version_only: bool  # the chain keeps the first version's digest; later versions change only a status


class Route:
    name = ""
    alone = False  # the write is a ledger transaction of its own: one resource per request

    def stamp(self, resource: dict[str, Any], key: str) -> dict[str, Any]:
        """The resource as stored and digested; a route may add what its ledger record must be found by."""
        return resource

    def call(self, to: Ledgers, resource: dict[str, Any], entries: list[dict[str, Any]]) -> LedgerCall | None:
        """The one ledger transaction that registers the write (None: the resource is only kept here)."""
        raise NotImplementedError

    async def on_chain(self, ledger: Ledger, key: str, version: int) -> OnChain:
        raise NotImplementedError


class RecordsRoute(Route):
    name = "records"

    def call(self, to: Ledgers, resource: dict[str, Any], entries: list[dict[str, Any]]) -> LedgerCall | None:
        return lambda keep: to.ledger.register(entries, keep)

    async def on_chain(self, ledger: Ledger, key: str, version: int) -> OnChain:
        record = await ledger.record(key, version)
        return OnChain(str(record["digest"]), str(record.get("txId", "")), False)


CLAIM_KEY_SYSTEM = "urn:careledger:claim"  # the claim's key on chain, which every claim event carries


class ClaimRoute(Route):
    name = "claim"
    alone = True

    def stamp(self, resource: dict[str, Any], key: str) -> dict[str, Any]:
        """A Claim carries its key on chain as an identifier, so the EHR can match claim events to it."""
        others = [i for i in resource.get("identifier") or [] if i.get("system") != CLAIM_KEY_SYSTEM]
        return {**resource, "identifier": [*others, {"system": CLAIM_KEY_SYSTEM, "value": key}]}

    def call(self, to: Ledgers, resource: dict[str, Any], entries: list[dict[str, Any]]) -> LedgerCall | None:
        e = entries[0]
        if e["version"] == 1:
            claim = fhir_claim.for_ledger(resource, e["resourceKey"], e["patient"], e["digest"], to.payers, to.held)
            if claim is None:
                return None  # it names no payer of the consortium: kept here, not submitted
            return lambda keep: to.ledger.submit_claim(claim.submission, claim.detail, keep)
        if resource.get("status") == "cancelled":
            return lambda keep: to.ledger.cancel_claim(e["resourceKey"], "provider-cancelled", keep)
        raise FhirInvalid([Issue("not-supported", "Claim.status", "a submitted claim can only be cancelled")])

    async def on_chain(self, ledger: Ledger, key: str, version: int) -> OnChain:
        claim = await ledger.claim(key)
        return OnChain(str(claim["digest"]), str(claim.get("txId", "")), True)


class ConsentRoute(Route):
    name = "consent"
    alone = True

    def call(self, to: Ledgers, resource: dict[str, Any], entries: list[dict[str, Any]]) -> LedgerCall | None:
        e = entries[0]
        if e["version"] == 1:
            grant = fhir_consent.grant(resource, e["resourceKey"], e["patient"], e["digest"])
            return lambda keep: to.ledger.grant(grant, keep)
        if fhir_consent.revokes(resource):
            return lambda keep: to.ledger.revoke(e["resourceKey"], e["digest"], keep)
        raise FhirInvalid(
            [Issue("not-supported", "Consent.status", "a granted consent can only be revoked (status inactive)")]
        )

    async def on_chain(self, ledger: Ledger, key: str, version: int) -> OnChain:
        consent = await ledger.consent(key)
        return OnChain(str(consent["documentDigest"]), str(consent.get("txId", "")), True)


class HeldRoute(Route):
    name = "held"

    def call(self, to: Ledgers, resource: dict[str, Any], entries: list[dict[str, Any]]) -> LedgerCall | None:
        return None

    async def on_chain(self, ledger: Ledger, key: str, version: int) -> OnChain:
        raise FhirInvalid(
            [Issue("not-supported", "", "this resource is kept here only; nothing is registered on chain")]
        )


RECORDS, CLAIM, CONSENT, HELD = RecordsRoute(), ClaimRoute(), ConsentRoute(), HeldRoute()

ROUTES: Mapping[str, Route] = {
    "Claim": CLAIM,
    "Consent": CONSENT,
    "Coverage": HELD,  # the insurer keeps its members' coverage; adjudication checks it
    "ClaimResponse": HELD,
    "ExplanationOfBenefit": HELD,  # the insurer's, made from the adjudication on chain; a provider's EHR's are records
    "PaymentReconciliation": HELD,
    # Topic-based subscriptions and the notifications sent for them (records.subscriptions): this org's own business.
    "Subscription": HELD,
    "Bundle": HELD,
}

# What EHRs may post to a member of each kind (held resources the insurer's workers write are not posted).
POSTABLE: Mapping[str, frozenset[str]] = {
    "provider": frozenset({"records", "claim", "consent"}),
    "insurer": frozenset({"held"}),
    "manufacturer": frozenset(),
}


def route_of(resource_type: str) -> Route:
    return ROUTES.get(resource_type, RECORDS)
