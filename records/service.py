"""This org's FHIR records: the write path (validated entries → encrypted store → one ledger transaction) and the
reads, verification and erasure that follow from it.

A transaction bundle is all-or-nothing across both stores: its rows are staged pending, every entry is registered
in ONE Records:Register transaction, and the rows are committed only when that transaction is valid. When the ledger
refuses, the staged rows are discarded; when the outcome is unknown (timeout), the ledger is asked what happened.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fabric_gateway import CommitUnknown
from ledger.contracts import Committed, Ledger, LedgerNotFound
from records import digests, fhir_claim, fhir_consent
from records.store import Row, Store, Stored
from records.validation import PATIENT_ELEMENT, Entry, FhirInvalid, Issue


@dataclass(frozen=True)
class Written:
    """One stored resource version, as the transaction-response reports it."""

    type: str
    id: str
    version: int
    last_updated: str
    created: bool
    resource: dict[str, Any]


@dataclass(frozen=True)
class Verification:
    ok: bool
    reason: str
    ledger_digest: str
    store_digest: str
    tx_id: str


class LedgerOutcomeUnknown(Exception):
    """The ledger did not confirm the bundle and it is not registered (yet): the client should retry."""


def now_instant() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


ROUTES = {
    "Claim": "claim",  # Claims:Submit on the claims channel (summary public, lines private)
    "Consent": "consent",  # Consent:Grant / Consent:Revoke on the providers channel
    "Coverage": "held",  # insurer-held: stored here, not indexed on chain
    "ClaimResponse": "held",
}
ALLOWED_ROUTES = {"provider": {"records", "claim", "consent"}, "insurer": {"held"}, "manufacturer": set()}


def claim_response_id(claim_id: str) -> str:
    """The id of the insurer's ClaimResponse to a claim, the same at the insurer and at the provider."""
    return f"cr-{claim_id}"


def route_of(resource_type: str) -> str:
    """Which ledger call registers a resource type: "records" (Records:Register) unless listed in ROUTES."""
    return ROUTES.get(resource_type, "records")


@dataclass(frozen=True)
class Custodian:
    """The org this gateway keeps records for, and its kind in the consortium."""

    msp: str
    kind: str  # provider | insurer | manufacturer


