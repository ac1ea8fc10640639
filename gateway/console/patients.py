"""Consent and audit (providers): for a patient held here, named by the id of its Patient resource, the consent
timeline (grants, revocations, expiries) as the chain recorded it, and the on-chain access log (permit or deny),
paged by the contract's bookmarks. A patient not held here is not looked up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from gateway.console import render
from gateway.console.auth import ConsoleDep, Viewer, ViewerDep, require_section
from gateway.deps import ServicesDep
from ledger.activity import ConsentRow
from records import validation as fv
from records.errors import NotHeld

router = APIRouter(prefix="/console/consent")
AUDIT_PAGE = 20
AUDIT_FROM, AUDIT_TO = "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z"


@dataclass(frozen=True)
class ConsentMoment:
    at: str
    what: str  # granted | revoked | expired | expires
    consent: ConsentRow
    tx_id: str  # "" for an expiry (no transaction: the period ended)


def consent_timeline(consents: list[ConsentRow], now: datetime) -> list[ConsentMoment]:
    """Grants, revocations and ends of period, in time order."""
    moments = []
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S")
    for c in consents:
        moments.append(ConsentMoment(c.granted_at, "granted", c, c.grant_tx))
        if c.revoked_at:
            moments.append(ConsentMoment(c.revoked_at, "revoked", c, c.revoke_tx))
        elif c.period_end:
            moments.append(ConsentMoment(c.period_end, "expired" if c.period_end < stamp else "expires", c, ""))
    return sorted(moments, key=lambda m: m.at)


def _pseudonyms(svc: ServicesDep, patient: str) -> list[str]:
    pid = fv.check_id(patient.removeprefix("Patient/"), "Patient id")
    local, consortium = svc.records.pseudonym_of_local_patient(pid), svc.records.consortium_pseudonym(pid)
    if local is None:
        raise NotHeld(f"Patient/{pid} is not held here")
    return sorted({local, consortium or local})


def _check(console: ConsoleDep, who: Viewer) -> None:
    require_section(console, who, "consent")  # Consent read, and AuditEvent search for the access log


@router.get("", response_class=HTMLResponse)
async def patient_page(
    request: Request, console: ConsoleDep, who: ViewerDep, svc: ServicesDep, patient: str = ""
) -> HTMLResponse:
    _check(console, who)
    moments: list[ConsentMoment] = []
    if patient:
        moments = consent_timeline(console.activity.consents(_pseudonyms(svc, patient)), datetime.now(UTC))
    return render.page(request, "consent.html", console, who, patient=patient, moments=moments)


@router.get("/audit", response_class=HTMLResponse)
async def audit_log(
    request: Request, console: ConsoleDep, who: ViewerDep, svc: ServicesDep, patient: str, bookmark: str = ""
) -> HTMLResponse:
    """One page of the patient's access log (rows), ending with a row that loads the next."""
    _check(console, who)
    held = _pseudonyms(svc, patient)  # 404 unless the patient is held here
    local = svc.records.pseudonym_of_local_patient(patient.removeprefix("Patient/")) or held[0]
    entries, next_bookmark = await svc.records.ledger.audit_page(local, AUDIT_FROM, AUDIT_TO, AUDIT_PAGE, bookmark)
    return render.fragment(request, "_audit.html", entries=entries, bookmark=next_bookmark, patient=patient)
