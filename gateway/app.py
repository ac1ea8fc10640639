"""The FHIR REST API one member org runs (FastAPI). Requests flow one way: HTTP → FHIR checks → records (store +
ledger) → response. Errors are mapped to OperationOutcomes once, by the exception handler at the bottom.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from gateway import supply_api
from gateway.auth import Client, TokenPolicy, authenticate, require
from gateway.outcome import FHIR_JSON, KNOWN_ERRORS, HttpProblem, operation_outcome, problem
from records import search
from records import validation as fv
from records.audit_events import audit_event
from records.federation import Disclosed, Federation, Withheld
from records.service import Records, Written, claim_response_id
from records.store import Stored, Tampered

PURPOSE_DEFAULT = "TREAT"
CLAIM_RESPONSE_WAIT_S = 5.0
AUDIT_FROM, AUDIT_TO = "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z"

log = logging.getLogger("careledger.gateway")


@dataclass(frozen=True)
class GatewayConfig:
    org: str
    tokens: TokenPolicy
    limits: fv.Limits = field(default_factory=fv.Limits)
    federation: Federation | None = None  # None: this gateway neither asks nor answers other members


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
        started = time.perf_counter()
        response: Response = await call_next(request)
        elapsed = time.perf_counter() - started
        route = getattr(request.scope.get("route"), "path", "other")  # the template, never ids or query values
        latency.labels(request.method, route).observe(elapsed)
        requests.labels(request.method, route, str(response.status_code)).inc()
        log.info(
            "request",
            extra={
                "method": request.method,
                "route": route,
                "status": response.status_code,
                "ms": round(elapsed * 1e3),
            },
        )
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
    @app.post("/fhir/")
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

    conditional_creates = asyncio.Lock()  # one conditional create at a time: the check and the write are one step

    @app.post("/fhir/{rtype}")
    async def create(rtype: str, request: Request) -> FhirResponse:
        client(request, rtype, "write")
        resource = fv.parse_json(await body_of(request), config.limits)
        entry = fv.entry({"resource": resource, "request": {"method": "POST", "url": rtype}}, 0)
        condition = request.headers.get("if-none-exist")
        if condition is None:
            (w,) = await records.transaction([entry])
        else:
            system, value = _identifier_condition(condition)
            async with conditional_creates:
                matches = records.store.with_identifier(rtype, system, value)
                if len(matches) > 1:
                    raise HttpProblem(412, "duplicate", f"If-None-Exist matches {len(matches)} {rtype} resources")
                if matches:
                    return _resource_response(stored_or_404(rtype, matches[0][0]))
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

    @app.get("/fhir/AuditEvent")
    async def audit_log(request: Request, patient: str) -> FhirResponse:
        """The on-chain access log of a patient held here, as AuditEvents (newest last)."""
        client(request, "AuditEvent", "read")
        pid = patient.removeprefix("Patient/")
        pseudonym = records.pseudonym_of_local_patient(pid)
        if pseudonym is None:
            raise HttpProblem(404, "not-found", f"Patient/{pid} is not held here")
        entries = await records.ledger.audit_by_patient(pseudonym, AUDIT_FROM, AUDIT_TO)
        events = [audit_event(e, f"Patient/{pid}") for e in entries]
        return FhirResponse(_searchset(request, events, len(events)))

    @app.get("/fhir/Patient/$everything")
    async def everything_by_identifier(request: Request, identifier: str, purpose: str = PURPOSE_DEFAULT) -> Response:
        """The longitudinal record of a patient named by the consortium identifier (system|value)."""
        client(request, "*", "read")
        system, value = _identifier_condition(f"identifier={identifier}")
        if system != records.mpi_system:
            raise HttpProblem(
                400, "value", f"name the patient by the consortium identifier (system {records.mpi_system})"
            )
        return await everything(request, records.pseudonym_of_identifier(system, value), purpose)

    @app.get("/fhir/Patient/{rid}/$everything")
    async def everything_of_patient(rid: str, request: Request, purpose: str = PURPOSE_DEFAULT) -> Response:
        """The longitudinal record of a patient held here: what this org holds, and what every other custodian on
        the ledger's index discloses to this org under the patient's consent."""
        client(request, "*", "read")
        pseudonym = records.pseudonym_of_local_patient(rid)
        if pseudonym is None:
            raise HttpProblem(404, "not-found", f"Patient/{rid} is not held here")
        return await everything(request, pseudonym, purpose)

    async def everything(request: Request, pseudonym: str, purpose: str) -> Response:
        custodians = {c["custodian"] for c in await records.ledger.custodians(pseudonym)}
        if not custodians:
            raise HttpProblem(404, "not-found", "no member holds records of this patient")
        own = records.store.patient_resources(pseudonym) if config.org in custodians else []
        others = sorted(custodians - {config.org})
        if others and config.federation is None:
            raise HttpProblem(503, "not-supported", "this gateway is not configured to reach other members")
        answers = await config.federation.everything(others, pseudonym, purpose) if config.federation else []
        base = str(request.base_url).rstrip("/")
        entries = [_match(f"{base}/fhir/{s.type}/{s.id}", json.loads(s.content)) for s in own]
        withheld: list[Withheld] = []
        for a in answers:
            if isinstance(a, Disclosed):
                entries += [_match(f"{a.base_url}/fhir/{r['resourceType']}/{r['id']}", r) for r in a.resources]
            else:
                withheld.append(a)
        if withheld and not entries:
            status = 403 if any(w.status == 403 for w in withheld) else 502
            issues = [i for w in withheld for i in w.outcome.get("issue", [])]
            return FhirResponse({"resourceType": "OperationOutcome", "issue": issues}, status_code=status)
        entries += [{"resource": w.outcome, "search": {"mode": "outcome"}} for w in withheld]
        log.info(
            "everything", extra={"custodians": len(custodians), "entries": len(entries), "withheld": len(withheld)}
        )
        return FhirResponse({"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries})

    def member_caller(request: Request) -> str:
        """The member org calling, named by the CA of its TLS client certificate."""
        if config.federation is None:
            raise HttpProblem(404, "not-supported", "this gateway does not answer other members")
        tls = request.scope.get("extensions", {}).get("tls", {})
        chain = tls.get("client_cert_chain") or []
        caller = config.federation.caller(chain[0] if chain else None)
        if caller is None:
            raise HttpProblem(401, "login", "org-to-org calls need a member gateway's TLS client certificate")
        return caller

    @app.get("/federation/claim-responses/{claim_id}")
    async def claim_response_for_provider(claim_id: str, request: Request) -> FhirResponse:
        """Org-to-org: the provider of a claim fetches the insurer's ClaimResponse to it. The ledger says whose
        claim it is; nobody else gets it."""
        caller = member_caller(request)
        # The provider asks as soon as the adjudication commits, while this org's worker may still be storing the
        # response: wait for it a little here rather than have the provider poll.
        deadline = time.monotonic() + CLAIM_RESPONSE_WAIT_S
        while records.read("ClaimResponse", claim_response_id(claim_id)) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stored = stored_or_404("ClaimResponse", claim_response_id(claim_id))
        # The requestor was written from the claim on chain when the response was built.
        requestor = json.loads(stored.content).get("requestor", {}).get("identifier", {}).get("value")
        if caller != requestor:
            raise HttpProblem(403, "forbidden", f"claim {claim_id} is not a claim of {caller}")
        return _resource_response(stored)

    @app.get("/federation/everything/{pseudonym}")
    async def disclose(pseudonym: str, request: Request, purpose: str = PURPOSE_DEFAULT) -> FhirResponse:
        """Org-to-org: another member asks for this org's records of a patient. The TLS client certificate names
        the asking org; consent is checked and the access logged on chain in one transaction, permit or deny."""
        accessor = member_caller(request)
        pid = records.store.patient_of_pseudonym(pseudonym)
        if pid is None:
            raise HttpProblem(404, "not-found", "no records of this patient are held here")
        decision = await records.ledger.record_access(pseudonym, accessor, f"Patient/{pid}/$everything", purpose)
        log.info("disclosure", extra={"accessor": accessor, "decision": decision["decision"], "tx": decision["txId"]})
        if decision["decision"] != "permit":
            raise HttpProblem(403, "forbidden", f"{config.org} refused {accessor}: {decision['reason']}")
        held = records.store.patient_resources(pseudonym)
        entries = [{"resource": json.loads(s.content)} for s in held]
        return FhirResponse({"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries})

    @app.get("/fhir/{rtype}")
    async def search_type(rtype: str, request: Request) -> FhirResponse:
        client(request, rtype, "read")
        if rtype not in fv.PATIENT_ELEMENT:
            raise HttpProblem(404, "not-supported", f"{rtype} is not stored here")
        wanted = search.parse(rtype, list(request.query_params.multi_items()), records.pseudonym_of_local_patient)
        query = wanted.query
        if wanted.identifier is not None:
            ids = tuple(i for i, _ in records.store.with_identifier(rtype, *wanted.identifier))
            query = replace(query, ids=tuple(set(ids) & set(query.ids)) if query.ids is not None else ids)
        total, page = records.store.search(query)
        resources = [json.loads(s.content) for s in page]
        return FhirResponse(_searchset(request, resources, total, query.offset, query.count))

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
        if mapped is not None and mapped[0] >= 500:
            log.warning("request failed", extra={"error": type(err).__name__, "detail": str(err)[:300]})
        if mapped is None:
            log.exception("unhandled error", extra={"route": request.url.path})
            mapped = 500, operation_outcome([fv.Issue("exception", "", "internal error; see the gateway log")])
        status, outcome = mapped
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return FhirResponse(outcome, status_code=status, headers=headers)

    app.include_router(supply_api.router(records.ledger, client))

    # Known errors are answered by Starlette's exception middleware; anything else falls to the catch-all (500).
    for known in KNOWN_ERRORS:
        app.add_exception_handler(known, to_outcome)
    app.add_exception_handler(Exception, to_outcome)
    return app


def _identifier_condition(condition: str) -> tuple[str, str]:
    """`identifier=system|value` (an If-None-Exist header or the identifier parameter) as (system, value)."""
    name, _, token = condition.partition("=")
    system, sep, value = token.partition("|")
    if name.strip() != "identifier" or not sep or not system or not value:
        raise HttpProblem(400, "value", f"{condition!r}: the condition is identifier=system|value")
    return system, value


def _match(full_url: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": full_url, "resource": resource, "search": {"mode": "match"}}


def _searchset(
    request: Request, resources: list[dict[str, Any]], total: int, offset: int = 0, count: int | None = None
) -> dict[str, Any]:
    """A searchset Bundle with self/next/previous links that repeat the query with another `_offset`."""
    base = str(request.base_url).rstrip("/")

    def link(relation: str, at: int) -> dict[str, str]:
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "_offset"] + [("_offset", str(at))]
        return {"relation": relation, "url": f"{base}{request.url.path}?{urlencode(params)}"}

    links = [link("self", offset)]
    if count is not None and offset + count < total:
        links.append(link("next", offset + count))
    if count is not None and offset > 0:
        links.append(link("previous", max(0, offset - count)))
    entries = [_match(f"{base}/fhir/{r['resourceType']}/{r['id']}", r) for r in resources]
    return {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links, "entry": entries}


def capability_statement(config: GatewayConfig) -> dict[str, Any]:
    """Exactly what this server supports."""
    search_params = [
        {"name": "patient", "type": "reference"},
        {"name": "_id", "type": "token"},
        {"name": "identifier", "type": "token"},
        {"name": "_lastUpdated", "type": "date"},
        {"name": "_count", "type": "number"},
    ]
    interactions = ("read", "vread", "history-instance", "create", "update", "search-type")

    def resource(t: str) -> dict[str, Any]:
        operations = [{"name": "verify", "definition": "urn:careledger:operation:verify"}]
        if t == "Patient":
            operations += [
                {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
                {"name": "erase", "definition": "urn:careledger:operation:erase"},
            ]
        return {
            "type": t,
            "interaction": [{"code": c} for c in interactions],
            "versioning": "versioned",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalUpdate": False,
            "searchParam": search_params,
            "operation": operations,
        }

    audit = {
        "type": "AuditEvent",
        "interaction": [{"code": "search-type"}],
        "searchParam": [{"name": "patient", "type": "reference"}],
    }
    smart = {"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}
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
                "security": {"service": [{"coding": [smart]}]},
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
                "resource": [resource(t) for t in sorted(fv.PATIENT_ELEMENT)] + [audit],
            }
        ],
    }
