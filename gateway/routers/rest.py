"""FHIR REST interactions: transaction and batch Bundles, create (conditional), update, read, vread, history, search."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from gateway.auth import Client, require
from gateway.deps import BodyDep, ClientDep, Scope, ServicesDep
from gateway.outcome import HttpProblem, problem
from gateway.responses import (
    FhirResponse,
    entry_response,
    resource_response,
    searchset,
    written_response,
)
from records import search
from records import validation as fv
from records.service import Records

router = APIRouter(prefix="/fhir")
Reader = Annotated[Client, Depends(Scope("read"))]
Writer = Annotated[Client, Depends(Scope("write"))]


@router.post("")
@router.post("/")
async def bundle(svc: ServicesDep, client: ClientDep, body: BodyDep) -> FhirResponse:
    env = fv.envelope(body, svc.config.limits)
    for raw in env.raw_entries:
        require(client, str(((raw or {}).get("resource") or {}).get("resourceType") or "*"), "write")
    if not env.raw_entries:
        require(client, "*", "write")
    if env.type == "transaction":
        written = await svc.records.transaction(fv.transaction_entries(env))
        entries = [{"response": entry_response(w)} for w in written]
        return FhirResponse({"resourceType": "Bundle", "type": "transaction-response", "entry": entries})
    results = await asyncio.gather(*(_batch_entry(svc.records, raw, i) for i, raw in enumerate(env.raw_entries)))
    return FhirResponse({"resourceType": "Bundle", "type": "batch-response", "entry": list(results)})


async def _batch_entry(records: Records, raw: Any, i: int) -> dict[str, Any]:
    """A batch answers each entry on its own: a failure is that entry's status and outcome."""
    try:
        entry = fv.entry(raw, i)
        entry.full_url = ""  # batch entries may not refer to each other
        (w,) = await records.transaction([entry])
        return {"response": entry_response(w)}
    except Exception as e:
        mapped = problem(e)
        if mapped is None:
            raise
        status, outcome = mapped
        return {"response": {"status": str(status), "outcome": outcome}}


@router.post("/{rtype}")
async def create(rtype: str, request: Request, svc: ServicesDep, _: Writer, body: BodyDep) -> FhirResponse:
    resource = fv.parse_json(body, svc.config.limits)
    entry = fv.entry({"resource": resource, "request": {"method": "POST", "url": rtype}}, 0)
    condition = request.headers.get("if-none-exist")
    if condition is None:
        (w,) = await svc.records.transaction([entry])
        return written_response(w)
    system, value = search.identifier_condition(condition)
    return written_response(await svc.records.create_unless_exists(entry, system, value))


@router.put("/{rtype}/{rid}")
async def update(rtype: str, rid: str, request: Request, svc: ServicesDep, _: Writer, body: BodyDep) -> FhirResponse:
    resource = fv.parse_json(body, svc.config.limits)
    entry = fv.entry({"resource": resource, "request": {"method": "PUT", "url": f"{rtype}/{rid}"}}, 0)
    return written_response(await svc.records.update(entry, request.headers.get("if-match")))


@router.get("/{rtype}")
async def search_type(rtype: str, request: Request, svc: ServicesDep, _: Reader) -> FhirResponse:
    if rtype not in fv.PATIENT_ELEMENT:
        raise HttpProblem(404, "not-supported", f"{rtype} is not stored here")
    records = svc.records
    wanted = search.parse(rtype, list(request.query_params.multi_items()), records.pseudonym_of_local_patient)
    query = wanted.query
    if wanted.identifier is not None:
        ids = tuple(i for i, _ in records.store.with_identifier(rtype, *wanted.identifier))
        query = replace(query, ids=tuple(set(ids) & set(query.ids)) if query.ids is not None else ids)
    page = records.store.search_page(query)
    resources = [json.loads(s.content) for s in page.items]
    return FhirResponse(searchset(request, resources, page.total, page.next))


@router.get("/{rtype}/{rid}")
async def read(rtype: str, rid: str, svc: ServicesDep, _: Reader) -> FhirResponse:
    return resource_response(svc.records.read(rtype, rid))


@router.get("/{rtype}/{rid}/_history/{vid}")
async def vread(rtype: str, rid: str, vid: int, svc: ServicesDep, _: Reader) -> FhirResponse:
    return resource_response(svc.records.read(rtype, rid, vid))


@router.get("/{rtype}/{rid}/_history")
async def history(rtype: str, rid: str, svc: ServicesDep, _: Reader) -> FhirResponse:
    entries = [
        {"fullUrl": f"{rtype}/{rid}/_history/{s.version}", "resource": json.loads(s.content)}
        for s in svc.records.history(rtype, rid)
    ]
    return FhirResponse({"resourceType": "Bundle", "type": "history", "total": len(entries), "entry": entries})
