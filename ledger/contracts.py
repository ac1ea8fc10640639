"""CareLedger's contracts as typed async calls, for the FHIR gateway.

Contract errors arrive as "CODE: message" inside the peers' chaincode messages; they become the exceptions below,
once, here. Everything else stays a `fabric_gateway` error (unavailable peer, timeout, commit failure).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fabric_gateway import AsyncContract, AsyncGateway, EndorseError, EvaluateError, GatewayError
from fabric_gateway.retry import retry_conflicts_async

CHAINCODE = "careledger"
PROVIDERS, CLAIMS, PHARMA = "providers", "claims", "pharma"


class LedgerRefused(Exception):
    """A contract refused the call on purpose; `code` says why in one word."""

    code = ""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LedgerInvalid(LedgerRefused):
    code = "INVALID_ARGUMENT"


class LedgerForbidden(LedgerRefused):
    code = "FORBIDDEN"


class LedgerNotFound(LedgerRefused):
    code = "NOT_FOUND"


class LedgerConflict(LedgerRefused):
    code = "CONFLICT"


_BY_CODE: dict[str, type[LedgerRefused]] = {
    c.code: c for c in (LedgerInvalid, LedgerForbidden, LedgerNotFound, LedgerConflict)
}


def refusal(err: GatewayError) -> LedgerRefused | None:
    """The contract's refusal inside a Gateway error, or None when the failure is not the contract's answer."""
    for message in err.chaincode_messages:
        for code, cls in _BY_CODE.items():
            marker = f"{code}: "
            if marker in message:
                return cls(message[message.index(marker) + len(marker) :])
    return None


@dataclass(frozen=True)
class Committed:
    tx_id: str
    result: Any


class Ledger:
    """The contracts, called as one org's identity through its own peer's Gateway."""

    def __init__(self, gateway: AsyncGateway, chaincode: str = CHAINCODE) -> None:
        self.gateway = gateway
        self.chaincode = chaincode
        self._contracts: dict[str, AsyncContract] = {}

    def contract(self, channel: str) -> AsyncContract:
        if channel not in self._contracts:
            self._contracts[channel] = self.gateway.network(channel).contract(self.chaincode)
        return self._contracts[channel]

    async def submit(
        self, channel: str, function: str, *args: str, transient: Mapping[str, Any] | None = None
    ) -> Committed:
        encoded = {k: json.dumps(v).encode() for k, v in (transient or {}).items()}

        async def attempt() -> Any:
            return await self.contract(channel).submit(function, args=args, transient=encoded or None)

        try:
            # A transaction that lost a read race did not commit: submitting it anew is safe.
            done = await retry_conflicts_async(attempt)
        except EndorseError as e:
            raise (refusal(e) or e) from None
        return Committed(done.tx_id, json.loads(done.result) if done.result else None)

    async def evaluate(self, channel: str, function: str, *args: str) -> Any:
        try:
            raw = await self.contract(channel).evaluate(function, args=args)
        except EvaluateError as e:
            raise (refusal(e) or e) from None
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
