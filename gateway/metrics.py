"""Prometheus metrics and one structured log line per request, labelled by route template (never ids or values)."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

log = logging.getLogger("careledger.gateway")


def instrument(app: FastAPI) -> None:
    """Count and time every request, log it, and serve `/metrics`."""
    registry = CollectorRegistry()
    requests = Counter("fhir_requests", "FHIR requests", ["method", "route", "status"], registry=registry)
    latency = Histogram("fhir_request_seconds", "FHIR request latency", ["method", "route"], registry=registry)

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        response: Response = await call_next(request)
        elapsed = time.perf_counter() - started
        route = getattr(request.scope.get("route"), "path", "other")  # the template, never ids or query values
        latency.labels(request.method, route).observe(elapsed)
        requests.labels(request.method, route, str(response.status_code)).inc()
        extra = {"method": request.method, "route": route, "status": response.status_code, "ms": round(elapsed * 1e3)}
        log.info("request", extra=extra)
        return response

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
