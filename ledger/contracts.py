"""CareLedger's contracts as typed async calls: one method per contract function, JSON in and out.

Refusals are `ledger.errors` exceptions; everything else a `Transport` raises (an unreachable peer, a timeout, a
commit failure) passes through unchanged, so the caller can tell a refusal from an unknown outcome.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.transport import Transport

PROVIDERS, CLAIMS, PHARMA = "providers", "claims", "pharma"


@dataclass(frozen=True)
class Committed:
    tx_id: str
    result: Any  # the contract's JSON answer, decoded
    block_number: int = 0


class Ledger:
    """The contracts, over a transport: Fabric as one org's identity, or the in-memory fake in unit tests."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    async def submit(
        self, channel: str, function: str, *args: str, transient: Mapping[str, Any] | None = None
    ) -> Committed:
        encoded = {k: json.dumps(v).encode() for k, v in (transient or {}).items()}
        sent = await self.transport.submit(channel, function, list(args), encoded or None)
        return Committed(sent.tx_id, json.loads(sent.result) if sent.result else None, sent.block_number)

    async def evaluate(self, channel: str, function: str, *args: str) -> Any:
        raw = await self.transport.evaluate(channel, function, list(args))
        return json.loads(raw) if raw else None

    # ----- Records ---------------------------------------------------------------------------------------------

    async def register(self, entries: Sequence[Mapping[str, Any]]) -> Committed:
        return await self.submit(PROVIDERS, "Records:Register", json.dumps(list(entries)))

    async def record(self, resource_type: str, resource_id: str, version: int = 0) -> dict[str, Any]:
        return dict(await self.evaluate(PROVIDERS, "Records:Get", resource_type, resource_id, str(version)))

    async def custodians(self, patient: str) -> list[dict[str, Any]]:
        return list(await self.evaluate(PROVIDERS, "Records:Custodians", patient))

    async def record_erasure(self, patient: str) -> Committed:
        return await self.submit(PROVIDERS, "Records:RecordErasure", patient)

    # ----- Claims ----------------------------------------------------------------------------------------------

    async def submit_claim(self, submission: Mapping[str, Any], detail: Mapping[str, Any]) -> Committed:
        return await self.submit(CLAIMS, "Claims:Submit", json.dumps(submission), transient={"claim": detail})

    async def claim(self, claim_id: str) -> dict[str, Any]:
        return dict(await self.evaluate(CLAIMS, "Claims:Get", claim_id))

    async def cancel_claim(self, claim_id: str, reason: str) -> Committed:
        return await self.submit(CLAIMS, "Claims:Cancel", claim_id, reason)

    async def claim_lines(self, claim_id: str) -> dict[str, Any]:
        return dict(await self.evaluate(CLAIMS, "Claims:Lines", claim_id))

    async def adjudication(self, claim_id: str) -> dict[str, Any]:
        return dict(await self.evaluate(CLAIMS, "Claims:AdjudicationOf", claim_id))

    async def adjudicate(self, claim_id: str, decision: Mapping[str, Any]) -> Committed:
        return await self.submit(CLAIMS, "Claims:Adjudicate", claim_id, transient={"adjudication": decision})

    async def pay(self, claim_id: str, payment_ref: str) -> Committed:
        return await self.submit(CLAIMS, "Claims:Pay", claim_id, payment_ref)

    # ----- Consent and audit -----------------------------------------------------------------------------------

    async def grant(self, grant: Mapping[str, Any]) -> Committed:
        return await self.submit(PROVIDERS, "Consent:Grant", json.dumps(grant))

    async def revoke(self, consent_id: str, document_digest: str) -> Committed:
        return await self.submit(PROVIDERS, "Consent:Revoke", consent_id, document_digest)

    async def consent(self, consent_id: str) -> dict[str, Any]:
        return dict(await self.evaluate(PROVIDERS, "Consent:Get", consent_id))

    async def record_access(self, patient: str, accessor: str, resource: str, purpose: str) -> dict[str, Any]:
        request = {"patient": patient, "accessor": accessor, "resource": resource, "purpose": purpose}
        return dict((await self.submit(PROVIDERS, "Audit:RecordAccess", json.dumps(request))).result)

    async def audit_by_patient(self, patient: str, start: str, end: str, page_size: int = 100) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        bookmark = ""
        while True:
            page = await self.evaluate(PROVIDERS, "Audit:ByPatient", patient, start, end, str(page_size), bookmark)
            entries += list(page["entries"])
            bookmark = page["bookmark"]
            if not bookmark:
                return entries
