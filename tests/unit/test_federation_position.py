"""A request that waited for blocks asks the other custodians to wait for them too (read-your-writes carries over)."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import httpx

from ledger import position
from records.federation import Disclosed, Federation, Member


def _federation(seen: list[httpx.Request]) -> Federation:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"resourceType": "Bundle", "entry": []})

    fed = Federation({"ClinicMSP": Member("ClinicMSP", "https://clinic.test", None)}, ssl.create_default_context())  # type: ignore[arg-type]
    fed._client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    return fed


def test_the_blocks_a_request_waited_for_go_with_what_it_asks_of_other_custodians() -> None:
    seen: list[httpx.Request] = []

    async def ask(required: dict[str, int] | None) -> list[Any]:
        if required is not None:
            position.require(required)
        return await _federation(seen).everything({"ClinicMSP": "p" * 64}, "TREAT")

    answers = asyncio.run(ask({"providers": 57, "claims": 3}))
    assert isinstance(answers[0], Disclosed)
    assert seen[-1].headers[position.MIN_BLOCK_HEADER] == "claims:3, providers:57"
    asyncio.run(ask(None))  # a request that named none asks for none
    assert position.MIN_BLOCK_HEADER not in seen[-1].headers


def test_position_headers_round_trip_and_keep_the_highest_block() -> None:
    assert position.parse(" providers:5 ,claims:2, providers:9") == {"providers": 9, "claims": 2}
    with position.tracking() as written:
        position.note("providers", 4)
        position.note("providers", 2)
        position.note("claims", 0)  # no block: nothing to say
    assert written == {"providers": 4}
    position.note("providers", 8)  # outside a unit of work: kept nowhere
    assert position.render({"providers": 4, "claims": 1}) == "claims:1, providers:4"
