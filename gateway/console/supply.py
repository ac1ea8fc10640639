"""Supply (manufacturers and providers): a pack by GTIN and serial, its custody path from the chain, and its flags:
recalled, expired, dispensed, decommissioned, clone suspected (a suspicious scan reported for it)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from gateway.console import render
from gateway.console.auth import ConsoleDep, ViewerDep, require_section
from gateway.deps import ServicesDep
from ledger.contracts import Ledger

router = APIRouter(prefix="/console/supply")
CLONE_SIGNS = frozenset({"already_dispensed", "custody_mismatch", "lot_mismatch", "expiry_mismatch", "decommissioned"})


def pack_flags(unit: dict[str, Any], verification: dict[str, Any], alerts: list[dict[str, Any]]) -> list[str]:
    """What an operator must know of a pack, from its state, a verification as printed, and the reported scans."""
    flags = set(verification.get("flags") or [])
    if unit.get("state") == "dispensed":
        flags.add("dispensed")
    if unit.get("state") == "decommissioned":
        flags.add("decommissioned")
    if any(CLONE_SIGNS & set(a.get("flags") or []) for a in alerts):
        flags.add("clone suspected")
    flags.discard("already_dispensed")
    return sorted(flags)


async def _pack(ledger: Ledger, gtin: str, serial: str) -> dict[str, Any]:
    unit = await ledger.pack(gtin, serial)
    custody = await ledger.custody(gtin, serial)
    alerts = await ledger.pack_alerts(gtin, serial)
    verification = await ledger.verify_pack(gtin, serial, str(unit.get("lot")), str(unit.get("expiry")))
    return {"unit": unit, "custody": custody, "alerts": alerts, "flags": pack_flags(unit, verification, alerts)}


@router.get("", response_class=HTMLResponse)
async def pack_page(
    request: Request, console: ConsoleDep, who: ViewerDep, svc: ServicesDep, gtin: str = "", serial: str = ""
) -> HTMLResponse:
    require_section(console, who, "supply")
    found = await _pack(svc.records.ledger, gtin.strip(), serial.strip()) if gtin and serial else None
    return render.page(request, "supply.html", console, who, gtin=gtin, serial=serial, pack=found)
