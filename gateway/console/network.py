"""Network pages: channels and members with block heights per peer, node health, this org's certificates, pending
configuration updates; per channel the committed chaincode definitions and the blocks, live and paged; a block and a
transaction (creator, contract function, validation code; never arguments)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from consortium import certificates, health
from gateway.console import render
from gateway.console.auth import ConsoleDep, ViewerDep, require_channel
from gateway.outcome import HttpProblem

log = logging.getLogger("careledger.gateway")
router = APIRouter(prefix="/console/network")


@router.get("", response_class=HTMLResponse)
async def overview(request: Request, console: ConsoleDep, who: ViewerDep) -> HTMLResponse:
    channels = [(ch, console.members(ch)) for ch in console.channels]
    certs = certificates.of_org(console.topology, console.org)
    return render.page(
        request, "network.html", console, who, channels=channels, certs=certs, updates=console.config_updates
    )


@router.get("/health", response_class=HTMLResponse)
async def node_health(request: Request, console: ConsoleDep, who: ViewerDep) -> HTMLResponse:
    return render.fragment(request, "_health.html", nodes=await health.of_org(console.topology, console.org))


@router.get("/updates", response_class=HTMLResponse)
async def config_updates(request: Request, console: ConsoleDep, who: ViewerDep) -> HTMLResponse:
    pending = [u for ch in console.channels for u in await console.config_updates.pending(ch)]
    return render.fragment(request, "_updates.html", updates=console.config_updates, pending=pending, org=console.org)


@router.post("/updates/{channel}/{update_id}/sign", response_class=HTMLResponse)
async def sign_update(
    request: Request, channel: str, update_id: str, console: ConsoleDep, who: ViewerDep
) -> HTMLResponse:
    require_channel(console, channel)
    if who.via != "certificate" and not who.may("*", "u"):
        raise HttpProblem(403, "forbidden", "signing a configuration update needs the org's certificate or write scope")
    try:
        await console.config_updates.sign(channel, update_id)
    except LookupError as e:
        raise HttpProblem(404, "not-found", str(e)) from None
    log.info("configuration update signed", extra={"channel": channel, "update": update_id, "by": who.subject})
    return await config_updates(request, console, who)


@router.get("/{channel}/peers", response_class=HTMLResponse)
async def peers(request: Request, channel: str, console: ConsoleDep, who: ViewerDep) -> HTMLResponse:
    require_channel(console, channel)
    msps = [o.msp_id for o in console.members(channel)]
    heights = await console.explorer.heights(channel, msps)
    return render.fragment(request, "_heights.html", channel=channel, heights=heights)


@router.get("/{channel}", response_class=HTMLResponse)
async def channel_page(request: Request, channel: str, console: ConsoleDep, who: ViewerDep) -> HTMLResponse:
    require_channel(console, channel)
    height = await console.explorer.height(channel)
    members = console.members(channel)
    return render.page(request, "channel.html", console, who, channel=channel, members=members, height=height)


@router.get("/{channel}/chaincode", response_class=HTMLResponse)
async def chaincode(request: Request, channel: str, console: ConsoleDep, who: ViewerDep) -> HTMLResponse:
    require_channel(console, channel)
    definitions = await console.explorer.chaincode(channel)
    return render.fragment(request, "_chaincode.html", definitions=definitions, members=console.members(channel))


@router.get("/{channel}/blocks", response_class=HTMLResponse)
async def blocks(
    request: Request, channel: str, console: ConsoleDep, who: ViewerDep, before: int | None = None
) -> HTMLResponse:
    """A page of blocks (rows), newest first, ending with a row that loads the older ones."""
    require_channel(console, channel)
    found = await console.explorer.blocks(channel, before)
    return render.fragment(request, "_blocks.html", channel=channel, page=found)


@router.get("/{channel}/live")
async def live(request: Request, channel: str, console: ConsoleDep, who: ViewerDep, after: int) -> StreamingResponse:
    """Server-sent events: one `block` event (a table row) per block the org's peer commits after block `after`."""
    require_channel(console, channel)

    async def events() -> AsyncIterator[str]:
        stream = console.explorer.live(channel, after + 1)
        try:
            async for block in stream:
                row = render.render_text("_live_block.html", channel=channel, block=block)
                yield "event: block\n" + "".join(f"data: {line}\n" for line in row.splitlines()) + "\n"
        finally:
            await stream.aclose()

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


@router.get("/{channel}/blocks/{number}", response_class=HTMLResponse)
async def block(request: Request, channel: str, number: int, console: ConsoleDep, who: ViewerDep) -> HTMLResponse:
    require_channel(console, channel)
    found = await console.explorer.block(channel, number)
    return render.page(request, "block.html", console, who, channel=channel, block=found)


@router.get("/{channel}/tx/{tx_id}", response_class=HTMLResponse)
async def transaction(request: Request, channel: str, tx_id: str, console: ConsoleDep, who: ViewerDep) -> HTMLResponse:
    require_channel(console, channel)
    if not (len(tx_id) == 64 and all(c in "0123456789abcdef" for c in tx_id)):
        raise HttpProblem(400, "value", "a transaction id is 64 hex characters")
    number, tx = await console.explorer.transaction(channel, tx_id)
    return render.page(request, "transaction.html", console, who, channel=channel, number=number, tx=tx)
