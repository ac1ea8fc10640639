"""The asyncio Fabric Gateway client, for the HTTP gateway. Same calls as `client.Gateway`, awaited.

Message building, signing and parsing are shared with the blocking client (`messages`); only the RPCs differ.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import grpc
import grpc.aio
from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc

from fabric_gateway import messages as m
from fabric_gateway.checkpoint import Checkpoint
from fabric_gateway.client import DEFAULT_TIMEOUTS, Signing, Submitted, Timeouts
from fabric_gateway.connection import Endpoint
from fabric_gateway.errors import CommitFailed, from_rpc_error
from fabric_gateway.identity import Identity, Signer, digest


class AsyncGateway(Signing):
    def __init__(
        self,
        endpoint: Endpoint,
        identity: Identity,
        signer: Signer | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
    ) -> None:
        super().__init__(identity, signer, timeouts)
        self._channel = endpoint.aio_channel()
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncGateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, stage: str, rpc: Callable[..., Any], request: Any, timeout: float) -> Any:
        started = time.monotonic()
        try:
            return await rpc(request, timeout=timeout)
        except grpc.RpcError as e:
            raise from_rpc_error(stage, e, deadline_passed=time.monotonic() - started >= timeout) from None

    async def endorse(
        self, proposal: m.Proposal, signature: bytes | None = None, timeout: float | None = None
    ) -> m.PreparedTransaction:
        signed = proposal.signed(self._sign(proposal.digest, signature))
        request = m.endorse_request(proposal.tx_id, proposal.channel, signed, proposal.endorsing_orgs)
        response = await self._call("endorse", self._stub.Endorse, request, timeout or self.timeouts.endorse)
        return m.prepared(proposal, response)

    async def send(
        self, tx: m.PreparedTransaction, signature: bytes | None = None, timeout: float | None = None
    ) -> m.CommitRequest:
        request = tx.submit_request(self._sign(tx.digest, signature))
        await self._call("submit", self._stub.Submit, request, timeout or self.timeouts.submit)
        return m.commit_request(self.identity, tx)

    async def commit_status(
        self, request: m.CommitRequest, signature: bytes | None = None, timeout: float | None = None
    ) -> m.CommitStatus:
        signed = request.signed(self._sign(request.digest, signature))
        timeout = timeout or self.timeouts.commit_status
        response = await self._call("commit_status", self._stub.CommitStatus, signed, timeout)
        return m.commit_status(request.tx_id, response)

    async def evaluate(
        self,
        channel: str,
        chaincode: str,
        function: str,
        args: Sequence[str | bytes] = (),
        transient: Mapping[str, bytes] | None = None,
        target_orgs: Sequence[str] = (),
        timeout: float | None = None,
    ) -> bytes:
        proposal = m.new_proposal(self.identity, channel, chaincode, function, args, transient, target_orgs)
        signed = proposal.signed(self._sign(proposal.digest, None))
        request = m.evaluate_request(proposal.tx_id, channel, signed, proposal.endorsing_orgs)
        response = await self._call("evaluate", self._stub.Evaluate, request, timeout or self.timeouts.evaluate)
        return bytes(response.result.payload)

    async def submit(
        self,
        channel: str,
        chaincode: str,
        function: str,
        args: Sequence[str | bytes] = (),
        transient: Mapping[str, bytes] | None = None,
        endorsing_orgs: Sequence[str] = (),
        commit_timeout: float | None = None,
    ) -> Submitted:
        """Endorse, order, and wait for the commit; raises CommitFailed unless the transaction is valid."""
        proposal = m.new_proposal(self.identity, channel, chaincode, function, args, transient, endorsing_orgs)
        tx = await self.endorse(proposal)
        status = await self.commit_status(await self.send(tx), timeout=commit_timeout)
        if not status.successful:
            raise CommitFailed(status.tx_id, status.code, status.block_number)
        return Submitted(tx.tx_id, tx.result, status)

    async def chaincode_events(
        self, channel: str, chaincode: str, start_block: int | None = None, checkpoint: Checkpoint | None = None
    ) -> AsyncIterator[m.ChaincodeEvent]:
        after = ""
        if checkpoint is not None and not checkpoint.is_empty:
            start_block, after = checkpoint.block_number, checkpoint.tx_id
        raw = m.chaincode_events_request_bytes(self.identity, channel, chaincode, start_block, after)
        signed = gateway_pb2.SignedChaincodeEventsRequest(request=raw, signature=self._sign(digest(raw), None))
        call = self._stub.ChaincodeEvents(signed)
        try:
            async for response in call:
                for event in m.events_of(response):
                    yield event
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                raise from_rpc_error("events", e) from None
        finally:
            call.cancel()
