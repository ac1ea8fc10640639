"""Claims pages (providers and insurers): the queues by state with counts, volume and turnaround charts, a paged
queue, and one claim's timeline from the chain with the insurer's reasons per line. Only claims this org is a party
to: the index keeps no others, and a claim page asks the chain who the parties are."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from gateway.console import render
from gateway.console.auth import ConsoleDep, ViewerDep, require_section
from gateway.deps import ServicesDep
from gateway.outcome import HttpProblem
from ledger.activity import STATES, DayFigures
from ledger.errors import LedgerNotFound

router = APIRouter(prefix="/console/claims")
PAGE = 25
CHART_DAYS = 30


def chart_data(days: list[DayFigures]) -> str:
    """What the charts plot, as JSON for Chart.js (static/console.js)."""
    return json.dumps(
        {
            "labels": [d.day for d in days],
            "submitted": [d.submitted for d in days],
            "decided": [d.decided for d in days],
            "p50": [None if d.p50_hours is None else round(d.p50_hours, 3) for d in days],
            "p90": [None if d.p90_hours is None else round(d.p90_hours, 3) for d in days],
        }
    )


@router.get("", response_class=HTMLResponse)
async def overview(request: Request, console: ConsoleDep, who: ViewerDep, state: str = "") -> HTMLResponse:
    require_section(console, who, "claims")
    if state and state not in STATES:
        raise HttpProblem(400, "value", f"state is one of {', '.join(STATES)}")
    since = (datetime.now(UTC) - timedelta(days=CHART_DAYS)).date().isoformat()
    figures = console.activity.daily(since)
    return render.page(
        request,
        "claims.html",
        console,
        who,
        counts=console.activity.counts(),
        state=state,
        chart=chart_data(figures),
        figures=figures,
    )


@router.get("/queue", response_class=HTMLResponse)
async def queue(
    request: Request, console: ConsoleDep, who: ViewerDep, state: str = "", cursor: str = ""
) -> HTMLResponse:
    require_section(console, who, "claims")
    if state and state not in STATES:
        raise HttpProblem(400, "value", f"state is one of {', '.join(STATES)}")
    found = console.activity.queue(state or None, PAGE, cursor)
    return render.fragment(request, "_queue.html", page=found, state=state, org=console.org)


@router.get("/{claim_id}", response_class=HTMLResponse)
async def claim(request: Request, claim_id: str, console: ConsoleDep, who: ViewerDep, svc: ServicesDep) -> HTMLResponse:
    require_section(console, who, "claims")
    if not (len(claim_id) == 64 and all(c in "0123456789abcdef" for c in claim_id)):
        raise HttpProblem(400, "value", "a claim id is 64 hex characters")
    ledger = svc.records.ledger
    try:
        on_chain = await ledger.claim(claim_id)
    except LedgerNotFound:
        on_chain = None
    if on_chain is None or console.org.msp_id not in (on_chain.get("provider"), on_chain.get("insurer")):
        raise HttpProblem(404, "not-found", f"no claim {claim_id[:12]}… of {console.org.name}")
    decision = await _adjudication(svc, claim_id, on_chain)
    return render.page(
        request,
        "claim.html",
        console,
        who,
        claim=on_chain,
        timeline=console.activity.timeline(claim_id),
        decision=decision,
    )


async def _adjudication(svc: ServicesDep, claim_id: str, on_chain: dict[str, object]) -> dict[str, object] | None:
    """The insurer's decision per line (private to the two parties), once there is one and until it is purged."""
    if not on_chain.get("adjudicatedAt") or on_chain.get("linesPurged"):
        return None
    try:
        return await svc.records.ledger.adjudication(claim_id)
    except LedgerNotFound:
        return None
