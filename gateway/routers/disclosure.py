"""Selective disclosure with proof (digest scheme v2, `records.disclosure`, docs/DISCLOSURE.md).

- `POST /fhir/{type}/{id}/$disclose` — the custodian's EHR chooses elements (a Parameters resource with one `path`
  per element, e.g. `code`, `value[x]`, `effective[x]`; optionally `version`) and gets a disclosure document: those
  elements' values, salts and inclusion proofs against the digest registered on chain. Needs read permission on the
  type, inside the launch patient's compartment for `patient/` scopes.
- `POST /fhir/$verify-disclosure` — anyone with a token: the document is checked against the record on chain it
  names. The same check runs offline: `python -m records.disclosure verify FILE --record RECORD.json`.
- `GET /federation/disclosures/{pseudonym}?purpose=&element=Type.path` — org to org, over mutual TLS: the custodian
  decides on the patient's consent on chain for the calling org and purpose, logs the access in the same
  transaction, and answers with a disclosure document for each released resource of the named types, holding only
  the named elements (the insurer's records review asks this way).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from gateway.auth import Grant
from gateway.deps import BodyDep, ClientDep, MemberDep, Scope, ServicesDep, require_compartment
from gateway.outcome import HttpProblem
from gateway.routers.operations import PURPOSE_DEFAULT
from records import disclosure
from records import validation as fv

router = APIRouter()
MAX_ELEMENTS = 200


def _paths_and_version(parameters: Any) -> tuple[list[str], int | None]:
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise HttpProblem(422, "structure", "send a Parameters resource naming the elements (parameter `path`)")
    paths: list[str] = []
    version: int | None = None
    for i, p in enumerate(parameters.get("parameter") or []):
        name = p.get("name") if isinstance(p, dict) else None
        if name == "path" and isinstance(p.get("valueString"), str):
            paths.append(p["valueString"])
        elif name == "version" and isinstance(p.get("valuePositiveInt", p.get("valueInteger")), int):
            version = int(p.get("valuePositiveInt", p.get("valueInteger")))
        else:
            raise HttpProblem(422, "value", "expected `path` (valueString) or `version`", f"Parameters.parameter[{i}]")
    if not paths or len(paths) > MAX_ELEMENTS:
        raise HttpProblem(422, "required", f"name 1 to {MAX_ELEMENTS} element paths", "Parameters.parameter")
    for i, path in enumerate(paths):
        try:
            disclosure.selector(path)
        except ValueError as e:
            raise HttpProblem(422, "value", str(e), f"Parameters.parameter[{i}].valueString") from None
    return paths, version


@router.post("/fhir/{rtype}/{rid}/$disclose")
async def disclose(
    rtype: str, rid: str, svc: ServicesDep, grant: Annotated[Grant, Depends(Scope("r"))], body: BodyDep
) -> JSONResponse:
    paths, version = _paths_and_version(fv.parse_json(body, svc.config.limits))
    stored = svc.records.read(rtype, fv.check_id(rid, f"{rtype} id"), version)
    require_compartment(svc, grant, stored.patient)
    return JSONResponse(await svc.records.disclose(stored, paths))


@router.post("/fhir/$verify-disclosure")
async def verify_disclosure(svc: ServicesDep, client: ClientDep, body: BodyDep) -> JSONResponse:
    document = fv.parse_json(body, svc.config.limits)
    if not isinstance(document, dict):
        raise HttpProblem(422, "structure", "send the disclosure document (JSON object)")
    result = await svc.records.verify_disclosure(document)
    params: list[dict[str, Any]] = [
        {"name": "result", "valueBoolean": result.ok},
        {"name": "message", "valueString": result.reason},
    ]
    if result.ok:
        params.append({"name": "disclosed", "resource": result.resource})
    return JSONResponse({"resourceType": "Parameters", "parameter": params}, media_type="application/fhir+json")


def wanted_elements(elements: list[str]) -> dict[str, list[str]]:
    """`Type.path` strings as {type: [path, ...]}."""
    wanted: dict[str, list[str]] = {}
    for e in elements[:MAX_ELEMENTS]:
        rtype, _, path = e.partition(".")
        if not rtype[:1].isupper() or not path:
            raise HttpProblem(400, "value", f"{e[:80]!r}: name an element as Type.path, e.g. Observation.code")
        try:
            disclosure.selector(path)
        except ValueError as err:
            raise HttpProblem(400, "value", str(err)) from None
        wanted.setdefault(rtype, []).append(path)
    if not wanted:
        raise HttpProblem(400, "required", "name the elements wanted (element=Type.path)")
    return wanted


@router.get("/federation/disclosures/{pseudonym}")
async def disclosures_for_member(
    pseudonym: str,
    caller: MemberDep,
    svc: ServicesDep,
    purpose: str = PURPOSE_DEFAULT,
    element: Annotated[list[str] | None, Query()] = None,
) -> JSONResponse:
    wanted = wanted_elements(element or [])
    documents = await svc.sharing.disclose_elements(pseudonym, caller, purpose, wanted)
    return JSONResponse({"disclosures": documents})
