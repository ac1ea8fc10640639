"""What a worker process holds while it runs one org's tasks: the org's records (its encrypted store, the same files
its gateway uses, and its ledger connection), Redis, and HTTPS clients. Made once per process, on the first task.

The records service and the ledger are async; a worker runs them on one event loop in a background thread, so every
task thread shares one Fabric connection.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import redis

from consortium import connect, tls
from consortium import topology as topo
from ledger.contracts import Ledger
from ledger.transport import FabricTransport
from records.service import Records
from workers.settings import WorkerSettings

T = TypeVar("T")


@dataclass
class OrgContext:
    settings: WorkerSettings
    records: Records
    redis: redis.Redis
    members: httpx.Client  # mutual TLS to other members' gateways
    webhooks: httpx.Client
    loop: asyncio.AbstractEventLoop

    @property
    def ledger(self) -> Ledger:
        return self.records.ledger

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 300.0) -> T:
        """Run a records or ledger coroutine on the context's loop and wait for its result. The ledger resolves an
        unknown outcome itself within its own deadline (shorter than this); a TimeoutError here is retried."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def member_url(self, msp: str) -> str:
        return tls.member_url(self.settings.topology, msp)


_lock = threading.Lock()
_context: OrgContext | None = None


def current() -> OrgContext:
    """This process's context, for the org named by CARELEDGER_ORG (set by `careledger worker run`)."""
    global _context
    with _lock:
        if _context is None:
            _context = _open(os.environ["CARELEDGER_ORG"])
        return _context


def _open(org_name: str) -> OrgContext:
    t = topo.load()
    settings = WorkerSettings.load(t, org_name)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="ledger-loop", daemon=True).start()

    async def open_ledger() -> Ledger:
        return Ledger(FabricTransport(connect.async_gateway(t, org_name), t.chaincode_name))

    ledger = asyncio.run_coroutine_threadsafe(open_ledger(), loop).result(30)
    return OrgContext(
        settings=settings,
        records=Records.open(settings.custodian, ledger),
        redis=redis.Redis.from_url(t.redis_url_for(settings.org)),
        members=httpx.Client(verify=tls.member_client_context(t, settings.org), timeout=10),
        webhooks=httpx.Client(timeout=10),
        loop=loop,
    )
