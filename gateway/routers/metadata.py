"""`GET /fhir/metadata`: the CapabilityStatement, open to every client (FHIR servers publish it unauthenticated)."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.capability import capability_statement
from gateway.deps import ServicesDep
from gateway.responses import FhirResponse

router = APIRouter(prefix="/fhir")


@router.get("/metadata")
async def metadata(svc: ServicesDep) -> FhirResponse:
    return FhirResponse(capability_statement(svc.config.org))
