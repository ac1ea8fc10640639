"""Run one member org's gateway: the objects it is made of and the HTTPS server.

TLS: the server presents the org's gateway certificate (issued by the org's TLS CA) and asks for, but does not
require, a client certificate: EHR clients authenticate with bearer tokens, member gateways with their certificate.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from consortium import connect, tls
from fabric_gateway import AsyncGateway
from gateway.app import create_app
from gateway.console.service import Console
from gateway.deps import GatewayConfig, Services
from gateway.settings import GatewaySettings
from ledger import activity
from ledger.activity import ActivityIndex
from ledger.contracts import CLAIMS, PROVIDERS, Ledger
from ledger.explorer import Explorer
from ledger.transport import FabricTransport
from records.federation import Federation
from records.service import Records
from records.sharing import Sharing

log = logging.getLogger("careledger.gateway")

RECONCILE_EVERY_S = 5.0
CLAIM_WINDOW_S = 0.02  # claims filed within this long of each other are submitted in one transaction
WRITE_DEADLINE_S = 15.0  # a write whose outcome is still unknown then is answered 503 and settled in the background


def server_ssl_files(settings: GatewaySettings) -> tuple[Path, Path, Path]:
    """(certificate, key, CA bundle of every member's TLS CA) for the HTTPS server."""
    t, org = settings.topology, settings.org
    certs = t.gateway_tls_dir(org)
    bundle = t.gateway_home(org) / "member-tls-cas.pem"
    bundle.parent.mkdir(parents=True, exist_ok=True)
    bundle.write_text(tls.member_cas(t))
    return certs / "server.crt", certs / "server.key", bundle


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
    fed = Federation.for_org(settings.topology, settings.org)
    async with connect.async_gateway(settings.topology, settings.org) as gw:
        transport = FabricTransport(gw, settings.topology.chaincode_name, deadline_s=WRITE_DEADLINE_S)
        records = Records.open(settings.custodian, Ledger(transport, claim_window_s=CLAIM_WINDOW_S))
        store = records.store
        reconciler = asyncio.create_task(_reconcile_forever(records))
        console = open_console(settings, gw)
        followers = [
            asyncio.create_task(activity.follow(gw.network(ch), settings.topology.chaincode_name, console.activity))
            for ch in console.channels
            if ch in (CLAIMS, PROVIDERS)
        ]
        config = GatewayConfig(settings.org.msp_id, settings.token_policy())
        app = create_app(Services(config, records, Sharing(records, fed), console))
        cert, key, cas = server_ssl_files(settings)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=settings.org.host,
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
        # Members that join later are trusted without a restart: the server's TLS context follows the consortium.
        server.config.load()
        assert server.config.ssl is not None
        tls.trust_members(server.config.ssl, settings.topology)
        tls.present(server.config.ssl, cert, key)  # a renewed certificate is served without a restart
        follower = asyncio.create_task(tls.follow_members(settings.topology))
        log.info("gateway listening", extra={"org": settings.org.name, "url": settings.url})
        try:
            await server.serve()
        finally:
            for task in (reconciler, follower, *followers):
                task.cancel()
            await fed.aclose()
            store.close()
            console.activity.close()


def open_console(settings: GatewaySettings, gw: AsyncGateway) -> Console:
    """The console's sources: the org's own peer, and its activity index (`console-index.sqlite` in the org's
    gateway folder, rebuilt from the chain's events if it is deleted)."""
    t, org = settings.topology, settings.org
    index = ActivityIndex(t.gateway_home(org) / "console-index.sqlite", org.msp_id)
    return Console(t, org, Explorer(gw), index)


async def _reconcile_forever(records: Records) -> None:
    """Settle writes whose outcome was unknown (or that a crash left pending) as soon as the ledger answers, and
    file the claims of committed bundles that are still queued."""
    while True:
        try:
            counts = await records.reconcile_pending()
            if any(counts.values()):
                log.info("settled pending writes", extra=counts)
            filed = await records.claims_outbox.submit_due()
            if filed:
                log.info("filed queued claims", extra=filed)
        except Exception as e:  # the ledger or the store is down: try again on the next round
            log.warning("reconciling pending writes failed", extra={"error": str(e)[:300]})
        await asyncio.sleep(RECONCILE_EVERY_S)
