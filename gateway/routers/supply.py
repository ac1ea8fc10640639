"""The drug supply chain API: a small JSON API over the Supply contract on the `pharma` channel.

Why JSON and not FHIR: supply events are about packs (GTIN + serial number + lot + expiry, the GS1 / DSCSA
identity), not patients. FHIR `Medication.batch` carries lot and expiry but no serial number or custody step, and a
`MedicationDispense` is patient data, which must not reach the pharma channel. So commissioning, shipping, receiving,
dispensing, decommissioning and recalls are plain JSON calls, one contract transaction each; nothing here is stored
off-chain, because nothing here is PHI. Errors are OperationOutcomes like everywhere else in the gateway.

| call | contract | who |
|---|---|---|
| POST /supply/units {gtin, serial, lot, expiry} | Commission | manufacturer |
| POST /supply/units/{gtin}/{serial}/ship {to} | Ship | current custodian |
| POST /supply/units/{gtin}/{serial}/receive | Receive | the addressee |
| POST /supply/units/{gtin}/{serial}/dispense | Dispense | a provider holding it |
| POST /supply/units/{gtin}/{serial}/decommission {reason} | Decommission | manufacturer |
| POST /supply/recalls {gtin, lot, reason} | RecallLot | manufacturer |
| GET /supply/verify?gtin=&serial=&lot=&expiry= | Verify (read only) | any member |
| POST /supply/verify {gtin, serial, lot, expiry} | VerifyAndReport (suspicious: Supply.Alert) | any member |
| GET /supply/units/{gtin}/{serial}[/history] | Get, History | any member |

Bearer token scopes on `Medication`: `c` to commission, `u` for every other change, `r` for reads (v1: `write`, `read`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from gateway.auth import Grant
from gateway.deps import Scope, ServicesDep
from ledger.contracts import PHARMA, Ledger

SCOPE_TYPE = "Medication"

router = APIRouter(prefix="/supply")
Reader = Annotated[Grant, Depends(Scope("r", SCOPE_TYPE))]
Creator = Annotated[Grant, Depends(Scope("c", SCOPE_TYPE))]
Writer = Annotated[Grant, Depends(Scope("u", SCOPE_TYPE))]


class PackIdentity(BaseModel):
    gtin: str
    serial: str
    lot: str
    expiry: str  # YYYY-MM-DD


class Shipment(BaseModel):
    to: str  # addressee MSP id


class Reason(BaseModel):
    reason: str


class LotRecall(BaseModel):
    gtin: str
    lot: str
    reason: str


async def _change(ledger: Ledger, function: str, *args: str, status: int = 200) -> JSONResponse:
    done = await ledger.submit(PHARMA, f"Supply:{function}", *args)
    return JSONResponse({"result": done.result, "txId": done.tx_id}, status_code=status)


async def _read(ledger: Ledger, function: str, *args: str) -> JSONResponse:
    result: Any = await ledger.evaluate(PHARMA, f"Supply:{function}", *args)
    return JSONResponse(result)


@router.post("/units", status_code=201)
async def commission(body: PackIdentity, svc: ServicesDep, _: Creator) -> JSONResponse:
    return await _change(svc.records.ledger, "Commission", body.model_dump_json(), status=201)


@router.post("/units/{gtin}/{serial}/ship")
async def ship(gtin: str, serial: str, body: Shipment, svc: ServicesDep, _: Writer) -> JSONResponse:
    return await _change(svc.records.ledger, "Ship", gtin, serial, body.to)


@router.post("/units/{gtin}/{serial}/receive")
async def receive(gtin: str, serial: str, svc: ServicesDep, _: Writer) -> JSONResponse:
    return await _change(svc.records.ledger, "Receive", gtin, serial)


@router.post("/units/{gtin}/{serial}/dispense")
async def dispense(gtin: str, serial: str, svc: ServicesDep, _: Writer) -> JSONResponse:
    return await _change(svc.records.ledger, "Dispense", gtin, serial)


@router.post("/units/{gtin}/{serial}/decommission")
async def decommission(gtin: str, serial: str, body: Reason, svc: ServicesDep, _: Writer) -> JSONResponse:
    return await _change(svc.records.ledger, "Decommission", gtin, serial, body.reason)


@router.post("/recalls")
async def recall(body: LotRecall, svc: ServicesDep, _: Writer) -> JSONResponse:
    return await _change(svc.records.ledger, "RecallLot", body.gtin, body.lot, body.reason)


@router.get("/verify")
async def verify(gtin: str, serial: str, svc: ServicesDep, _: Reader, lot: str = "", expiry: str = "") -> JSONResponse:
    return await _read(svc.records.ledger, "Verify", gtin, serial, lot, expiry)


@router.post("/verify")
async def verify_and_report(body: PackIdentity, svc: ServicesDep, _: Writer) -> JSONResponse:
    return await _change(svc.records.ledger, "VerifyAndReport", body.gtin, body.serial, body.lot, body.expiry)


@router.get("/units/{gtin}/{serial}")
async def unit(gtin: str, serial: str, svc: ServicesDep, _: Reader) -> JSONResponse:
    return await _read(svc.records.ledger, "Get", gtin, serial)


@router.get("/units/{gtin}/{serial}/history")
async def history(gtin: str, serial: str, svc: ServicesDep, _: Reader) -> JSONResponse:
    return await _read(svc.records.ledger, "History", gtin, serial)
