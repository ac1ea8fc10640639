"""Run one member org's gateway: its settings, the objects it is made of, and the HTTPS server.

Settings come from the run folder of the network (`careledger network up`), each overridable by environment:

| setting | default | environment |
|---|---|---|
| listen port | port base + 400 + org index | CARELEDGER_GATEWAY_PORT |
| store | run/gateway/<org>/store.sqlite | CARELEDGER_STORE |
| master key (wraps patient keys) | run/gateway/<org>/master.key, created 0600 | CARELEDGER_MASTER_KEY_FILE |
| consortium pseudonym key | run/consortium/pseudonym.key, shared by every member | CARELEDGER_CONSORTIUM_KEY_FILE |
| patient identifier system | the consortium's master patient index | CARELEDGER_MPI_SYSTEM |
| token verification key | public half of run/gateway/<org>/token-issuer.key | CARELEDGER_TOKEN_PUBLIC_KEY_FILE |
| token issuer / audience | https://auth.<domain> / https://gateway.<domain>/fhir | CARELEDGER_TOKEN_ISSUER, _AUDIENCE |

The development token issuer (`careledger gateway token`) stands in for the org's OAuth2 server; in production, set
the public key, issuer and audience of the real one. The master and consortium keys belong in a KMS or HSM there.

TLS: the server presents the org's gateway certificate (issued by the org's TLS CA) and asks for, but does not
require, a client certificate: EHR clients authenticate with bearer tokens, member gateways with their certificate.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from uvicorn.protocols.http.h11_impl import H11Protocol

from consortium import connect
from consortium.topology import Org, Topology
from gateway.app import GatewayConfig, create_app
from gateway.auth import TokenPolicy
from ledger.contracts import Ledger
from records.federation import Federation, Member
from records.service import Custodian, Records
from records.store import Store, load_master_key

MPI_SYSTEM_DEFAULT = "urn:oid:2.16.840.1.113883.3.4711.1"
log = logging.getLogger("careledger.gateway")


@dataclass(frozen=True)
class GatewaySettings:
    topology: Topology
    org: Org
    port: int
    store_path: Path
    master_key_file: Path
    consortium_key_file: Path
    mpi_system: str
    token_public_key_file: Path
    issuer: str
    audience: str

    @classmethod
    def load(cls, topology: Topology, org_name: str) -> GatewaySettings:
        org = topology.org(org_name)
        home = topology.gateway_home(org)
        env = os.environ.get
        token_key = env("CARELEDGER_TOKEN_PUBLIC_KEY_FILE")
        return cls(
            topology=topology,
            org=org,
            port=int(env("CARELEDGER_GATEWAY_PORT") or topology.gateway_port(org)),
            store_path=Path(env("CARELEDGER_STORE") or home / "store.sqlite"),
            master_key_file=Path(env("CARELEDGER_MASTER_KEY_FILE") or home / "master.key"),
            consortium_key_file=Path(
                env("CARELEDGER_CONSORTIUM_KEY_FILE") or topology.home / "consortium/pseudonym.key"
            ),
            mpi_system=env("CARELEDGER_MPI_SYSTEM") or MPI_SYSTEM_DEFAULT,
            token_public_key_file=Path(token_key) if token_key else dev_token_public_key(topology, org),
            issuer=env("CARELEDGER_TOKEN_ISSUER") or f"https://auth.{org.domain}",
            audience=env("CARELEDGER_TOKEN_AUDIENCE") or f"https://gateway.{org.domain}/fhir",
        )

    @property
    def url(self) -> str:
        return f"https://{self.topology.host}:{self.port}"

    def token_policy(self) -> TokenPolicy:
        return TokenPolicy(self.token_public_key_file.read_text(), self.audience, self.issuer)


# ----- the development token issuer -------------------------------------------------------------------------------


def _dev_issuer_key(topology: Topology, org: Org) -> ec.EllipticCurvePrivateKey:
    path = topology.gateway_home(org) / "token-issuer.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def dev_token_public_key(topology: Topology, org: Org) -> Path:
    path = topology.gateway_home(org) / "token-issuer.pub"
    if not path.exists():
        public = _dev_issuer_key(topology, org).public_key()
        path.write_bytes(
            public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
    return path


def dev_token(settings: GatewaySettings, subject: str, scope: str, ttl_s: int = 3600) -> str:
    """A bearer token from the development issuer, as the org's OAuth2 server would issue it."""
    claims = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": subject,
        "scope": scope,
        "exp": int(time.time()) + ttl_s,
    }
    return jwt.encode(claims, _dev_issuer_key(settings.topology, settings.org), algorithm="ES256")