class Records:
    def __init__(
        self, store: Store, ledger: Ledger, consortium_key: bytes, mpi_system: str, custodian: Custodian
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.consortium_key = consortium_key
        self.mpi_system = mpi_system
        self.custodian = custodian

    # ----- patients --------------------------------------------------------------------------------------------

    def pseudonym_of_identifier(self, system: str, value: str) -> str:
        return digests.pseudonym(self.consortium_key, system, value)

    def pseudonym_of_patient(self, patient: dict[str, Any], where: str) -> str:
        for ident in patient.get("identifier") or []:
            if ident.get("system") == self.mpi_system and ident.get("value"):
                return self.pseudonym_of_identifier(self.mpi_system, ident["value"])
        raise FhirInvalid(
            [
                Issue(
                    "required",
                    f"{where}.identifier",
                    f"a Patient needs its consortium identifier (system {self.mpi_system})",
                )
            ]
        )

    def pseudonym_of_local_patient(self, patient_id: str) -> str | None:
        head = self.store.head("Patient", patient_id)
        return head[1] if head else None

    # ----- writes ----------------------------------------------------------------------------------------------

    async def transaction(self, entries: list[Entry]) -> list[Written]:
        """Store and register the entries as one unit; raises FhirInvalid, LedgerRefused or a Fabric error."""
        if not entries:
            return []
        route = self._route(entries)
        ids = self._assign_ids(entries)
        patients = self._patients(entries, ids)
        stamp = now_instant()
        batch = uuid.uuid4().hex
        rows: list[Row] = []
        ledger_entries: list[dict[str, Any]] = []
        written: list[Written] = []
        targets = {e.full_url: f"{ids[e.index][0]}/{ids[e.index][1]}" for e in entries if e.full_url}
        for e in entries:
            rtype, rid, version = ids[e.index]
            resource = _rewrite_references(e.resource, targets)
            resource["id"] = rid
            resource["meta"] = {**(resource.get("meta") or {}), "versionId": str(version), "lastUpdated": stamp}
            content = digests.canonical_json(resource)
            patient = patients[e.index]
            digest = digests.resource_digest(self.store.digest_key(patient), resource)
            rows.append(Row(rtype, rid, version, patient, stamp, content, _identifiers(resource)))
            ledger_entries.append(
                {
                    "patient": patient,
                    "resourceType": rtype,
                    "id": rid,
                    "version": version,
                    "digest": digest,
                    "lastUpdated": stamp,
                    "size": len(content),
                }
            )
            written.append(Written(rtype, rid, version, stamp, version == 1, resource))
        submit = self._ledger_call(route, written[0].resource, ledger_entries)
        self.store.stage(batch, rows)
        if submit is None:
            self.store.commit(batch, "")
        else:
            await self._settle(batch, submit)
        return written

    def _route(self, entries: list[Entry]) -> str:
        routes = {route_of(e.resource["resourceType"]) for e in entries}
        if len(routes) > 1 or (len(entries) > 1 and routes & {"claim", "consent"}):
            raise FhirInvalid(
                [
                    Issue(
                        "not-supported",
                        "Bundle.entry",
                        "Claim and Consent each become their own ledger transaction: post them on their own",
                    )
                ]
            )
        route = routes.pop()
        if route not in ALLOWED_ROUTES.get(self.custodian.kind, set()):
            kind = self.custodian.kind
            what = entries[0].resource["resourceType"]
            raise FhirInvalid([Issue("forbidden", "Bundle.entry", f"a {kind} org does not keep {what} here")], 403)
        return route

    def _ledger_call(
        self, route: str, resource: dict[str, Any], entries: list[dict[str, Any]]
    ) -> Callable[[], Awaitable[Committed]] | None:
        """The one ledger transaction that registers the write (None: the resource is only held here)."""
        first = entries[0]
        rid, patient, digest, version = first["id"], first["patient"], first["digest"], first["version"]
        if route == "records":
            return lambda: self.ledger.register(entries)
        if route == "claim":
            if version == 1:
                claim = fhir_claim.for_ledger(resource, rid, patient, digest)
                return lambda: self.ledger.submit_claim(claim.submission, claim.detail)
            if resource.get("status") == "cancelled":
                return lambda: self.ledger.cancel_claim(rid, "provider-cancelled")
            raise FhirInvalid([Issue("not-supported", "Claim.status", "a submitted claim can only be cancelled")])
        if route == "consent":
            if version == 1:
                grant = fhir_consent.grant(resource, rid, patient, digest)
                return lambda: self.ledger.grant(grant)
            if fhir_consent.revokes(resource):
                return lambda: self.ledger.revoke(rid, digest)
            raise FhirInvalid(
                [Issue("not-supported", "Consent.status", "a granted consent can only be revoked (status inactive)")]
            )
        return None

    def _assign_ids(self, entries: list[Entry]) -> dict[int, tuple[str, str, int]]:
        out: dict[int, tuple[str, str, int]] = {}
        for e in entries:
            rtype = e.resource["resourceType"]
            if e.resource_id is None:
                out[e.index] = (rtype, str(uuid.uuid4()), 1)
            else:
                head = self.store.head(rtype, e.resource_id)
                out[e.index] = (rtype, e.resource_id, head[0] + 1 if head else 1)
        return out

    def _patients(self, entries: list[Entry], ids: dict[int, tuple[str, str, int]]) -> dict[int, str]:
        """The pseudonym each entry is filed under: its own (Patient) or its patient element's, which names a
        Patient of this bundle, a Patient held here, or the patient's consortium identifier (logical reference)."""
        by_url = {e.full_url: e for e in entries if e.full_url}
        out: dict[int, str] = {}
        for e in entries:
            where = f"Bundle.entry[{e.index}].resource"
            if e.resource["resourceType"] == "Patient":
                out[e.index] = self.pseudonym_of_patient(e.resource, where)
        for e in entries:
            element = PATIENT_ELEMENT[e.resource["resourceType"]]
            if element is None:
                continue
            where = f"Bundle.entry[{e.index}].resource.{element}"
            value = e.resource.get(element) or {}
            ref = str(value.get("reference") or "")
            ident = value.get("identifier") or {}
            target = by_url.get(ref)
            if target is not None and target.resource["resourceType"] == "Patient":
                out[e.index] = out[target.index]
            elif ref.startswith("Patient/") and (p := self.pseudonym_of_local_patient(ref.split("/", 1)[1])):
                out[e.index] = p
            elif not ref and ident.get("system") == self.mpi_system and ident.get("value"):
                out[e.index] = self.pseudonym_of_identifier(self.mpi_system, str(ident["value"]))
            else:
                raise FhirInvalid(
                    [
                        Issue(
                            "invariant",
                            where,
                            f"{ref or 'no reference'}: must name a Patient held here or in this bundle,"
                            f" or the patient's identifier of system {self.mpi_system}",
                        )
                    ]
                )
        return out

    async def _settle(self, batch: str, submit: Callable[[], Awaitable[Committed]]) -> None:
        try:
            committed = await submit()
        except CommitUnknown as e:
            # Ordered or not? Ask the ledger rather than guess.
            if await self.reconcile(batch):
                return
            raise LedgerOutcomeUnknown(f"the ledger did not confirm the write, and it is not registered: {e}") from e
        except BaseException:
            self.store.discard(batch)
            raise
        self.store.commit(batch, committed.tx_id)

    async def reconcile(self, batch: str) -> bool:
        """Settle a staged batch by asking the ledger: commit it if its first row is registered, else discard."""
        rows = self.store.batch_rows(batch)
        if not rows:
            return False
        tx_id = await self._registered(*rows[0])
        if tx_id is None:
            self.store.discard(batch)
            return False
        self.store.commit(batch, tx_id)
        return True

    async def _registered(self, rtype: str, rid: str, version: int) -> str | None:
        """The id of the transaction that registered this version, or None when the ledger does not have it."""
        try:
            route = route_of(rtype)
            if route == "claim":
                claim = await self.ledger.claim(rid)
                return str(claim["txId"]) if version == 1 or claim["status"] == "cancelled" else None
            if route == "consent":
                consent = await self.ledger.consent(rid)
                return str(consent["txId"]) if version == 1 or consent["status"] == "revoked" else None
            if route == "held":
                return ""
            return str((await self.ledger.record(rtype, rid, version)).get("txId", ""))
        except LedgerNotFound:
            return None

    # ----- reads, verification, erasure -------------------------------------------------------------------------

    def read(self, rtype: str, rid: str, version: int | None = None) -> Stored | None:
        return self.store.read(rtype, rid, version)

    async def verify(self, stored: Stored) -> Verification:
        """Recompute the stored content's digest and compare it with the one registered on chain."""
        route = route_of(stored.type)
        if route in ("claim", "consent") and stored.version > 1:
            # The chain keeps the digest of what was submitted or granted; later versions only change its status.
            first = self.store.read(stored.type, stored.id, 1)
            assert first is not None
            stored = first
        if route == "claim":
            record = await self.ledger.claim(stored.id)
        elif route == "consent":
            record = await self.ledger.consent(stored.id)
            record["digest"] = record["documentDigest"]
        elif route == "held":
            raise FhirInvalid([Issue("not-supported", stored.type, f"{stored.type} is not registered on chain")])
        else:
            record = await self.ledger.record(stored.type, stored.id, stored.version)
        resource = json.loads(stored.content)
        mine = digests.resource_digest(self.store.digest_key(stored.patient), resource)
        ok = mine == record["digest"]
        reason = (
            "the stored content matches the ledger" if ok else "the stored content differs from what was registered"
        )
        return Verification(ok, reason, str(record["digest"]), mine, str(record.get("txId", "")))

    async def erase(self, patient: str) -> str:
        """Crypto-shred the patient's data here and record the erasure on chain; returns the transaction id."""
        self.store.erase(patient, now_instant())
        return (await self.ledger.record_erasure(patient)).tx_id


def _rewrite_references(resource: dict[str, Any], targets: dict[str, str]) -> dict[str, Any]:
    """A copy of the resource with in-bundle (urn:uuid:) references pointing at the stored Type/id."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            if isinstance(out.get("reference"), str) and out["reference"] in targets:
                out["reference"] = targets[out["reference"]]
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return dict(walk(resource))


def _identifiers(resource: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (str(i["system"]), str(i["value"]))
        for i in resource.get("identifier") or []
        if isinstance(i, dict) and i.get("system") and i.get("value")
    )
