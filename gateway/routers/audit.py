"""`GET /fhir/AuditEvent?patient=`: the on-chain access log of a patient held here, as AuditEvents (newest last)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from gateway.auth import Grant
from gateway.deps import Scope, ServicesDep, negotiate, require_compartment
from gateway.responses import FhirResponse, searchset
from records.audit_events import audit_event
from records.errors import NotHeld

AUDIT_FROM, AUDIT_TO = "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z"

router = APIRouter(prefix="/fhir", dependencies=[Depends(negotiate)])


@router.get("/AuditEvent")
async def audit_log(
    request: Request, patient: str, svc: ServicesDep, grant: Annotated[Grant, Depends(Scope("s", "AuditEvent"))]
) -> FhirResponse:
    pid = patient.removeprefix("Patient/")
    pseudonym = svc.records.pseudonym_of_local_patient(pid)
    if pseudonym is None:
        raise NotHeld(f"Patient/{pid} is not held here")
    require_compartment(svc, grant, pseudonym)
    entries = await svc.records.ledger.audit_by_patient(pseudonym, AUDIT_FROM, AUDIT_TO)
    events = [audit_event(e, f"Patient/{pid}", _consent_reference(svc, e.get("consentId") or "")) for e in entries]
    return FhirResponse(searchset(request, events, len(events)))


def _consent_reference(svc: ServicesDep, key: str) -> str | None:
    held = svc.records.by_ledger_key("Consent", key) if key else None
    return f"Consent/{held.id}" if held else None
