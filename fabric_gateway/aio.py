"""The asyncio Fabric Gateway client, for the HTTP gateway: `client`'s objects and calls, awaited.

Both clients drive the same `steps`; this module only awaits the gRPC calls (grpc.aio) and the pauses. Create an
AsyncGateway inside the event loop that will use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar, Unpack

import grpc
import grpc.aio

from fabric_gateway import base, steps
from fabric_gateway import messages as m
from fabric_gateway.checkpoint import Checkpoint
from fabric_gateway.connection import Endpoint
from fabric_gateway.identity import Identity, Signer
from fabric_gateway.steps import DEFAULT_TIMEOUTS, Steps, Submitted, Timeouts

T = TypeVar("T")
UnaryCall = Callable[..., Awaitable[bytes | None]]  # None: a pause


class Awaiting:
    """Performs steps by awaiting grpc.aio calls."""

    def __init__(self, connection: grpc.aio.Channel | Any) -> None:
        if isinstance(connection, grpc.aio.Channel):
            self._calls: dict[str, UnaryCall] = steps.unary_calls(connection)
            self._events: Callable[[bytes], Any] = steps.events_call(connection)
        else:  # a Gateway stub with coroutine methods, such as a test's fake: it speaks protobuf messages
            self._calls = {stage: _stub_call(*method) for stage, method in steps.stub_methods(connection).items()}
            self._events = lambda request: _stub_stream(
                connection.ChaincodeEvents(steps.events_request_message(request))
            )
        self._calls["pause"] = lambda _, timeout: asyncio.sleep(timeout)

    async def run(self, operation: Steps[T]) -> T:
        step = steps.resume(operation, None)
        while isinstance(step, steps.Call):
            step = steps.resume(operation, await self._perform(step))
        return step.value

    async def _perform(self, call: steps.Call) -> steps.Reply:
        try:
            return await self._calls[call.stage](call.request, timeout=call.timeout)
        except grpc.RpcError as e:
            return e

    def events(self, request: bytes) -> Any:
        return self._events(request)


def _stub_call(method: Any, request_type: Any) -> UnaryCall:
    async def call(request: bytes, timeout: float) -> bytes:
        return bytes((await method(request_type.FromString(request), timeout=timeout)).SerializeToString())

    return call


async def _stub_stream(responses: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    async for response in responses:
        yield bytes(response.SerializeToString())


class AsyncGateway(base.GatewayBase[Awaiting]):
    """`client.Gateway` for asyncio: `connection` is an `Endpoint`, a `grpc.aio.Channel` or an async Gateway stub."""

    def __init__(
        self,
        connection: Endpoint | grpc.aio.Channel | Any,
        identity: Identity,
        signer: Signer | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
    ) -> None:
        self._channel = connection.aio_channel() if isinstance(connection, Endpoint) else None
        super().__init__(steps.Session(identity, signer, timeouts), Awaiting(self._channel or connection))

    def network(self, name: str) -> AsyncNetwork:
        return AsyncNetwork(self._session, self._driver, name)

    def proposal_from_bytes(self, data: bytes, signature: bytes | None = None) -> AsyncProposal:
        return AsyncProposal(self._session, self._driver, m.ProposalState.from_bytes(data, signature))

    def transaction_from_bytes(self, data: bytes, signature: bytes | None = None) -> AsyncTransaction:
        return AsyncTransaction(self._session, self._driver, m.TransactionState.from_bytes(data, signature))

    def commit_from_bytes(self, data: bytes, signature: bytes | None = None) -> AsyncCommit:
        return AsyncCommit(self._session, self._driver, m.CommitState.from_bytes(data, signature))

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def __aenter__(self) -> AsyncGateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncNetwork(base.NetworkBase[Awaiting]):
    def contract(self, chaincode: str, contract_name: str = "") -> AsyncContract:
        return AsyncContract(self._session, self._driver, m.Target(self.name, chaincode, contract_name))

    def commit(self, tx_id: str) -> AsyncCommit:
        return AsyncCommit(self._session, self._driver, self._commit(tx_id))

    async def commit_status(self, tx_id: str, timeout: float | None = None) -> m.CommitStatus:
        return await self._driver.run(steps.commit_status(self._session, self._commit(tx_id), timeout))

    async def wait_for_block(self, block_number: int, orgs: Sequence[str] | None = None, timeout: float = 30.0) -> None:
        await self._driver.run(
            steps.wait_for_block(self._session, self.name, block_number, self._own_org(orgs), timeout)
        )

    async def chaincode_events(
        self, chaincode: str, start_block: int | None = None, checkpoint: Checkpoint | None = None
    ) -> AsyncGenerator[m.ChaincodeEvent, None]:
        """Events as `client.Network.chaincode_events`; stop with `aclose()` (or by leaving the loop)."""
        request = steps.chaincode_events_request(self._session, self.name, chaincode, start_block, checkpoint)
        call = self._driver.events(request)
        try:
            async for response in call:
                for event in m.chaincode_events(response):
                    yield event
        except grpc.RpcError as e:
            if (error := steps.events_failure(e)) is not None:
                raise error from None
        finally:
            if hasattr(call, "cancel"):
                call.cancel()


class AsyncContract(base.ContractBase[Awaiting]):
    def new_proposal(self, name: str, **options: Unpack[base.ProposalOptions]) -> AsyncProposal:
        return AsyncProposal(self._session, self._driver, self._proposal(name, options))

    async def evaluate(self, name: str, timeout: float | None = None, **options: Unpack[base.ProposalOptions]) -> bytes:
        return await self._driver.run(steps.evaluate(self._session, self._proposal(name, options), timeout))

    async def submit(self, name: str, **options: Unpack[base.ProposalOptions]) -> Submitted:
        return await self._driver.run(steps.submit_transaction(self._session, self._proposal(name, options)))

    async def submit_async(self, name: str, **options: Unpack[base.ProposalOptions]) -> AsyncCommit:
        tx, commit = await self._driver.run(steps.submit_async(self._session, self._proposal(name, options)))
        return AsyncCommit(self._session, self._driver, commit, tx.result)


class AsyncProposal(base.Signable[Awaiting, m.ProposalState]):
    __slots__ = ()

    async def endorse(self, timeout: float | None = None) -> AsyncTransaction:
        tx = await self._driver.run(steps.endorse(self._session, self._state, timeout))
        return AsyncTransaction(self._session, self._driver, tx)

    async def evaluate(self, timeout: float | None = None) -> bytes:
        return await self._driver.run(steps.evaluate(self._session, self._state, timeout))


class AsyncTransaction(base.TransactionBase[Awaiting]):
    __slots__ = ()

    async def submit(self, timeout: float | None = None) -> AsyncCommit:
        commit = await self._driver.run(steps.submit(self._session, self._state, timeout))
        return AsyncCommit(self._session, self._driver, commit, self.result)


class AsyncCommit(base.CommitBase[Awaiting]):
    __slots__ = ()

    async def status(self, timeout: float | None = None) -> m.CommitStatus:
        return await self._driver.run(steps.commit_status(self._session, self._state, timeout))
