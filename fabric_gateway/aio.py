"""The asyncio Fabric Gateway client, for the HTTP gateway: `client`'s objects and calls, awaited.

Both clients drive the same `steps`; this module only awaits the gRPC calls (grpc.aio) and the pauses. Create an
AsyncGateway inside the event loop that will use it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeAlias, TypeVar, Unpack

import grpc
import grpc.aio

from fabric_gateway import base, blocks, commits, lifecycle, steps
from fabric_gateway import connection as transport
from fabric_gateway import messages as m
from fabric_gateway.checkpoint import Checkpoint
from fabric_gateway.connection import Endpoint
from fabric_gateway.errors import EventsUnavailable
from fabric_gateway.identity import Identity, Signer
from fabric_gateway.steps import DEFAULT_TIMEOUTS, Steps, Submitted, Timeouts

T = TypeVar("T")
UnaryCall = Callable[..., Awaitable[bytes]]
_Outcome: TypeAlias = "asyncio.Future[m.CommitStatus | bool | None]"  # what a submit waiting on the stream awaits
_Watch: TypeAlias = "commits.CommitWatch[_Outcome]"


class Awaiting:
    """Performs steps by awaiting grpc.aio calls; one task per channel reads its block stream."""

    def __init__(self, connection: grpc.aio.Channel | Any, session: steps.Session, tls_cert_hash: bytes | None) -> None:
        self._session = session
        self._tls_cert_hash = tls_cert_hash
        if isinstance(connection, grpc.aio.Channel):
            calls = transport.unary_calls(connection)
            self._events: Callable[[bytes], Any] = transport.events_call(connection)
            self._deliver: Callable[[Iterator[bytes]], Any] | None = transport.deliver_call(connection)
        else:  # a Gateway stub with coroutine methods, such as a test's fake: it speaks protobuf messages
            calls = {stage: _stub_call(*method) for stage, method in transport.stub_methods(connection).items()}
            self._events = lambda request: _stub_stream(
                connection.ChaincodeEvents(transport.events_request_message(request))
            )
            deliver = getattr(connection, "DeliverFiltered", None)
            self._deliver = (
                None if deliver is None else lambda requests: _stub_stream(deliver(transport.envelopes(requests)))
            )
        self._calls: dict[str, Callable[[steps.Call], Awaitable[steps.Reply]]] = {
            stage: steps.taking_call(unary) for stage, unary in calls.items()
        }
        self._calls |= {
            "pause": lambda call: asyncio.sleep(call.timeout),
            "watch": self._watch,
            "commit_event": self._event,
        }
        self._watches: dict[str, _Watch] = {}
        self._readers: set[asyncio.Task[None]] = set()

    async def run(self, operation: Steps[T]) -> T:
        step = steps.resume(operation, None)
        while isinstance(step, steps.Call):
            try:
                reply = await self._calls[step.stage](step)
            except grpc.RpcError as e:
                reply = e
            step = steps.resume(operation, reply)
        return step.value

    def events(self, request: bytes) -> Any:
        return self._events(request)

    def filtered_blocks(self, channel: str, start_block: int | None) -> Any:
        """A channel's filtered-block stream (DeliverResponse bytes), from the newest block or `start_block` on."""
        if self._deliver is None or self._tls_cert_hash is None:
            raise EventsUnavailable("UNAVAILABLE", "this connection cannot open a block stream")
        request = commits.seek_request(
            self._session.identity, self._session.signature, channel, self._tls_cert_hash, start_block
        )
        return self._deliver(iter([request]))

    # ----- the channels' block streams (see fabric_gateway.commits) -----

    async def _watch(self, call: steps.Call) -> _Watch | None:
        if self._deliver is None or self._tls_cert_hash is None:
            return None
        watch = self._watches.get(call.channel)
        if watch is None or watch.replace():
            loop = asyncio.get_running_loop()
            watch = commits.CommitWatch(call.channel, loop.create_future, _settle, contextlib.nullcontext)
            self._watches[call.channel] = watch
            reader = asyncio.create_task(self._read(watch))
            self._readers.add(reader)
            reader.add_done_callback(self._readers.discard)
        if not watch.ready:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(watch.first_block), commits.READY_WITHIN)
        return watch if watch.running else None

    async def _read(self, watch: _Watch) -> None:
        assert self._deliver is not None and self._tls_cert_hash is not None
        try:
            request = commits.seek_request(
                self._session.identity, self._session.signature, watch.channel, self._tls_cert_hash
            )
            watch.stream = stream = self._deliver(iter([request]))
            async for response in stream:
                if not watch.on_response(response):
                    break
        except (grpc.RpcError, ValueError):
            pass  # refused or broken: the submits waiting ask CommitStatus
        finally:
            watch.end()

    async def _event(self, call: steps.Call) -> m.CommitStatus | bool | None:
        watch: _Watch = call.handle  # type: ignore[assignment]
        waiter = watch.wait_for(call.tx_id)
        if waiter.done():
            return waiter.result()
        deadline = asyncio.get_running_loop().call_later(call.timeout, _settle, waiter, False)
        try:
            status = await waiter
        finally:
            deadline.cancel()
        if status is False:
            watch.forget(call.tx_id)
        return status

    async def close(self) -> None:
        for watch in self._watches.values():
            if (cancel := getattr(watch.stream, "cancel", None)) is not None:
                cancel()
        for reader in list(self._readers):
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


