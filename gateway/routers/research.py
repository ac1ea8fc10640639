"""De-identified research data for a study's sponsor (Trials contract, `records.deidentify`,
docs/DEIDENTIFICATION.md).

- `POST /research/studies/{study}/datasets/{version}` — the sponsor's researcher (scope `ResearchStudy` read) makes
  a dataset version: every custodian that enrolled subjects exports its part, de-identified, under each subject's
  research consent (HRESCH, decided and logged on chain per subject); the parts become NDJSON per type, their digest
  is anchored with `Trials:AnchorDataset` (only the sponsor can; a version once), and the ZIP is the answer
  (`X-Dataset-Digest`, `X-Ledger-Transaction`).
- `POST /research/studies/{study}/datasets/{version}/$verify` — anyone with a token sends a copy (the ZIP); its digest
  is recomputed from its NDJSON files and checked with `Trials:VerifyDataset`. Offline:
  `python -m records.deidentify digest EXPORT.zip`.
- `GET /federation/research/{study}` — org to org, over mutual TLS: a custodian's part for the calling org, which
  must be the sponsor the subjects consented to.
"""

from __future__ import annotations

import re
import zipfile
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from gateway.auth import Grant
from gateway.deps import ClientDep, MemberDep, Scope, ServicesDep
from gateway.outcome import HttpProblem
from records import deidentify

router = APIRouter()
STUDY = re.compile(r"^[A-Za-z0-9.-]{1,64}$")
VERSION = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
MAX_EXPORT_BYTES = 512 * 1024 * 1024


def _names(study: str, version: str | None = None) -> None:
    if not STUDY.match(study):
        raise HttpProblem(400, "value", "a study id is 1-64 letters, digits, dots and hyphens")
    if version is not None and not VERSION.match(version):
        raise HttpProblem(400, "value", "a dataset version is 1-32 letters, digits, dots, underscores and hyphens")


@router.get("/federation/research/{study}")
async def custodian_part(study: str, caller: MemberDep, svc: ServicesDep) -> JSONResponse:
    _names(study)
    return JSONResponse({"resources": await svc.sharing.research_export(study, caller)})


@router.post("/research/studies/{study}/datasets/{version}")
async def make_dataset(
    study: str, version: str, svc: ServicesDep, _: Annotated[Grant, Depends(Scope("r", "ResearchStudy"))]
) -> Response:
    _names(study, version)
    files = deidentify.ndjson_files(await svc.sharing.research_dataset(study))
    digest = deidentify.dataset_digest(study, version, files)
    anchored = await svc.records.ledger.anchor_dataset(study, version, digest)
    headers = {
        "X-Dataset-Digest": digest,
        "X-Ledger-Transaction": anchored.tx_id,
        "Content-Disposition": f'attachment; filename="{study}-{version}.zip"',
    }
    return Response(deidentify.write_zip(study, version, files), media_type="application/zip", headers=headers)


@router.post("/research/studies/{study}/datasets/{version}/$verify")
async def verify_dataset(study: str, version: str, request: Request, svc: ServicesDep, _: ClientDep) -> JSONResponse:
    _names(study, version)
    length = request.headers.get("content-length") or "0"
    if not length.isdigit() or int(length) > MAX_EXPORT_BYTES:
        raise HttpProblem(413, "too-costly", f"an export is at most {MAX_EXPORT_BYTES} bytes here")
    try:
        named_study, named_version, files = deidentify.read_zip(await request.body())
    except (zipfile.BadZipFile, KeyError, ValueError) as e:
        raise HttpProblem(422, "structure", f"not a CareLedger export: {e}") from None
    digest = deidentify.dataset_digest(study, version, files)
    check = await svc.records.ledger.verify_dataset(study, version, digest)
    ok = bool(check["match"]) and (named_study, named_version) == (study, version)
    message = (
        "the copy is the anchored dataset"
        if ok
        else f"the copy's digest {digest} is not the anchored {check['anchoredDigest']}"
    )
    params = [
        {"name": "result", "valueBoolean": ok},
        {"name": "message", "valueString": message},
        {"name": "digest", "valueString": digest},
        {"name": "anchoredAt", "valueInstant": check.get("anchoredAt")},
    ]
    return JSONResponse({"resourceType": "Parameters", "parameter": params}, media_type="application/fhir+json")
