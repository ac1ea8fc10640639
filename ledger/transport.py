"""The one seam between the typed contract calls and Fabric: submit or evaluate a contract function on a channel.

`FabricTransport` is the real one (an org's identity, through its own peer's Gateway); `ledger.fake.FakeLedger`
keeps the contracts' state in memory for fast unit tests of everything above the ledger.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from fabric_gateway import AsyncContract, AsyncGateway, EndorseError, EvaluateError
from fabric_gateway.retry import retry_conflicts_async
from ledger.errors import refusal

CHAINCODE = "careledger"


@dataclass(frozen=True)
class Sent:
    """A committed transaction: its id, the block that holds it, and the contract's raw return value."""

    tx_id: str
    result: bytes
    block_number: int = 0


class Transport(Protocol):
    async def submit(
        self, channel: str, function: str, args: Sequence[str], transient: Mapping[str, bytes] | None = None
    ) -> Sent:
        """Endorse, order and wait for the commit; raise LedgerRefused when the contract says no."""
        ...

    async def evaluate(self, channel: str, function: str, args: Sequence[str]) -> bytes:
        """Ask one peer; raise LedgerRefused when the contract says no."""
        ...


class FabricTransport:
    """Contract calls as one org's identity through its own peer's Gateway."""

    def __init__(self, gateway: AsyncGateway, chaincode: str = CHAINCODE) -> None:
        self.gateway = gateway
        self.chaincode = chaincode
        self._contracts: dict[str, AsyncContract] = {}

    def contract(self, channel: str) -> AsyncContract:
        """The chaincode on a channel, bound once."""
        if channel not in self._contracts:
            self._contracts[channel] = self.gateway.network(channel).contract(self.chaincode)
        return self._contracts[channel]

    async def submit(
        self, channel: str, function: str, args: Sequence[str], transient: Mapping[str, bytes] | None = None
    ) -> Sent:
        async def attempt() -> Sent:
            done = await self.contract(channel).submit(function, args=args, transient=transient)
            return Sent(done.tx_id, done.result, done.status.block_number)

        try:
            # A transaction that lost a read race did not commit: submitting it anew is safe.
            return await retry_conflicts_async(attempt)
        except EndorseError as e:
            raise (refusal(e.chaincode_messages) or e) from None

    async def evaluate(self, channel: str, function: str, args: Sequence[str]) -> bytes:
        try:
            return await self.contract(channel).evaluate(function, args=args)
        except EvaluateError as e:
            raise (refusal(e.chaincode_messages) or e) from None