def _settle(waiter: asyncio.Future[Any], status: m.CommitStatus | bool | None) -> None:
    if not waiter.done():
        waiter.set_result(status)


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
        tls_cert_hash: bytes | None = None,
    ) -> None:
        self._channel = connection.aio_channel() if isinstance(connection, Endpoint) else None
        session = steps.Session(identity, signer, timeouts)
        hash_ = transport.binding_hash(connection, tls_cert_hash)
        super().__init__(session, Awaiting(self._channel or connection, session, hash_))

    def network(self, name: str) -> AsyncNetwork:
        return AsyncNetwork(self._session, self._driver, name)

    def proposal_from_bytes(self, data: bytes, signature: bytes | None = None) -> AsyncProposal:
        return AsyncProposal(self._session, self._driver, m.ProposalState.from_bytes(data, signature))

    def transaction_from_bytes(self, data: bytes, signature: bytes | None = None) -> AsyncTransaction:
        return AsyncTransaction(self._session, self._driver, m.TransactionState.from_bytes(data, signature))

    def commit_from_bytes(self, data: bytes, signature: bytes | None = None) -> AsyncCommit:
        return AsyncCommit(self._session, self._driver, m.CommitState.from_bytes(data, signature))

    async def close(self) -> None:
        await self._driver.close()
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

    # ----- what an explorer asks: the system chaincodes (qscc, _lifecycle) and the block stream -----

    async def _system(self, chaincode: str, function: str, args: Sequence[str | bytes], org: str | None) -> bytes:
        target = m.Target(self.name, chaincode)
        orgs = self._own_org([org] if org else None)
        proposal = target.proposal(self._session.identity, function, args, endorsing_orgs=orgs)
        return await self._driver.run(steps.evaluate(self._session, proposal))

    async def chain_info(self, org: str | None = None) -> lifecycle.ChainInfo:
        """The channel's height on one org's peer (default: this identity's org), by qscc GetChainInfo."""
        return lifecycle.chain_info(await self._system(lifecycle.QSCC, "GetChainInfo", [self.name], org))

    async def block(self, number: int) -> blocks.BlockSummary:
        """A block from the own org's peer (qscc GetBlockByNumber): its transactions, without their arguments."""
        raw = await self._system(lifecycle.QSCC, "GetBlockByNumber", [self.name, str(number)], None)
        return blocks.block_summary(raw)

    async def transaction(self, tx_id: str) -> blocks.TransactionSummary:
        """A committed transaction by id (qscc GetTransactionByID), with its validation code."""
        raw = await self._system(lifecycle.QSCC, "GetTransactionByID", [self.name, tx_id], None)
        return blocks.processed_transaction(raw)

    async def block_number_of(self, tx_id: str) -> int:
        """The number of the block holding a transaction (qscc GetBlockByTxID)."""
        raw = await self._system(lifecycle.QSCC, "GetBlockByTxID", [self.name, tx_id], None)
        return blocks.block_summary(raw).number

    async def chaincode_definitions(self) -> list[lifecycle.ChaincodeDefinition]:
        """Every chaincode definition committed on the channel, with each member's approval (_lifecycle)."""
        names = lifecycle.definition_names(
            await self._system(lifecycle.LIFECYCLE, "QueryChaincodeDefinitions", [lifecycle.definitions_args()], None)
        )
        found = []
        for name in names:
            raw = await self._system(
                lifecycle.LIFECYCLE, "QueryChaincodeDefinition", [lifecycle.definition_args(name)], None
            )
            found.append(lifecycle.definition(name, raw))
        return found

    async def filtered_blocks(self, start_block: int | None = None) -> AsyncGenerator[blocks.FilteredBlock, None]:
        """The own peer's blocks as they commit (from the newest, or from `start_block`): numbers, transaction ids,
        validation codes, event names. Stop with `aclose()` (or by leaving the loop)."""
        stream = self._driver.filtered_blocks(self.name, start_block)
        try:
            async for response in stream:
                block = blocks.filtered_block(response)
                if block is None:
                    return
                yield block
        except grpc.RpcError as e:
            if (error := steps.events_failure(e)) is not None:
                raise error from None
        finally:
            if hasattr(stream, "cancel"):
                stream.cancel()


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
