"""What routes depend on: the org's services, the authenticated client and its scopes, the request body."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from gateway.auth import Client, TokenPolicy, authenticate, require
from gateway.outcome import HttpProblem
from records import validation as fv
from records.federation import Federation
from records.service import Records
from records.sharing import Sharing


@dataclass(frozen=True)
class GatewayConfig:
    org: str
    tokens: TokenPolicy
    limits: fv.Limits = field(default_factory=fv.Limits)


@dataclass(frozen=True)
class Services:
    """Everything a route works with, made once per process (`gateway.serve`) or by a test."""

    config: GatewayConfig
    records: Records
    sharing: Sharing

    @property
    def federation(self) -> Federation | None:
        return self.sharing.federation


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]


def authenticated(request: Request, svc: ServicesDep) -> Client:
    """The EHR client named by the request's bearer token (401 without a valid one)."""
    return authenticate(svc.config.tokens, request.headers.get("authorization"))


ClientDep = Annotated[Client, Depends(authenticated)]


class Scope:
    """A dependency that lets a request through only if the token's scopes allow `access` on the resource type (the
    route's `rtype` path parameter unless given)."""

    def __init__(self, access: str, resource_type: str | None = None) -> None:
        self.access = access
        self.resource_type = resource_type

    def __call__(self, request: Request, client: ClientDep) -> Client:
        rtype = self.resource_type or str(request.path_params.get("rtype") or "*")
        require(client, rtype, self.access)
        return client


async def fhir_body(request: Request, svc: ServicesDep) -> bytes:
    """The request body, refused before it is read when it declares more than the limit."""
    declared = int(request.headers.get("content-length") or 0)
    if declared > svc.config.limits.max_bytes:
        raise HttpProblem(413, "too-costly", f"the request is {declared} bytes; at most {svc.config.limits.max_bytes}")
    return await request.body()


BodyDep = Annotated[bytes, Depends(fhir_body)]


def member_caller(request: Request, svc: ServicesDep) -> str:
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
