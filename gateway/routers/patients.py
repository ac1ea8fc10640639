"""Finding and linking patients: `Patient/$match` and `Patient/{id}/$link`.

- `POST /fhir/Patient/$match`: Parameters with `resource` (a Patient: identifiers, name, birth date, gender),
  optional `onlyCertainMatches` and `count`. Answers a searchset of the Patients held here that are that person,
  each with its score and match grade: `certain` (a shared identifier), `probable` (same family and given name,
  birth date and gender). An EHR calls it before it writes, to update the patient it finds rather than create one.
- `POST /fhir/Patient/{id}/$link`: Parameters with `identifier`, in one of the consortium's person identifier
  systems. The Patient gets the identifier (a new version) and its records, filed under this org's local pseudonym,
  are linked on chain to the consortium patient, so other members' `$everything` finds them. An update that adds
  such an identifier does the same.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from gateway.auth import Grant
from gateway.deps import BodyDep, RequestKeyDep, Scope, ServicesDep, compartment, negotiate, require_compartment
from gateway.responses import FhirResponse, base_url, match, searchset_bundle, written_response
from records import validation as fv
from records.errors import FhirInvalid, Issue, NotHeld
from records.service import etag

MATCH_COUNT = 10
CERTAIN = 1.0

router = APIRouter(prefix="/fhir", dependencies=[Depends(negotiate)])


def _parameters(body: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirInvalid([Issue("structure", "Parameters", "the operation takes a Parameters resource")])
    return {str(p.get("name")): p for p in body.get("parameter") or [] if isinstance(p, dict)}


@router.post("/Patient/$match")
async def match_patient(
    request: Request, svc: ServicesDep, grant: Annotated[Grant, Depends(Scope("r", "Patient"))], body: BodyDep
) -> FhirResponse:
    params = _parameters(fv.parse_json(body, svc.config.limits))
    patient = (params.get("resource") or {}).get("resource")
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
        raise FhirInvalid([Issue("required", "Parameters.parameter[resource]", "give the Patient to match")])
    fv.validate_resource(patient, "Parameters.parameter[resource].resource")
    only_certain = bool((params.get("onlyCertainMatches") or {}).get("valueBoolean", False))
    count = (params.get("count") or {}).get("valueInteger", MATCH_COUNT)
    if not isinstance(count, int) or count < 1:
        raise FhirInvalid([Issue("value", "Parameters.parameter[count]", "count is a positive integer")])
    limit = compartment(svc, grant)
    found = [
        (stored, score)
        for stored, score in svc.records.match(patient)
        if (not only_certain or score >= CERTAIN) and (limit is None or stored.patient == limit)
    ][:count]
    entries = []
    for stored, score in found:
        grade = "certain" if score >= CERTAIN else "probable"
        entry = match(f"{base_url(request)}/fhir/Patient/{stored.id}", json.loads(stored.content))
        entry["search"] |= {
            "score": score,
            "extension": [
                {"url": "http://hl7.org/fhir/StructureDefinition/match-grade", "valueCode": grade},
            ],
        }
        entries.append(entry)
    return FhirResponse(searchset_bundle(entries, len(entries), []))


@router.post("/Patient/{rid}/$link")
async def link_patient(
    rid: str,
    svc: ServicesDep,
    grant: Annotated[Grant, Depends(Scope("u", "Patient"))],
    body: BodyDep,
    key: RequestKeyDep,
) -> FhirResponse:
    rid = fv.check_id(rid, "Patient id")
    records = svc.records
    head = records.store.head("Patient", rid)
    if head is None:
        raise NotHeld(f"Patient/{rid} is not held here")
    require_compartment(svc, grant, head[1])
    ident = (_parameters(fv.parse_json(body, svc.config.limits)).get("identifier") or {}).get("valueIdentifier")
    systems = records.identity.systems
    if not isinstance(ident, dict) or ident.get("system") not in systems or not ident.get("value"):
        where = "Parameters.parameter[identifier].valueIdentifier"
        raise FhirInvalid([Issue("value", where, f"an identifier in a consortium system ({', '.join(systems)})")])
    patient = json.loads(records.read("Patient", rid).content)
    patient.pop("meta", None)
    new = {"system": str(ident["system"]), "value": str(ident["value"])}
    others = [i for i in patient.get("identifier") or [] if (i.get("system"), i.get("value")) != tuple(new.values())]
    patient["identifier"] = [*others, new]
    entry = fv.entry({"resource": patient, "request": {"method": "PUT", "url": f"Patient/{rid}"}}, 0)
    entry.if_match = etag(head[0])
    (written,) = await records.transaction([entry], compartment(svc, grant), key)
    return written_response(written)
