"""What routes depend on: the org's services, the authenticated client and its scopes, the request body."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from gateway.auth import Client, Grant, TokenPolicy, authenticate, require
from gateway.console.service import Console
from gateway.outcome import HttpProblem
from ledger.contracts import CLAIMS, PHARMA, PROVIDERS
from records import validation as fv
from records.federation import Federation
from records.pending import RequestKey
from records.service import Records
from records.sharing import Sharing


@dataclass(frozen=True)
class GatewayConfig:
    org: str
    tokens: TokenPolicy
    limits: fv.Limits = field(default_factory=fv.Limits)
    channels: frozenset[str] = frozenset({PROVIDERS, CLAIMS, PHARMA})  # those the org's peer serves


@dataclass(frozen=True)
class Services:
    """Everything a route works with, made once per process (`gateway.serve`) or by a test."""

    config: GatewayConfig
    records: Records
    sharing: Sharing
    console: Console | None = None  # the web console's sources; None: no console

    @property
    def federation(self) -> Federation | None:
        return self.sharing.federation


async def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]


async def authenticated(request: Request, svc: ServicesDep) -> Client:
    """The EHR client named by the request's bearer token (401 without a valid one)."""
    return authenticate(svc.config.tokens, request.headers.get("authorization"))


ClientDep = Annotated[Client, Depends(authenticated)]


class Scope:
    """A dependency that lets a request through only if the token's scopes allow the interaction (`letter`: one of
    c r u d s) on the resource type (the route's `rtype` path parameter unless given). It returns the grant, which
    says whether the request is limited to the launch patient's compartment."""

    def __init__(self, letter: str, resource_type: str | None = None) -> None:
        self.letter = letter
        self.resource_type = resource_type

    async def __call__(self, request: Request, client: ClientDep) -> Grant:
        rtype = self.resource_type or str(request.path_params.get("rtype") or "*")
        return require(client, rtype, self.letter)


def compartment(svc: Services, grant: Grant) -> str | None:
    """The pseudonym a `patient/` grant limits the request to, or None when it is not limited. A launch patient not
    held here limits it to nothing: "-" is no pseudonym."""
    if grant.patient is None:
        return None
    return svc.records.pseudonym_of_local_patient(grant.patient) or "-"


def require_compartment(svc: Services, grant: Grant, patient: str) -> None:
    """Refuse unless the resource (filed under `patient`) is in the grant's compartment."""
    limit = compartment(svc, grant)
    if limit is not None and limit != patient:
        raise HttpProblem(
            403, "forbidden", "the token's patient/ scopes do not reach outside the launch patient's record"
        )


JSON_TYPES = ("application/fhir+json", "application/json")
ACCEPTABLE = (*JSON_TYPES, "*/*", "application/*")


def _media_types(header: str) -> list[str]:
    return [part.split(";")[0].strip().lower() for part in header.split(",") if part.strip()]


async def negotiate(request: Request) -> None:
    """406 when the client accepts nothing this server writes (FHIR JSON); `_format` is honoured the same way."""
    accept = request.query_params.get("_format") or request.headers.get("accept") or ""
    wanted = _media_types(accept.replace("json", "application/json") if accept == "json" else accept)
    if wanted and not any(w in ACCEPTABLE for w in wanted):
        raise HttpProblem(406, "not-supported", f"this server answers in {JSON_TYPES[0]}, not {accept[:80]!r}")


async def fhir_body(request: Request, svc: ServicesDep) -> bytes:
    """The request body: FHIR JSON only (415 otherwise), refused before it is read when it declares more than the
    limit, and as soon as it passes the limit when it declares nothing."""
    content_type = _media_types(request.headers.get("content-type") or "")
    if not content_type or content_type[0] not in JSON_TYPES:
        shown = request.headers.get("content-type") or "none"
        raise HttpProblem(
            415, "not-supported", f"send {JSON_TYPES[0]} (or {JSON_TYPES[1]}); the Content-Type was {shown[:80]}"
        )
    try:
        declared = int(request.headers.get("content-length") or 0)
    except ValueError:
        raise HttpProblem(400, "structure", "Content-Length is not a number") from None
    limit = svc.config.limits.max_bytes
    if declared > limit:
        raise HttpProblem(413, "too-costly", f"the request is {declared} bytes; at most {limit}")
    body = bytearray()
    async for chunk in request.stream():  # a body sent without Content-Length is cut off at the limit, not read whole
        body += chunk
        if len(body) > limit:
            raise HttpProblem(413, "too-costly", f"the request is more than {limit} bytes")
    return bytes(body)


BodyDep = Annotated[bytes, Depends(fhir_body)]


async def member_caller(request: Request, svc: ServicesDep) -> str:
    """The member org calling, named by the CA of its TLS client certificate."""
    if svc.federation is None:
        raise HttpProblem(404, "not-supported", "this gateway does not answer other members")
    tls = request.scope.get("extensions", {}).get("tls", {})
    chain = tls.get("client_cert_chain") or []
    caller = svc.federation.caller(chain[0] if chain else None)
    if caller is None:
        raise HttpProblem(401, "login", "org-to-org calls need a member gateway's TLS client certificate")
    return caller


MemberDep = Annotated[str, Depends(member_caller)]


async def request_key(request: Request, body: BodyDep) -> RequestKey:
    """What makes a write request the same request when it is sent again: the client's Idempotency-Key, or else
    its method, path and body. A write answered "still pending" and sent again settles to the first one's result;
    one the client keyed is answered again for a day after that (records.pending.RequestKey)."""
    given = request.headers.get("idempotency-key")
    content = hashlib.sha256(f"{request.method} {request.url.path}\n".encode() + body).hexdigest()
    if not given:
        return RequestKey(f"{svc_org(request)}{content}")
    digest = hashlib.sha256(f"key {given}".encode()).hexdigest()
    return RequestKey(f"{svc_org(request)}{digest}", client_chosen=True, content=content)


def svc_org(request: Request) -> str:
    svc: Services = request.app.state.services
    return "".join(c for c in svc.config.org if c.isalnum())


RequestKeyDep = Annotated[RequestKey, Depends(request_key)]
