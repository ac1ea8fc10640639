"""FHIR REST interactions: transaction and batch Bundles, create (conditional), update (conditional), read, vread,
history, search. Each interaction needs its own SMART permission letter (see `gateway.auth`)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from gateway.auth import Client, Grant, require
from gateway.deps import (
    BodyDep,
    ClientDep,
    RequestKeyDep,
    Scope,
    ServicesDep,
    compartment,
    negotiate,
    require_compartment,
)
from gateway.outcome import HttpProblem, problem
from gateway.responses import FhirResponse, entry_response, resource_response, searchset, written_response
from records import search
from records import validation as fv
from records.service import Records

router = APIRouter(prefix="/fhir", dependencies=[Depends(negotiate)])
Reader = Annotated[Grant, Depends(Scope("r"))]
Searcher = Annotated[Grant, Depends(Scope("s"))]


def _write_grant(client: Client, records: Records, raw: Any) -> Grant:
    """The permission an entry's write needs: c to create (POST, or PUT of a new id), u to update."""
    if not isinstance(raw, dict) or not isinstance(raw.get("resource"), dict):
        return require(client, "*", "c")
    resource: dict[str, Any] = raw["resource"]
    request: dict[str, Any] = raw["request"] if isinstance(raw.get("request"), dict) else {}
    rtype = str(resource.get("resourceType") or "*")
    url = str(request.get("url") or "")
    exists = request.get("method") == "PUT" and records.store.head(rtype, url.partition("/")[2]) is not None
    return require(client, rtype, "u" if exists else "c")


def _compartment_of(svc: ServicesDep, grants: list[Grant]) -> str | None:
    limits = {compartment(svc, g) for g in grants}
    if None in limits and len(limits) == 1:
        return None
    return next((x for x in limits if x is not None), None)


@router.post("")
@router.post("/")
async def bundle(svc: ServicesDep, client: ClientDep, body: BodyDep, key: RequestKeyDep) -> FhirResponse:
    env = fv.envelope(body, svc.config.limits)
    grants = [_write_grant(client, svc.records, raw) for raw in env.raw_entries] or [require(client, "*", "c")]
    limit = _compartment_of(svc, grants)
    if env.type == "transaction":
        written = await svc.records.transaction(fv.transaction_entries(env), limit, key)
        entries = [{"response": entry_response(w)} for w in written]
        return FhirResponse({"resourceType": "Bundle", "type": "transaction-response", "entry": entries})
    answers = (_batch_entry(svc.records, raw, i, limit, key.part(f"e{i}")) for i, raw in enumerate(env.raw_entries))
    entries = list(await asyncio.gather(*answers))
    return FhirResponse({"resourceType": "Bundle", "type": "batch-response", "entry": entries})


async def _batch_entry(records: Records, raw: Any, i: int, limit: str | None, key: str) -> dict[str, Any]:
    """A batch answers each entry on its own: a failure is that entry's status and outcome."""
    try:
        entry = fv.batch_entry(raw, i)
        (w,) = await records.transaction([entry], limit, key)
        return {"response": entry_response(w)}
    except Exception as e:
        mapped = problem(e)
        if mapped is None:
            raise
        status, outcome = mapped
        return {"response": {"status": str(status), "outcome": outcome}}


@router.post("/{rtype}")
async def create(
    rtype: str, request: Request, svc: ServicesDep, client: ClientDep, body: BodyDep, key: RequestKeyDep
) -> FhirResponse:
    grant = require(client, rtype, "c")
    resource = fv.parse_json(body, svc.config.limits)
    entry = fv.entry({"resource": resource, "request": {"method": "POST", "url": rtype}}, 0)
    entry.if_none_exist = request.headers.get("if-none-exist")
    (w,) = await svc.records.transaction([entry], compartment(svc, grant), key)
    return written_response(w)


@router.put("/{rtype}/{rid}")
async def update(
    rtype: str, rid: str, request: Request, svc: ServicesDep, client: ClientDep, body: BodyDep, key: RequestKeyDep
) -> FhirResponse:
    fv.check_id(rid, f"{rtype} id")
    grant = require(client, rtype, "u" if svc.records.store.head(rtype, rid) else "c")
    resource = fv.parse_json(body, svc.config.limits)
    entry = fv.entry({"resource": resource, "request": {"method": "PUT", "url": f"{rtype}/{rid}"}}, 0)
    entry.if_match, entry.if_none_match = request.headers.get("if-match"), request.headers.get("if-none-match")
    (w,) = await svc.records.transaction([entry], compartment(svc, grant), key)
    return written_response(w)


@router.get("/{rtype}")
async def search_type(rtype: str, request: Request, svc: ServicesDep, grant: Searcher) -> FhirResponse:
    fv.check_type(rtype)
    records = svc.records
    wanted = search.parse(rtype, list(request.query_params.multi_items()), records.pseudonym_of_local_patient)
    query = wanted.query
    if wanted.identifier is not None:
        ids = tuple(i for i, _ in records.store.with_identifier(rtype, *wanted.identifier))
        query = replace(query, ids=tuple(set(ids) & set(query.ids)) if query.ids is not None else ids)
    if (limit := compartment(svc, grant)) is not None:
        if query.patient not in (None, limit):
            limit = "-"  # asked for another patient: nothing in the compartment matches
        query = replace(query, patient=limit)
    page = records.store.search_page(query)
    resources = [json.loads(s.content) for s in page.items]
    return FhirResponse(searchset(request, resources, page.total, page.next))


@router.get("/{rtype}/{rid}")
async def read(rtype: str, rid: str, svc: ServicesDep, grant: Reader) -> FhirResponse:
    stored = svc.records.read(rtype, fv.check_id(rid, f"{rtype} id"))
    require_compartment(svc, grant, stored.patient)
    return resource_response(stored)


@router.get("/{rtype}/{rid}/_history/{vid}")
async def vread(rtype: str, rid: str, vid: str, svc: ServicesDep, grant: Reader) -> FhirResponse:
    if not vid.isascii() or not vid.isdigit() or len(vid) > 9:
        raise HttpProblem(404, "not-found", f"{rtype}/{rid}/_history/{vid[:20]} is not held here")
    stored = svc.records.read(rtype, fv.check_id(rid, f"{rtype} id"), int(vid))
    require_compartment(svc, grant, stored.patient)
    return resource_response(stored)


@router.get("/{rtype}/{rid}/_history")
async def history(rtype: str, rid: str, svc: ServicesDep, grant: Reader) -> FhirResponse:
    versions = svc.records.history(rtype, fv.check_id(rid, f"{rtype} id"))
    require_compartment(svc, grant, versions[0].patient)
    entries = [{"fullUrl": f"{rtype}/{rid}/_history/{s.version}", "resource": json.loads(s.content)} for s in versions]
    return FhirResponse({"resourceType": "Bundle", "type": "history", "total": len(entries), "entry": entries})
