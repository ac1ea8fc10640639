"""Prior authorisation in the Da Vinci PAS shape.

- `POST /fhir/Claim/$submit` (provider): a prior-authorisation request — a PAS Bundle whose first entry is the Claim
  (use `preauthorization`), or the Claim alone. It is kept and submitted on chain like any claim; the answer is a
  Bundle holding the ClaimResponse: the decision when the insurer's rules decide at once, else `queued` with the time
  the decision is due (72 hours expedited, 7 calendar days standard). A later decision arrives by notification and
  is kept as `ClaimResponse/<the Claim's id>`.
- `POST /fhir/Claim/{id}/$appeal` (provider): the one appeal of a denied request, with Parameters carrying the
  added `documentation` (an Attachment or a resource); its keyed digest goes on chain (Claims:AppealPreauth), the
  request is open again and due anew, and the insurer decides it like a new one.
- `POST /fhir/ClaimResponse/{id}/$decide` (insurer): a person decides a pended (or appealed) request: Parameters with
  `decision` (approved | denied) and, for a denial, the specific `reason` code. Recorded on chain
  (Claims:DecidePreauth), then the insurer's worker keeps the ClaimResponse and the provider is notified.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from gateway.auth import Grant
from gateway.deps import BodyDep, RequestKeyDep, Scope, ServicesDep, compartment, negotiate, require_compartment
from gateway.outcome import HttpProblem
from gateway.responses import FhirResponse
from records import validation as fv
from records.errors import FhirInvalid, Issue
from records.fhir_claim import preauth_priority, preauth_ref

DECISION_WAIT_S = 5.0  # how long $submit waits for the insurer's rules before answering "queued"
RETENTION_S = 30 * 86400  # how long the request's lines are kept after a person's decision

router = APIRouter(prefix="/fhir", dependencies=[Depends(negotiate)])


def _request_claim(body: Any) -> dict[str, Any]:
    """The Claim of a PAS request: the first entry of its Bundle, or the body itself."""
    claim = body
    if isinstance(body, dict) and body.get("resourceType") == "Bundle":
        entries = body.get("entry") or []
        claim = (entries[0] or {}).get("resource") if entries and isinstance(entries[0], dict) else None
    if not isinstance(claim, dict) or claim.get("resourceType") != "Claim":
        raise FhirInvalid([Issue("structure", "Bundle.entry[0].resource", "a PAS request starts with its Claim")])
    if claim.get("use") != "preauthorization":
        raise FhirInvalid([Issue("value", "Claim.use", "Claim/$submit takes prior-authorisation requests")])
    return claim


@router.post("/Claim/$submit")
async def submit_preauth(
    svc: ServicesDep, grant: Annotated[Grant, Depends(Scope("c", "Claim"))], body: BodyDep, key: RequestKeyDep
) -> FhirResponse:
    claim = _request_claim(fv.parse_json(body, svc.config.limits))
    request = {"method": "POST", "url": "Claim"}
    entry = fv.entry({"resource": {k: v for k, v in claim.items() if k != "id"}, "request": request}, 0)
    (written,) = await svc.records.transaction([entry], compartment(svc, grant), key)
    deadline = time.monotonic() + DECISION_WAIT_S
    while (answer := svc.records.store.read("ClaimResponse", written.id)) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    if answer is not None and json.loads(answer.content).get("outcome") != "queued":
        response = json.loads(answer.content)
    else:
        response = _queued(written.id, written.resource)
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": response}]}
    return FhirResponse(bundle, status_code=201)


def _queued(claim_id: str, claim: dict[str, Any]) -> dict[str, Any]:
    """A pended answer: the request is kept and on chain; the decision follows by notification."""
    window = "72 hours" if preauth_priority(claim) == "expedited" else "7 calendar days"
    return {
        "resourceType": "ClaimResponse",
        "id": claim_id,
        "status": "active",
        "type": claim["type"],
        "use": "preauthorization",
        "patient": claim["patient"],
        "created": claim["meta"]["lastUpdated"],
        "insurer": claim["insurer"],
        "request": {"reference": f"Claim/{claim_id}"},
        "outcome": "queued",
        "disposition": f"pended: the insurer decides within {window}",
    }


@router.post("/Claim/{rid}/$appeal")
async def appeal(
    rid: str, svc: ServicesDep, grant: Annotated[Grant, Depends(Scope("u", "Claim"))], body: BodyDep
) -> FhirResponse:
    if svc.records.custodian.kind != "provider":
        raise HttpProblem(404, "not-supported", "only a provider appeals its prior-authorisation requests")
    parameters = fv.parse_json(body, svc.config.limits)
    found = [p for p in parameters.get("parameter") or [] if isinstance(p, dict) and p.get("name") == "documentation"]
    if parameters.get("resourceType") != "Parameters" or len(found) != 1:
        raise FhirInvalid(
            [Issue("required", "Parameters.parameter", "an appeal carries one `documentation` parameter")]
        )
    claim_id = fv.check_id(rid, "Claim id")
    require_compartment(svc, grant, svc.records.read("Claim", claim_id).patient)
    done = await svc.records.appeal_preauth(claim_id, found[0])
    return FhirResponse({"resourceType": "Parameters", "parameter": [
        {"name": "status", "valueCode": str(done.result["status"])},
        {"name": "transaction", "valueString": done.tx_id},
    ]})  # fmt: skip


@router.post("/ClaimResponse/{rid}/$decide")
async def decide(
    rid: str, svc: ServicesDep, _: Annotated[Grant, Depends(Scope("u", "ClaimResponse"))], body: BodyDep
) -> FhirResponse:
    if svc.records.custodian.kind != "insurer":
        raise HttpProblem(404, "not-supported", "only an insurer decides prior-authorisation requests")
    held = json.loads(svc.records.read("ClaimResponse", fv.check_id(rid, "ClaimResponse id")).content)
    if held.get("use") != "preauthorization":
        raise HttpProblem(409, "conflict", f"ClaimResponse/{rid} does not answer a prior-authorisation request")
    params = {p.get("name"): p for p in (fv.parse_json(body, svc.config.limits).get("parameter") or [])}
    decision = str((params.get("decision") or {}).get("valueCode") or "")
    reason = str((params.get("reason") or {}).get("valueCode") or "")
    if decision not in ("approved", "denied") or (decision == "denied" and not reason):
        issue = "decision is approved or denied; a denial names its reason code"
        raise FhirInvalid([Issue("value", "Parameters.parameter", issue)])
    claim_key = next(i["value"] for i in held["identifier"] if i["system"] == "urn:careledger:claim")
    request: dict[str, Any] = {"decision": decision, "reason": reason, "retentionSeconds": RETENTION_S}
    if decision == "approved":
        request["preAuthRef"] = str((params.get("preAuthRef") or {}).get("valueString") or preauth_ref(claim_key))
    done = await svc.records.ledger.decide_preauth(claim_key, request)
    return FhirResponse({"resourceType": "Parameters", "parameter": [
        {"name": "status", "valueCode": str(done.result["status"])},
        {"name": "transaction", "valueString": done.tx_id},
    ]})  # fmt: skip
