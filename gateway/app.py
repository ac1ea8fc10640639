"""The FHIR REST API one member org runs (FastAPI). Requests flow one way: HTTP → FHIR checks → records (store +
ledger) → response. Errors are mapped to OperationOutcomes once, by the exception handler at the bottom.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from gateway import fhir_validation as fv
from gateway.auth import Client, TokenPolicy, authenticate, require
from gateway.outcome import FHIR_JSON, KNOWN_ERRORS, HttpProblem, operation_outcome, problem
from gateway.records import Records, Written
from gateway.store import Stored, Tampered

log = logging.getLogger("careledger.gateway")


@dataclass(frozen=True)
class GatewayConfig:
    org: str
    tokens: TokenPolicy
    limits: fv.Limits = field(default_factory=fv.Limits)


class FhirResponse(JSONResponse):
    media_type = FHIR_JSON

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()


def _etag(version: int) -> str:
    return f'W/"{version}"'


def _resource_response(stored: Stored, status: int = 200) -> FhirResponse:
    headers = {"ETag": _etag(stored.version), "Last-Modified": stored.last_updated}
    return FhirResponse(json.loads(stored.content), status_code=status, headers=headers)


def _entry_response(w: Written) -> dict[str, Any]:
    return {
        "status": "201 Created" if w.created else "200 OK",
        "location": f"{w.type}/{w.id}/_history/{w.version}",
        "etag": _etag(w.version),
        "lastModified": w.last_updated,
    }


def create_app(config: GatewayConfig, records: Records) -> FastAPI:
    app = FastAPI(title=f"CareLedger FHIR gateway ({config.org})", docs_url=None, redoc_url=None)
    registry = CollectorRegistry()
    requests = Counter("fhir_requests", "FHIR requests", ["method", "route", "status"], registry=registry)
    latency = Histogram("fhir_request_seconds", "FHIR request latency", ["method", "route"], registry=registry)
    ledger_latency = Histogram("ledger_register_seconds", "Records:Register round trip", registry=registry)

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Response:
        route = request.scope.get("route")
        with latency.labels(request.method, getattr(route, "path", "other")).time():
            response: Response = await call_next(request)
        route = request.scope.get("route")
        requests.labels(request.method, getattr(route, "path", "other"), str(response.status_code)).inc()
        return response

    def client(request: Request, resource_type: str, access: str) -> Client:
        c = authenticate(config.tokens, request.headers.get("authorization"))
        require(c, resource_type, access)
        return c

    async def body_of(request: Request) -> bytes:
        declared = int(request.headers.get("content-length") or 0)
        if declared > config.limits.max_bytes:
            raise fv.FhirInvalid([fv.Issue("too-costly", "", f"the request is {declared} bytes")], 413)
        return await request.body()

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/fhir/metadata")
    async def metadata() -> FhirResponse:
        return FhirResponse(capability_statement(config))

    @app.post("/fhir")
    async def bundle(request: Request) -> FhirResponse:
        env = fv.envelope(await body_of(request), config.limits)
        for raw in env.raw_entries:
            rtype = str(((raw or {}).get("resource") or {}).get("resourceType") or "*")
            client(request, rtype, "write")
        if not env.raw_entries:
            client(request, "*", "write")
        if env.type == "transaction":
            entries = fv.transaction_entries(env)
            with ledger_latency.time():
                written = await records.transaction(entries)
            body = {
                "resourceType": "Bundle",
                "type": "transaction-response",
                "entry": [{"response": _entry_response(w)} for w in written],
            }
            return FhirResponse(body)
        results = await asyncio.gather(*(batch_entry(raw, i) for i, raw in enumerate(env.raw_entries)))
        return FhirResponse({"resourceType": "Bundle", "type": "batch-response", "entry": list(results)})

    async def batch_entry(raw: Any, i: int) -> dict[str, Any]:
        """A batch answers each entry on its own: a failure is that entry's status and outcome."""
        try:
            entry = fv.entry(raw, i)
            entry.full_url = ""  # batch entries may not refer to each other
            (w,) = await records.transaction([entry])
            return {"response": _entry_response(w)}
        except Exception as e:
            mapped = problem(e)
            if mapped is None:
                raise
            status, outcome = mapped
            return {"response": {"status": str(status), "outcome": outcome}}

    @app.post("/fhir/{rtype}")
    async def create(rtype: str, request: Request) -> FhirResponse:
        client(request, rtype, "write")
        resource = fv.parse_json(await body_of(request), config.limits)
        entry = fv.entry({"resource": resource, "request": {"method": "POST", "url": rtype}}, 0)
        (w,) = await records.transaction([entry])
        headers = {"Location": f"{w.type}/{w.id}/_history/{w.version}", "ETag": _etag(w.version)}
        return FhirResponse(w.resource, status_code=201, headers=headers)

    @app.put("/fhir/{rtype}/{rid}")
    async def update(rtype: str, rid: str, request: Request) -> FhirResponse:
        client(request, rtype, "write")
        resource = fv.parse_json(await body_of(request), config.limits)
        if_match = request.headers.get("if-match")
        if if_match:
            head = records.store.head(rtype, rid)
            if head is None or if_match.strip() != _etag(head[0]):
                current = _etag(head[0]) if head else "none"
                raise HttpProblem(412, "conflict", f"If-Match {if_match} does not match the current version {current}")
        entry = fv.entry({"resource": resource, "request": {"method": "PUT", "url": f"{rtype}/{rid}"}}, 0)
        (w,) = await records.transaction([entry])
        headers = {"Location": f"{w.type}/{w.id}/_history/{w.version}", "ETag": _etag(w.version)}
        return FhirResponse(w.resource, status_code=201 if w.created else 200, headers=headers)

    def stored_or_404(rtype: str, rid: str, version: int | None = None) -> Stored:
        stored = records.read(rtype, rid, version)
        if stored is None:
            what = f"{rtype}/{rid}" + (f"/_history/{version}" if version else "")
            raise HttpProblem(404, "not-found", f"{what} is not held here")
        return stored

    @app.get("/fhir/{rtype}/{rid}")
    async def read(rtype: str, rid: str, request: Request) -> FhirResponse:
        client(request, rtype, "read")
        return _resource_response(stored_or_404(rtype, rid))

    @app.get("/fhir/{rtype}/{rid}/_history/{vid}")
    async def vread(rtype: str, rid: str, vid: int, request: Request) -> FhirResponse:
        client(request, rtype, "read")
        return _resource_response(stored_or_404(rtype, rid, vid))

    @app.get("/fhir/{rtype}/{rid}/_history")
    async def history(rtype: str, rid: str, request: Request) -> FhirResponse:
        client(request, rtype, "read")
        versions = records.store.history(rtype, rid)
        if not versions:
            raise HttpProblem(404, "not-found", f"{rtype}/{rid} is not held here")
        entries = [
            {"fullUrl": f"{rtype}/{rid}/_history/{s.version}", "resource": json.loads(s.content)} for s in versions
        ]
        return FhirResponse({"resourceType": "Bundle", "type": "history", "total": len(entries), "entry": entries})

    @app.get("/fhir/{rtype}/{rid}/$verify")
    async def verify(rtype: str, rid: str, request: Request) -> FhirResponse:
        client(request, rtype, "read")
        head = records.store.head(rtype, rid)
        if head is None:
            raise HttpProblem(404, "not-found", f"{rtype}/{rid} is not held here")
        try:
            result = await records.verify(stored_or_404(rtype, rid))
            ok, message = result.ok, result.reason
        except Tampered as e:  # a ciphertext that fails authentication is a verification result, not an error
            ok, message = False, str(e)
        params = [{"name": "result", "valueBoolean": ok}, {"name": "message", "valueString": message}]
        return FhirResponse({"resourceType": "Parameters", "parameter": params})

    @app.post("/fhir/Patient/{rid}/$erase")
    async def erase(rid: str, request: Request) -> FhirResponse:
        client(request, "Patient", "write")
        head = records.store.head("Patient", rid)
        if head is None:
            raise HttpProblem(404, "not-found", f"Patient/{rid} is not held here")
        tx_id = await records.erase(head[1])
        return FhirResponse(
            operation_outcome([fv.Issue("informational", "", f"erased; ledger transaction {tx_id}")], "information")
        )

    async def to_outcome(request: Request, err: Exception) -> FhirResponse:
        mapped = problem(err)
        if mapped is None:
            log.exception("unhandled error", extra={"route": request.url.path})
            mapped = 500, operation_outcome([fv.Issue("exception", "", "internal error; see the gateway log")])
        status, outcome = mapped
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return FhirResponse(outcome, status_code=status, headers=headers)

    # Known errors are answered by Starlette's exception middleware; anything else falls to the catch-all (500).
    for known in KNOWN_ERRORS:
        app.add_exception_handler(known, to_outcome)
    app.add_exception_handler(Exception, to_outcome)
    return app


def capability_statement(config: GatewayConfig) -> dict[str, Any]:
    """Exactly what this server supports."""
    resources = [
        {
            "type": t,
            "interaction": [{"code": c} for c in ("read", "vread", "history-instance", "create", "update")],
            "versioning": "versioned",
            "readHistory": True,
            "updateCreate": True,
            "conditionalUpdate": False,
            "operation": [{"name": "verify", "definition": "urn:careledger:operation:verify"}]
            + ([{"name": "erase", "definition": "urn:careledger:operation:erase"}] if t == "Patient" else []),
        }
        for t in sorted(fv.PATIENT_ELEMENT)
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-25",
        "kind": "instance",
        "software": {"name": "CareLedger FHIR gateway"},
        "implementation": {"description": f"CareLedger gateway of {config.org}"},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "SMART-on-FHIR",
                                }
                            ]
                        }
                    ]
                },
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
                "resource": resources,
            }
        ],
    }
