"""Run one member org's gateway: the objects it is made of and the HTTPS server.

TLS: the server presents the org's gateway certificate (issued by the org's TLS CA) and asks for, but does not
require, a client certificate: EHR clients authenticate with bearer tokens, member gateways with their certificate.

Processes: `GatewaySettings.processes` of them serve the org's port, each with its own socket bound with
SO_REUSEPORT (the kernel spreads new connections over them), its own Fabric connection, its own reconciler, and the
org's one store. What keeps that correct:
- the store is safe for several writers (SQLite in WAL mode with BEGIN IMMEDIATE; PostgreSQL);
- conditional writes are decided under the store's lock (a file lock, or a PostgreSQL advisory lock), so two
  processes never both create what only one may;
- a write's signed transaction is kept in the pending folder the processes share; each reconciler settles at once
  what its own process gave up waiting for, and another process's only after that process's wait is over (or, for
  a batch that never kept a transaction, after a grace), so none sends a transaction its writer is still sending;
- the claim outbox: a process takes the due claims it submits for a few seconds, and reads from the chain whether a
  claim is filed before filing it (the Claims contract files a key once), so concurrent drains file each once.
Only the first process follows the chain's events into the console's activity index (the others read it).
One process (the parent) runs the others and exits when one of them does, so supervisord restarts them together.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from consortium import connect, logs, tls
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
STARTED_ENV = "CARELEDGER_GATEWAY_STARTED"  # when this start of the gateway's processes began (Unix time)
WRITE_DEADLINE_S = 15.0  # a write whose outcome is still unknown then is answered 503 and settled in the background
# An idle client connection is kept this long. Longer than clients keep theirs (httpx and most HTTP clients: 5 s),
# so the client closes an idle connection first: a server that closes one just as the client sends on it makes the
# client see "disconnected without a response", an unknown outcome for a POST.
KEEP_ALIVE_S = 75


def server_ssl_files(settings: GatewaySettings) -> tuple[Path, Path, Path]:
    """(certificate, key, CA bundle of every member's TLS CA) for the HTTPS server."""
    t, org = settings.topology, settings.org
    certs = t.gateway_tls_dir(org)
    bundle = t.gateway_home(org) / "member-tls-cas.pem"
    bundle.parent.mkdir(parents=True, exist_ok=True)
    tmp = bundle.with_name(f"{bundle.name}.{os.getpid()}.tmp")  # the org's other processes may be reading it
    tmp.write_text(tls.member_cas(t))
    tmp.replace(bundle)
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


async def serve(settings: GatewaySettings, first: bool = True) -> None:
    """Serve the org's gateway in this process. `first`: the process that keeps the console's activity index (one
    writer follows the chain's events; the org's other processes read the index)."""
    fed = Federation.for_org(settings.topology, settings.org)
    async with connect.async_gateway(settings.topology, settings.org) as gw:
        transport = FabricTransport(gw, settings.topology.chaincode_name, deadline_s=WRITE_DEADLINE_S)
        records = Records.open(settings.custodian, Ledger(transport, claim_window_s=settings.claim_window_s))
        store = records.store
        reconciler = asyncio.create_task(_reconcile_forever(records))
        console = open_console(settings, gw)
        followers = [
            asyncio.create_task(activity.follow(gw.network(ch), settings.topology.chaincode_name, console.activity))
            for ch in console.channels
            if first and ch in (CLAIMS, PROVIDERS)
        ]
        channels = frozenset(settings.topology.channels_of(settings.org))
        config = GatewayConfig(settings.org.msp_id, settings.token_policy(), channels=channels)
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
                timeout_keep_alive=KEEP_ALIVE_S,
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
            await server.serve(sockets=[listening_socket(settings)])
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


def listening_socket(settings: GatewaySettings) -> socket.socket:
    """The port, bound with SO_REUSEPORT so that every process of the org's gateway can listen on it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((settings.org.host, settings.port))
    return sock


def run(settings: GatewaySettings) -> None:
    """Serve in this process, or, with several processes set, start them and watch them: when one exits (or this
    one is told to stop) the others are stopped too and this one exits, with a failure if a process failed."""
    if settings.processes == 1:
        asyncio.run(serve(settings))
        return
    os.environ[STARTED_ENV] = str(time.time())  # the processes' start, which they inherit (_reconcile_forever)
    context = multiprocessing.get_context("spawn")  # no fork: gRPC's threads do not survive one
    children = [
        context.Process(target=_serve_one, args=(settings, i == 0), name=f"gateway-{settings.org.name}-{i}")
        for i in range(settings.processes)
    ]
    for child in children:
        child.start()

    def stop(signum: int, frame: object) -> None:
        for child in children:
            if child.is_alive():
                child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    multiprocessing.connection.wait([c.sentinel for c in children])
    stop(signal.SIGTERM, None)
    for child in children:
        child.join()
    failed = [c.exitcode for c in children if c.exitcode not in (0, -signal.SIGTERM)]
    log.info("gateway processes ended", extra={"org": settings.org.name, "failed": len(failed)})
    sys.exit(1 if failed else 0)


def _serve_one(settings: GatewaySettings, first: bool) -> None:
    """One of the gateway's processes."""
    logs.configure()
    asyncio.run(serve(settings, first))


async def _reconcile_forever(records: Records) -> None:
    """Settle writes whose outcome was unknown (or that a crash left pending) as soon as the ledger answers, and
    file the claims of committed bundles that are still queued. What the gateway's processes before this start
    left pending is settled at once: they are gone (all of a gateway's processes start and stop together)."""
    writers_since = float(os.environ.get(STARTED_ENV) or time.time())
    while True:
        try:
            counts = await records.reconcile_pending(writers_since=writers_since)
            if any(counts.values()):
                log.info("settled pending writes", extra=counts)
            filed = await records.claims_outbox.submit_due()
            if filed:
                log.info("filed queued claims", extra=filed)
        except Exception as e:  # the ledger or the store is down: try again on the next round
            log.warning("reconciling pending writes failed", extra={"error": str(e)[:300]})
        await asyncio.sleep(RECONCILE_EVERY_S)
