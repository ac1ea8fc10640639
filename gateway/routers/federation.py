"""Org-to-org routes, over mutual TLS: the calling org is the one whose TLS CA issued the client certificate, never
anything the request says.

- `GET /federation/everything/{pseudonym}?purpose=` — another member asks for this org's records of a patient;
- `GET /federation/claim-responses/{claim_id}` — a claim's provider fetches the insurer's ClaimResponse;
- `GET /federation/claim-responses?claim=...&claim=...` — the same for many claims at once (those adjudicated
  together): a Bundle of the responses kept, to the caller's claims only;
- `GET /federation/payments/{payment_ref}` — a provider fetches the PaymentReconciliation of a batch payment to it.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query

from gateway.deps import MemberDep, ServicesDep
from gateway.responses import FhirResponse, resource_response
from gateway.routers.operations import PURPOSE_DEFAULT
from records import validation as fv
from records.errors import Issue, Malformed

router = APIRouter(prefix="/federation")


MAX_CLAIM_RESPONSES = 100  # ids of 64 characters: a request line well under what an HTTP server takes


@router.get("/claim-responses")
async def claim_responses_for_provider(
    caller: MemberDep, svc: ServicesDep, claim: Annotated[list[str] | None, Query()] = None
) -> FhirResponse:
    asked = list(dict.fromkeys(claim or []))
    if not 1 <= len(asked) <= MAX_CLAIM_RESPONSES:
        raise Malformed([Issue("invalid", "claim", f"name 1 to {MAX_CLAIM_RESPONSES} claims")])
    found = await svc.sharing.claim_responses_for([fv.check_id(c, "claim") for c in asked], caller)
    entries = [{"resource": json.loads(s.content)} for s in found]
    return FhirResponse({"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries})


@router.get("/claim-responses/{claim_id}")
async def claim_response_for_provider(claim_id: str, caller: MemberDep, svc: ServicesDep) -> FhirResponse:
    return resource_response(await svc.sharing.claim_response_for(claim_id, caller))


@router.get("/payments/{payment_ref}")
async def payment_for_provider(payment_ref: str, caller: MemberDep, svc: ServicesDep) -> FhirResponse:
    return resource_response(await svc.sharing.payment_for(fv.check_id(payment_ref, "payment"), caller))


@router.get("/everything/{pseudonym}")
async def disclose(pseudonym: str, caller: MemberDep, svc: ServicesDep, purpose: str = PURPOSE_DEFAULT) -> FhirResponse:
    resources = await svc.sharing.disclose(pseudonym, caller, purpose)
    entries = [{"resource": r} for r in resources]
    return FhirResponse({"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries})
