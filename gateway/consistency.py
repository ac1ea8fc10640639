"""Read-your-writes across orgs at the HTTP edge (ledger.position holds the why and the header format).

- Every response to a request that committed transactions says where: `X-Ledger-Block: providers:57` (not to
  another member's request: see `report_blocks`).
- A request that names blocks (`X-Ledger-Min-Block: providers:57`) is answered only once this org's own peer has
  committed them, so what another org just wrote (a consent, a claim) is there when this org decides; a peer that
  does not get there within MIN_BLOCK_WAIT_S gets a 503 with Retry-After, never an answer from an older state.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.deps import ServicesDep
from gateway.outcome import HttpProblem
from ledger import position

BLOCK, MIN_BLOCK = position.BLOCK_HEADER, position.MIN_BLOCK_HEADER
MIN_BLOCK_WAIT_S = 10.0
MEMBER_ROUTES = "/federation/"  # org-to-org calls (gateway.routers.federation, disclosure, research)


def report_blocks(app: FastAPI) -> None:
    """Add the X-Ledger-Block header to responses whose request committed transactions. Not to another member's
    request (`/federation/...`): what commits there is this org's own access log entry, which the asking member
    never waits for, and a header only a held patient's answer carried would tell it whom this org treats."""
    app.add_middleware(BlocksReported)


class BlocksReported:
    """ASGI middleware: the blocks a request's transactions committed in, noted while it runs (ledger.position),
    go into its response's headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with position.tracking() as written:

            async def sending(message: Message) -> None:
                member = str(scope["path"]).startswith(MEMBER_ROUTES)
                if message["type"] == "http.response.start" and written and not member:
                    MutableHeaders(scope=message).append(BLOCK, position.render(written))
                await send(message)

            await self.app(scope, receive, sending)


async def caught_up(request: Request, svc: ServicesDep) -> None:
    """Wait until this org's peer has the blocks the request names (a dependency of every FHIR route)."""
    value = request.headers.get(MIN_BLOCK)
    if not value:
        return
    try:
        wanted = position.parse(value)
    except position.BadPosition as e:
        raise HttpProblem(400, "value", f"{MIN_BLOCK}: {e}") from None
    unknown = sorted(set(wanted) - svc.config.channels)
    if unknown:
        raise HttpProblem(400, "value", f"{MIN_BLOCK}: this org is not on channel {', '.join(unknown)}")
    position.require(wanted)  # a member asked on the request's behalf (federation) waits for them too
    try:
        async with asyncio.timeout(MIN_BLOCK_WAIT_S):
            for channel, block in sorted(wanted.items()):
                await svc.records.ledger.wait_for_block(channel, block, [])
    except TimeoutError:
        raise HttpProblem(503, "transient", f"this org's peer has not reached {value} yet; retry") from None
