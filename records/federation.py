"""Org-to-org calls between member gateways, over mutual TLS with the consortium's certificates.

Each gateway's TLS certificate is issued by its org's TLS CA (the CA in the channel configuration). A gateway
trusts the TLS CAs of every member org; on the serving side, the CA that issued the client's certificate says which
org is calling. That org, not anything in the request, is the accessor whose consent is checked on chain.

The one org-to-org call is `GET /federation/everything/{pseudonym}?purpose=CODE`: the custodian checks consent and
logs the access on chain (Audit:RecordAccess), then answers with a Bundle of what it holds, or 403 with an
OperationOutcome saying why not.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from consortium import tls
from consortium.topology import Org, Topology
from ledger import position


@dataclass(frozen=True)
class Member:
    msp: str
    url: str  # https://host:port of its gateway
    tls_ca: x509.Certificate


@dataclass(frozen=True)
class Disclosed:
    custodian: str
    base_url: str
    resources: list[dict[str, Any]]


@dataclass(frozen=True)
class Withheld:
    custodian: str
    status: int  # 403 refused by consent; 404/410 nothing held; 5xx unreachable or failing
    outcome: dict[str, Any]


class Federation:
    def __init__(self, members: Mapping[str, Member], client_ssl: ssl.SSLContext, timeout_s: float = 10.0) -> None:
        self.members = dict(members)
        self._client = httpx.AsyncClient(verify=client_ssl, timeout=timeout_s)
        self._topology: Topology | None = None
        self._generation = 0

    @staticmethod
    def _members_of(topology: Topology) -> dict[str, Member]:
        return {
            o.msp_id: Member(
                o.msp_id,
                topology.gateway_url(o),
                x509.load_pem_x509_certificate(topology.tls_ca_cert(o).read_bytes()),
            )
            for o in topology.member_orgs
            if topology.tls_ca_cert(o).exists()
        }

    @classmethod
    def for_org(cls, topology: Topology, org: Org) -> Federation:
        """Every member's gateway, reached over mutual TLS as `org`; members that join later are found when first
        met (the consortium definition is read again)."""
        fed = cls(cls._members_of(topology), tls.member_client_context(topology, org))
        fed._topology, fed._generation = topology, topology.generation
        return fed

    def _follow(self) -> None:
        """Catch up with the consortium definition when it changed (a member joined)."""
        if self._topology is None:
            return
        tls.refresh_members(self._topology)
        if self._topology.generation != self._generation:
            self._generation = self._topology.generation
            self.members = self._members_of(self._topology)

    async def aclose(self) -> None:
        await self._client.aclose()

    def caller(self, client_cert_pem: str | None) -> str | None:
        """The MSP whose TLS CA issued the (already TLS-verified) client certificate, or None."""
        if not client_cert_pem:
            return None
        cert = x509.load_pem_x509_certificate(client_cert_pem.encode())
        if not any(cert.issuer == m.tls_ca.subject for m in self.members.values()):
            self._follow()
        for member in self.members.values():
            if cert.issuer != member.tls_ca.subject:
                continue
            try:
                cert.verify_directly_issued_by(member.tls_ca)
            except (InvalidSignature, ValueError, TypeError):
                continue
            return member.msp
        return None

    async def everything(self, custodians: dict[str, str], purpose: str) -> list[Disclosed | Withheld]:
        """Ask each custodian for the patient's records, concurrently, by the pseudonym it files them under."""
        asks = (self._everything_from(c, patient, purpose) for c, patient in sorted(custodians.items()))
        return list(await asyncio.gather(*asks))

    async def _everything_from(self, custodian: str, patient: str, purpose: str) -> Disclosed | Withheld:
        if custodian not in self.members:
            self._follow()
        member = self.members.get(custodian)
        if member is None:
            return Withheld(custodian, 502, _outcome("not-found", f"{custodian} runs no gateway known here"))
        try:
            url, params = f"{member.url}/federation/everything/{patient}", {"purpose": purpose}
            r = await self._client.get(url, params=params, headers=_at_least(position.required()))
        except httpx.HTTPError as e:
            return Withheld(custodian, 503, _outcome("transient", f"{custodian}'s gateway is unreachable: {e}"))
        body = r.json() if r.headers.get("content-type", "").endswith("json") else {}
        if r.status_code != 200:
            outcome = body if body.get("resourceType") == "OperationOutcome" else _outcome("exception", r.text[:200])
            return Withheld(custodian, r.status_code, outcome)
        return Disclosed(custodian, member.url, [e["resource"] for e in body.get("entry") or []])


def _at_least(blocks: dict[str, int]) -> dict[str, str]:
    """The blocks the request this one serves waited for: the custodian's peer must have them too."""
    return {position.MIN_BLOCK_HEADER: position.render(blocks)} if blocks else {}


def _outcome(code: str, diagnostics: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }
