"""What a worker process holds while it runs one org's tasks: the org's ledger connection, its encrypted store (the
same files its gateway uses), Redis, and HTTPS clients. Made once per process, on the first task.

The ledger calls are the gateway's async `Ledger`; a worker runs them on one event loop in a background thread, so
every task thread shares one Fabric connection.
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

from consortium import connect
from consortium import topology as topo
from gateway.serve import GatewaySettings, member_client_ssl
from ledger.contracts import Ledger
from records.store import Store, load_master_key
from workers.settings import WorkerSettings

T = TypeVar("T")


@dataclass
class OrgContext:
    settings: WorkerSettings
    gateway_settings: GatewaySettings
    ledger: Ledger
    store: Store
    redis: redis.Redis
    members: httpx.Client  # mutual TLS to other members' gateways
    webhooks: httpx.Client
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run a ledger coroutine on the context's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def member_url(self, msp: str) -> str:
        t = self.settings.topology
        org = next(o for o in t.member_orgs if o.msp_id == msp)
        return f"https://{t.host}:{t.gateway_port(org)}"


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
    gw_settings = GatewaySettings.load(t, org_name)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="ledger-loop", daemon=True).start()

    async def open_ledger() -> Ledger:
        return Ledger(connect.async_gateway(t, org_name))

    ledger = asyncio.run_coroutine_threadsafe(open_ledger(), loop).result(30)
    store = Store(gw_settings.store_path, load_master_key(gw_settings.master_key_file))
    return OrgContext(
        settings=settings,
        gateway_settings=gw_settings,
        ledger=ledger,
        store=store,
        redis=redis.Redis.from_url(t.redis_url),
        members=httpx.Client(verify=member_client_ssl(gw_settings), timeout=10),
        webhooks=httpx.Client(timeout=10),
        loop=loop,
    )
