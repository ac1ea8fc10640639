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
| POST /supply/verify {gtin, serial, lot, expiry} | Verify, submitted (suspicious: Supply.Alert) | any member |
| GET /supply/units/{gtin}/{serial}[/history] | Get, History | any member |

Bearer token scopes: `Medication.write` for changes, `Medication.read` for reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ledger.contracts import PHARMA, Ledger

SCOPE_TYPE = "Medication"


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


def router(ledger: Ledger, authorize: Callable[[Request, str, str], object]) -> APIRouter:
    """The /supply routes; `authorize(request, resource type, "read"|"write")` checks the bearer token."""
    api = APIRouter(prefix="/supply")

    async def change(request: Request, function: str, *args: str, status: int = 200) -> JSONResponse:
        authorize(request, SCOPE_TYPE, "write")
        done = await ledger.submit(PHARMA, f"Supply:{function}", *args)
        return JSONResponse({"result": done.result, "txId": done.tx_id}, status_code=status)

    async def read(request: Request, function: str, *args: str) -> JSONResponse:
        authorize(request, SCOPE_TYPE, "read")
        result: Any = await ledger.evaluate(PHARMA, f"Supply:{function}", *args)
        return JSONResponse(result)

    @api.post("/units", status_code=201)
    async def commission(body: PackIdentity, request: Request) -> JSONResponse:
        return await change(request, "Commission", body.model_dump_json(), status=201)

    @api.post("/units/{gtin}/{serial}/ship")
    async def ship(gtin: str, serial: str, body: Shipment, request: Request) -> JSONResponse:
        return await change(request, "Ship", gtin, serial, body.to)

    @api.post("/units/{gtin}/{serial}/receive")
    async def receive(gtin: str, serial: str, request: Request) -> JSONResponse:
        return await change(request, "Receive", gtin, serial)

    @api.post("/units/{gtin}/{serial}/dispense")
    async def dispense(gtin: str, serial: str, request: Request) -> JSONResponse:
        return await change(request, "Dispense", gtin, serial)

    @api.post("/units/{gtin}/{serial}/decommission")
    async def decommission(gtin: str, serial: str, body: Reason, request: Request) -> JSONResponse:
        return await change(request, "Decommission", gtin, serial, body.reason)

    @api.post("/recalls")
    async def recall(body: LotRecall, request: Request) -> JSONResponse:
        return await change(request, "RecallLot", body.gtin, body.lot, body.reason)

    @api.get("/verify")
    async def verify(gtin: str, serial: str, request: Request, lot: str = "", expiry: str = "") -> JSONResponse:
        return await read(request, "Verify", gtin, serial, lot, expiry)

    @api.post("/verify")
    async def verify_and_report(body: PackIdentity, request: Request) -> JSONResponse:
        return await change(request, "Verify", body.gtin, body.serial, body.lot, body.expiry)

    @api.get("/units/{gtin}/{serial}")
    async def unit(gtin: str, serial: str, request: Request) -> JSONResponse:
        return await read(request, "Get", gtin, serial)

    @api.get("/units/{gtin}/{serial}/history")
    async def history(gtin: str, serial: str, request: Request) -> JSONResponse:
        return await read(request, "History", gtin, serial)

    return api
