"""Who is looking: the console admits the same org-scoped callers as the API. A bearer token of the org's issuer (the
Authorization header, or the cookie the login page sets from a token pasted into it), or a TLS client certificate
issued by the org's own TLS CA. Every page shows only what the org's own peer holds for it; sections also need the
token's `system/` read scope on their FHIR type (a client certificate is the org itself, and sees all its sections)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from gateway.auth import WHAT, Client, authenticate
from gateway.console.service import SECTIONS, Console
from gateway.deps import ServicesDep
from gateway.outcome import HttpProblem

COOKIE = "careledger_console"


@dataclass(frozen=True)
class Viewer:
    org: str  # MSP id
    subject: str
    via: str  # token | certificate
    client: Client | None

    def may(self, resource_type: str, letter: str = "r") -> bool:
        """Whether the viewer may see the org's data of this type. A section shows every patient's data the org
        holds, so a `patient/` scope (one patient's compartment) opens none: only a `system/` scope does."""
        if self.client is None:
            return True
        grant = self.client.grant(resource_type, letter)
        return grant is not None and grant.patient is None


def _own_certificate(request: Request, svc: ServicesDep) -> bool:
    tls = request.scope.get("extensions", {}).get("tls", {})
    chain = tls.get("client_cert_chain") or []
    return bool(chain) and svc.federation is not None and svc.federation.caller(chain[0]) == svc.config.org


async def viewer(request: Request, svc: ServicesDep) -> Viewer:
    """The logged-in viewer, or 401 (the console answers it with the login page)."""
    if _own_certificate(request, svc):
        return Viewer(svc.config.org, "client certificate", "certificate", None)
    header = request.headers.get("authorization")
    if header is None and (cookie := request.cookies.get(COOKIE)):
        header = f"Bearer {cookie}"
    if header is None:
        raise HttpProblem(401, "login", "log in with a token of this org, or its client certificate")
    client = authenticate(svc.config.tokens, header)
    return Viewer(svc.config.org, client.subject, "token", client)


ViewerDep = Annotated[Viewer, Depends(viewer)]


async def console_of(svc: ServicesDep) -> Console:
    if svc.console is None:
        raise HttpProblem(404, "not-supported", "this gateway runs without a console")
    return svc.console


ConsoleDep = Annotated[Console, Depends(console_of)]


# What a section's pages read beyond its FHIR type: the consent section's access log searches AuditEvent.
ALSO_NEEDED = {"consent": (("AuditEvent", "s"),)}


def _not_allowed(who: Viewer, section: str) -> str:
    """What the viewer may not do that the section needs ("" when nothing)."""
    for rtype, letter in ((SECTIONS[section][1], "r"), *ALSO_NEEDED.get(section, ())):
        if not who.may(rtype, letter):
            return f"{WHAT[letter]} of {rtype}"
    return ""


def sections(console: Console, who: Viewer) -> list[str]:
    """The sections this viewer sees, in menu order: those it may open."""
    return [s for s in SECTIONS if console.has_section(s) and not _not_allowed(who, s)]


def require_section(console: Console, who: Viewer, section: str) -> None:
    if not console.has_section(section):
        raise HttpProblem(404, "not-found", f"{console.org.name} has no {section} section")
    if missing := _not_allowed(who, section):
        raise HttpProblem(403, "forbidden", f"the token's scopes do not allow {missing}")


def require_channel(console: Console, channel: str) -> None:
    if channel not in console.channels:
        raise HttpProblem(404, "not-found", f"{console.org.name} is not a member of a channel named {channel!r}")
