"""Binary content, streamed: `POST /fhir/Binary` and `GET /fhir/Binary/{id}` (`records.blobs`, docs/BLOBS.md).

- `POST /fhir/Binary` — the body is the content itself, any Content-Type, any size up to the configured limit
  (CARELEDGER_MAX_BLOB_BYTES, 4 GiB by default); the patient is named the FHIR way, by `X-Security-Context:
  Patient/<id>` (a Patient held here). The content is encrypted chunk by chunk as it arrives, stored as a blob, and
  a Binary resource that points at it is registered on chain. 201 with the Binary (no `data`) and its Location.
  Attachments then point at it (`url: Binary/<id>`); the write path fills in their size and hash.
- `GET /fhir/Binary/{id}` — the content, decrypted chunk by chunk, with its Content-Type; or the Binary resource
  itself with `Accept: application/fhir+json` (without `data`: the content is never inlined).

Scopes: `Binary` c to upload, r to read, within the launch patient's compartment for `patient/` scopes.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from gateway.auth import Grant
from gateway.deps import Scope, ServicesDep, require_compartment
from gateway.outcome import HttpProblem
from gateway.responses import FhirResponse, resource_response, written_response
from records import blobs
from records import validation as fv
from records.errors import Issue, NotHeld, NotKeptHere

router = APIRouter(prefix="/fhir")
MAX_BLOB_BYTES = int(os.environ.get("CARELEDGER_MAX_BLOB_BYTES") or 4 * 1024**3)


@router.post("/Binary")
async def upload(
    request: Request, svc: ServicesDep, grant: Annotated[Grant, Depends(Scope("c", "Binary"))]
) -> FhirResponse:
    records = svc.records
    if records.custodian.kind != "provider":
        raise NotKeptHere([Issue("forbidden", "Binary", f"a {records.custodian.kind} org keeps no Binary content")])
    context = (request.headers.get("x-security-context") or "").strip()
    if not context.startswith("Patient/"):
        raise HttpProblem(422, "required", "name the patient: X-Security-Context: Patient/<id>", "X-Security-Context")
    patient_id = fv.check_id(context.removeprefix("Patient/"), "X-Security-Context")
    pseudonym = records.pseudonym_of_local_patient(patient_id)
    if pseudonym is None:
        raise NotHeld(f"Patient/{patient_id} is not held here")
    require_compartment(svc, grant, pseudonym)
    try:
        declared = int(request.headers.get("content-length") or 0)
    except ValueError:
        raise HttpProblem(400, "structure", "Content-Length is not a number") from None
    if declared > MAX_BLOB_BYTES:
        raise HttpProblem(413, "too-costly", f"the content is {declared} bytes; at most {MAX_BLOB_BYTES} here")
    content_type = (request.headers.get("content-type") or "application/octet-stream").split(";")[0].strip()

    async def limited() -> AsyncIterator[bytes]:
        seen = 0
        async for piece in request.stream():
            seen += len(piece)
            if seen > MAX_BLOB_BYTES:
                raise HttpProblem(413, "too-costly", f"the content is larger than {MAX_BLOB_BYTES} bytes")
            yield piece

    written = await records.keep_binary(pseudonym, content_type, limited(), f"Patient/{patient_id}")
    return written_response(written)


@router.get("/Binary/{rid}")
async def download(
    rid: str, request: Request, svc: ServicesDep, grant: Annotated[Grant, Depends(Scope("r", "Binary"))]
) -> Response:
    stored = svc.records.read("Binary", fv.check_id(rid, "Binary id"))
    require_compartment(svc, grant, stored.patient)
    accept = (request.headers.get("accept") or "") + (request.query_params.get("_format") or "")
    if "fhir+json" in accept or accept == "json":
        return resource_response(stored)
    binary = json.loads(stored.content)
    blob = blobs.blob_of(binary)
    name = blobs.name_of(str((blob or {}).get("url") or ""))
    if blob is None or name is None:
        raise NotHeld(f"Binary/{rid} has no content here")
    content = svc.records.blobs.get(stored.patient, name)
    headers = {"Content-Length": str(blob["size"]), "ETag": f'W/"{stored.version}"', "Digest": f"sha={blob['hash']}"}
    return StreamingResponse(content, media_type=str(binary.get("contentType")), headers=headers)
