"""The network as one member org's explorer sees it, through its own peer's Gateway: block heights of every member's
peer, blocks and transactions (no arguments), committed chaincode definitions with approvals, and the live block
stream. Paged: a page of blocks is a handful of qscc calls, never the whole chain.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Protocol

from fabric_gateway import FabricError
from fabric_gateway.blocks import BlockSummary, FilteredBlock, TransactionSummary
from fabric_gateway.lifecycle import ChaincodeDefinition, ChainInfo

BLOCKS_PAGE = 10


class Network(Protocol):
    """What the explorer needs of a channel: `fabric_gateway.AsyncNetwork`, or a test's fake."""

    name: str

    async def chain_info(self, org: str | None = None) -> ChainInfo: ...

    async def block(self, number: int) -> BlockSummary: ...

    async def transaction(self, tx_id: str) -> TransactionSummary: ...

    async def block_number_of(self, tx_id: str) -> int: ...

    async def chaincode_definitions(self) -> list[ChaincodeDefinition]: ...

    def filtered_blocks(self, start_block: int | None = None) -> AsyncGenerator[FilteredBlock, None]: ...


class Gateway(Protocol):
    def network(self, name: str) -> Network: ...


@dataclass(frozen=True)
class PeerHeight:
    org: str  # MSP id
    height: int | None  # None: the Gateway could not reach that org's peer
    error: str = ""


@dataclass(frozen=True)
class BlocksPage:
    blocks: list[BlockSummary]  # newest first
    next_before: int | None  # the `before` of the next (older) page; None on the last


class Explorer:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def network(self, channel: str) -> Network:
        return self._gateway.network(channel)

    async def heights(self, channel: str, orgs: Sequence[str]) -> list[PeerHeight]:
        """Each member's peer's height on the channel, asked at once; an unreachable peer says so."""
        network = self.network(channel)

        async def one(org: str) -> PeerHeight:
            try:
                return PeerHeight(org, (await network.chain_info(org)).height)
            except FabricError as e:
                return PeerHeight(org, None, str(e)[:200])

        return list(await asyncio.gather(*(one(o) for o in orgs)))

    async def height(self, channel: str) -> int:
        """The own peer's height."""
        return (await self.network(channel).chain_info()).height

    async def blocks(self, channel: str, before: int | None = None, count: int = BLOCKS_PAGE) -> BlocksPage:
        """Up to `count` blocks numbered below `before` (default: the newest), newest first."""
        top = await self.height(channel) if before is None else before
        numbers = list(range(top - 1, max(top - 1 - count, -1), -1))
        network = self.network(channel)
        found = list(await asyncio.gather(*(network.block(n) for n in numbers)))
        last = numbers[-1] if numbers else 0
        return BlocksPage(found, last if last > 0 else None)

    async def block(self, channel: str, number: int) -> BlockSummary:
        return await self.network(channel).block(number)

    async def transaction(self, channel: str, tx_id: str) -> tuple[int, TransactionSummary]:
        """A transaction and the number of the block that holds it."""
        network = self.network(channel)
        tx, number = await asyncio.gather(network.transaction(tx_id), network.block_number_of(tx_id))
        return number, tx

    async def chaincode(self, channel: str) -> list[ChaincodeDefinition]:
        return await self.network(channel).chaincode_definitions()

    def live(self, channel: str, start_block: int | None = None) -> AsyncGenerator[FilteredBlock, None]:
        """Blocks as the own peer commits them, from `start_block` (default: the newest) on."""
        return self.network(channel).filtered_blocks(start_block)
