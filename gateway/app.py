"""The FHIR REST API one member org runs (FastAPI). Requests flow one way: HTTP → FHIR checks → records (store +
ledger) → response. Errors are mapped to OperationOutcomes once, by the exception handler below."""

from __future__ import annotations

import logging

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response

from gateway import consistency, metrics
from gateway.console import render as console_render
from gateway.console import routes as console_routes
from gateway.deps import Services
from gateway.outcome import KNOWN_ERRORS, operation_outcome, problem, retry_after
from gateway.responses import FhirResponse
from gateway.routers import (
    audit,
    binary,
    disclosure,
    federation,
    metadata,
    operations,
    patients,
    preauth,
    research,
    rest,
    subscriptions,
    supply,
)
from records.errors import Issue

log = logging.getLogger("careledger.gateway")


def create_app(services: Services) -> FastAPI:
    app = FastAPI(title=f"CareLedger FHIR gateway ({services.config.org})", docs_url=None, redoc_url=None)
    app.state.services = services
    metrics.instrument(app, services.records.store.claims_queued)
    consistency.report_blocks(app)
    # Specific paths first: the REST router's `/fhir/{rtype}` routes would otherwise take them.
    for router in (
        metadata,
        audit,
        preauth,
        patients,
        operations,
        federation,
        supply,
        subscriptions,
        disclosure,
        research,
        binary,
        rest,
    ):
        app.include_router(router.router, dependencies=[Depends(consistency.caught_up)])
    console_routes.install(app)

    async def to_outcome(request: Request, err: Exception) -> Response:
        mapped = problem(err)
        if mapped is not None and mapped[0] >= 500:
            log.warning("request failed", extra={"error": type(err).__name__, "detail": str(err)[:300]})
        if mapped is None:
            log.exception("unhandled error", extra={"route": request.url.path})
            mapped = 500, operation_outcome([Issue("exception", "", "internal error; see the gateway log")])
        status, outcome = mapped
        if request.url.path.startswith("/console"):
            return console_render.error(request, status, outcome)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else retry_after(status)
        return FhirResponse(outcome, status_code=status, headers=headers)

    # Known errors are answered by Starlette's exception middleware; anything else falls to the catch-all (500).
    for known in KNOWN_ERRORS:
        app.add_exception_handler(known, to_outcome)
    app.add_exception_handler(Exception, to_outcome)
    return app
