"""Prometheus metrics and one structured log line per request, labelled by route template (never ids or values)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("careledger.gateway")


def instrument(app: FastAPI, claims_queued: Callable[[], int]) -> None:
    """Count and time every request, log it, and serve `/metrics`; with the claim outbox's backlog, read when
    scraped (`claims_queued`: claims of committed bundles not yet submitted on chain)."""
    registry = CollectorRegistry()
    requests = Counter("fhir_requests", "FHIR requests", ["method", "route", "status"], registry=registry)
    latency = Histogram("fhir_request_seconds", "FHIR request latency", ["method", "route"], registry=registry)
    queued = Gauge("claim_outbox_queued", "Claims of committed bundles waiting to be submitted", registry=registry)
    queued.set_function(lambda: _or_nan(claims_queued))
    app.add_middleware(Measured, requests=requests, latency=latency)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:  # in a worker thread: the outbox's count reads the store
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _or_nan(read: Callable[[], int]) -> float:
    """A reading, or NaN when the store cannot give it: the other metrics are still served."""
    try:
        return float(read())
    except Exception as e:
        log.warning("a metric could not be read", extra={"error": type(e).__name__})
        return math.nan


class Measured:
    """ASGI middleware (not Starlette's BaseHTTPMiddleware, which runs each request in a task of its own with
    streams between the two: a tenth of a gateway's CPU under load, for two headers and a log line)."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app fails before it answers

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - started
            method = str(scope["method"])
            route = getattr(scope.get("route"), "path", "other")  # the template, never ids or query values
            self.latency.labels(method, route).observe(elapsed)
            self.requests.labels(method, route, str(status)).inc()
            log.info("request", extra={"method": method, "route": route, "status": status, "ms": round(elapsed * 1e3)})