# ----- TLS --------------------------------------------------------------------------------------------------------


def _member_cas(topology: Topology) -> str:
    return "".join(topology.tls_ca_cert(o).read_text() for o in topology.member_orgs)


def server_ssl_files(settings: GatewaySettings) -> tuple[Path, Path, Path]:
    """(certificate, key, CA bundle of every member's TLS CA) for the HTTPS server."""
    tls = settings.topology.gateway_tls_dir(settings.org)
    bundle = settings.topology.gateway_home(settings.org) / "member-tls-cas.pem"
    bundle.parent.mkdir(parents=True, exist_ok=True)
    bundle.write_text(_member_cas(settings.topology))
    return tls / "server.crt", tls / "server.key", bundle


def member_client_ssl(settings: GatewaySettings) -> ssl.SSLContext:
    """TLS for calling other members' gateways: trust every member's TLS CA, present this org's gateway cert."""
    tls = settings.topology.gateway_tls_dir(settings.org)
    ctx = ssl.create_default_context(cadata=_member_cas(settings.topology))
    ctx.load_cert_chain(tls / "server.crt", tls / "server.key")
    return ctx


def federation(settings: GatewaySettings) -> Federation:
    t = settings.topology
    ctx = member_client_ssl(settings)
    members = {
        o.msp_id: Member(
            o.msp_id,
            f"https://{t.host}:{t.gateway_port(o)}",
            x509.load_pem_x509_certificate(t.tls_ca_cert(o).read_bytes()),
        )
        for o in t.member_orgs
    }
    return Federation(members, ctx)


ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


class ClientCertProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, adding the verified TLS client certificate to each request's scope as the ASGI
    TLS extension has it (`scope["extensions"]["tls"]["client_cert_chain"]`), which uvicorn does not do itself."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return
        pem = ssl.DER_cert_to_PEM_cert(der)
        inner: ASGIApp = self.app

        async def with_cert(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})["tls"] = {"client_cert_chain": [pem]}
            await inner(scope, receive, send)

        self.app = with_cert


# ----- running ----------------------------------------------------------------------------------------------------


async def serve(settings: GatewaySettings) -> None:
    store = Store(settings.store_path, load_master_key(settings.master_key_file))
    consortium_key = load_master_key(settings.consortium_key_file)
    fed = federation(settings)
    async with connect.async_gateway(settings.topology, settings.org) as gw:
        records = Records(
            store, Ledger(gw), consortium_key, settings.mpi_system, Custodian(settings.org.msp_id, settings.org.kind)
        )
        for batch in store.pending_batches():  # writes a crash left unsettled
            settled = await records.reconcile(batch)
            log.info("reconciled a pending batch", extra={"batch": batch, "committed": settled})
        config = GatewayConfig(settings.org.msp_id, settings.token_policy(), federation=fed)
        app = create_app(config, records)
        cert, key, cas = server_ssl_files(settings)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=settings.topology.host,
                port=settings.port,
                http=ClientCertProtocol,
                ssl_certfile=str(cert),
                ssl_keyfile=str(key),
                ssl_ca_certs=str(cas),
                ssl_cert_reqs=ssl.CERT_OPTIONAL,
                log_config=None,
                access_log=False,
                lifespan="off",
            )
        )
        log.info("gateway listening", extra={"org": settings.org.name, "url": settings.url})
        try:
            await server.serve()
        finally:
            await fed.aclose()
            store.close()
