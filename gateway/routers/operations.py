"""FHIR operations: `Patient/$everything` (across custodians, under consent), `$verify` (against the ledger) and
`Patient/$erase` (crypto-shredding, recorded on chain).

`$everything` is paged: `_count` own resources a page (default 100, at most 1000), and a next link that continues
the operation with a `_cursor`. The first page also carries what the other custodians disclose (`records.sharing`
says why), and its `total` counts everything found; later pages carry this org's resources only and no total.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from gateway.auth import Grant
from gateway.deps import Scope, ServicesDep, negotiate, require_compartment
from gateway.outcome import HttpProblem, operation_outcome
from gateway.responses import FhirResponse, base_url, match, page_links, searchset_bundle
from records import search
from records import validation as fv
from records.errors import Issue, NotHeld, Tampered
from records.sharing import EVERYTHING_COUNT, EVERYTHING_MAX_COUNT, Everything
from records.store import Cursor

PURPOSE_DEFAULT = "TREAT"

router = APIRouter(prefix="/fhir", dependencies=[Depends(negotiate)])
AnyReader = Annotated[Grant, Depends(Scope("r", "*"))]


@router.get("/Patient/$everything")
async def everything_by_identifier(
    svc: ServicesDep, grant: AnyReader, request: Request, identifier: str, purpose: str = PURPOSE_DEFAULT
) -> FhirResponse:
    """The longitudinal record of a patient named by the consortium identifier (system|value)."""
    system, value = search.identifier_condition(f"identifier={identifier}")
    records = svc.records
    if system not in records.identity.systems:
        names = ", ".join(records.identity.systems)
        raise HttpProblem(400, "value", f"name the patient by an identifier of a consortium system ({names})")
    pseudonym = records.pseudonym_of_identifier(system, value)
    require_compartment(svc, grant, records.filed_under(pseudonym))
    count, after = _page(request)
    return _everything_bundle(request, await svc.sharing.everything(pseudonym, purpose, count, after))


@router.get("/Patient/{rid}/$everything")
async def everything_of_patient(
    rid: str, svc: ServicesDep, grant: AnyReader, request: Request, purpose: str = PURPOSE_DEFAULT
) -> FhirResponse:
    """The longitudinal record of a patient held here: what this org holds, and what every other custodian on the
    ledger's index discloses to this org under the patient's consent."""
    rid = fv.check_id(rid, "Patient id")
    filed, pseudonym = svc.records.pseudonym_of_local_patient(rid), svc.records.consortium_pseudonym(rid)
    if filed is None or pseudonym is None:
        raise NotHeld(f"Patient/{rid} is not held here")
    require_compartment(svc, grant, filed)
    count, after = _page(request)
    return _everything_bundle(request, await svc.sharing.everything(pseudonym, purpose, count, after))


def _page(request: Request) -> tuple[int, Cursor | None]:
    """`_count` and `_cursor` of an $everything request."""
    params = request.query_params
    count = search.count(params.get("_count", ""), EVERYTHING_COUNT, EVERYTHING_MAX_COUNT)
    return count, search.cursor(params["_cursor"]) if "_cursor" in params else None


def _everything_bundle(request: Request, found: Everything) -> FhirResponse:
    if found.refused_entirely:
        status = 403 if any(w.status == 403 for w in found.withheld) else 502
        issues = [i for w in found.withheld for i in w.outcome.get("issue", [])]
        return FhirResponse({"resourceType": "OperationOutcome", "issue": issues}, status_code=status)
    base = base_url(request)
    entries: list[dict[str, Any]] = [match(f"{base}/fhir/{s.type}/{s.id}", json.loads(s.content)) for s in found.own]
    for d in found.disclosed:
        entries += [match(f"{d.base_url}/fhir/{r['resourceType']}/{r['id']}", r) for r in d.resources]
    entries += [{"resource": w.outcome, "search": {"mode": "outcome"}} for w in found.withheld]
    total = found.total if found.first else None
    return FhirResponse(searchset_bundle(entries, total, page_links(request, found.next)))


@router.get("/{rtype}/{rid}/$verify")
async def verify(rtype: str, rid: str, svc: ServicesDep, grant: Annotated[Grant, Depends(Scope("r"))]) -> FhirResponse:
    rid = fv.check_id(rid, f"{rtype} id")
    head = svc.records.store.head(rtype, rid)
    if head is None:
        raise NotHeld(f"{rtype}/{rid} is not held here")
    require_compartment(svc, grant, head[1])
    try:
        result = await svc.records.verify(svc.records.read(rtype, rid))
        ok, message = result.ok, result.reason
    except Tampered as e:  # a ciphertext that fails authentication is a verification result, not an error
        ok, message = False, str(e)
    params = [{"name": "result", "valueBoolean": ok}, {"name": "message", "valueString": message}]
    return FhirResponse({"resourceType": "Parameters", "parameter": params})


@router.get("/Claim/{rid}/$submission")
async def submission(rid: str, svc: ServicesDep, grant: Annotated[Grant, Depends(Scope("r", "Claim"))]) -> FhirResponse:
    """Where a Claim stands with the ledger. A Claim of a transaction bundle is filed on the claims channel after
    the bundle's records commit: `queued` until then, then `submitted` (with its transaction), `refused` (with the
    contract's reason) or `held` (it names no payer of the consortium)."""
    rid = fv.check_id(rid, "Claim id")
    state = svc.records.submission(rid)
    require_compartment(svc, grant, state.patient)
    params: list[dict[str, Any]] = [
        {"name": "state", "valueCode": state.state},
        {"name": "claimKey", "valueString": state.key},
        {"name": "attempts", "valueInteger": state.attempts},
    ]
    if state.tx_id:
        params.append({"name": "transaction", "valueString": state.tx_id})
    if state.reason:
        params.append({"name": "reason", "valueString": state.reason})
    return FhirResponse({"resourceType": "Parameters", "parameter": params})


@router.post("/Patient/{rid}/$erase")
async def erase(rid: str, svc: ServicesDep, grant: Annotated[Grant, Depends(Scope("d", "Patient"))]) -> FhirResponse:
    head = svc.records.store.head("Patient", fv.check_id(rid, "Patient id"))
    if head is None:
        raise NotHeld(f"Patient/{rid} is not held here")
    require_compartment(svc, grant, head[1])
    tx_id = await svc.records.erase(head[1])
    return FhirResponse(
        operation_outcome([Issue("informational", "", f"erased; ledger transaction {tx_id}")], "information")
    )
