"""The blocking Fabric Gateway client, for workers and scripts. Safe to share across threads.

    gw = Gateway(endpoint, identity, signer)
    gw.evaluate("claims", "careledger", "Probe:Read", ["k"])            -> result bytes
    gw.submit("claims", "careledger", "Probe:Write", ["k", "v"])        -> Submitted, committed
    pending = gw.submit_async(...); ...; pending.status()                -> CommitStatus
    for event in gw.chaincode_events("claims", "careledger", checkpoint=cp): ...

Every step can also be driven by hand with an external signer: proposal() -> endorse() -> send() -> commit_status(),
each taking the signature of the previous value's digest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc

from fabric_gateway import messages as m
from fabric_gateway.checkpoint import Checkpoint
from fabric_gateway.connection import Endpoint
from fabric_gateway.errors import CommitFailed, from_rpc_error
from fabric_gateway.identity import Identity, Signer, digest


@dataclass(frozen=True)
class Timeouts:
    """Per-call deadlines in seconds."""

    evaluate: float = 10.0
    endorse: float = 30.0
    submit: float = 10.0
    commit_status: float = 60.0


DEFAULT_TIMEOUTS = Timeouts()


@dataclass(frozen=True)
class Submitted:
    tx_id: str
    result: bytes
    status: m.CommitStatus | None = None


class Pending:
    """A transaction sent for ordering whose commit status has not been read yet."""

    def __init__(self, gateway: Gateway, tx: m.PreparedTransaction, request: m.CommitRequest) -> None:
        self._gateway = gateway
        self.tx_id = tx.tx_id
        self.result = tx.result
        self._request = request

    def status(self, timeout: float | None = None) -> m.CommitStatus:
        return self._gateway.commit_status(self._request, timeout=timeout)

    def wait(self, timeout: float | None = None) -> Submitted:
        """Wait for commit; raise CommitFailed unless the transaction is valid."""
        status = self.status(timeout)
        if not status.successful:
            raise CommitFailed(status.tx_id, status.code, status.block_number)
        return Submitted(self.tx_id, self.result, status)


class Signing:
    """What both clients hold besides their gRPC channel: who signs, how, and the call deadlines."""

    def __init__(self, identity: Identity, signer: Signer | None, timeouts: Timeouts) -> None:
        self.identity = identity
        self.signer = signer
        self.timeouts = timeouts

    def _sign(self, message_digest: bytes, signature: bytes | None) -> bytes:
        """The caller's signature when it gives one (offline signing), else the signer's."""
        if signature is not None:
            return signature
        if self.signer is None:
            raise ValueError("this gateway has no signer: pass the signature of the digest")
        return self.signer(message_digest)


class Gateway(Signing):
    def __init__(
        self,
        endpoint: Endpoint,
        identity: Identity,
        signer: Signer | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
    ) -> None:
        super().__init__(identity, signer, timeouts)
        self._channel = endpoint.channel()
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, stage: str, rpc: Callable[..., Any], request: Any, timeout: float) -> Any:
        started = time.monotonic()
        try:
            return rpc(request, timeout=timeout)
        except grpc.RpcError as e:
            raise from_rpc_error(stage, e, deadline_passed=time.monotonic() - started >= timeout) from None

    # ----- steps -----------------------------------------------------------------------------------------------

    def proposal(
        self,
        channel: str,
        chaincode: str,
        function: str,
        args: Sequence[str | bytes] = (),
        transient: Mapping[str, bytes] | None = None,
        endorsing_orgs: Sequence[str] = (),
    ) -> m.Proposal:
        return m.new_proposal(self.identity, channel, chaincode, function, args, transient, endorsing_orgs)

    def endorse(
        self, proposal: m.Proposal, signature: bytes | None = None, timeout: float | None = None
    ) -> m.PreparedTransaction:
        signed = proposal.signed(self._sign(proposal.digest, signature))
        request = m.endorse_request(proposal.tx_id, proposal.channel, signed, proposal.endorsing_orgs)
        response = self._call("endorse", self._stub.Endorse, request, timeout or self.timeouts.endorse)
        return m.prepared(proposal, response)

    def send(
        self, tx: m.PreparedTransaction, signature: bytes | None = None, timeout: float | None = None
    ) -> m.CommitRequest:
        """Send an endorsed transaction for ordering; returns the request to read its commit status with."""
        request = tx.submit_request(self._sign(tx.digest, signature))
        self._call("submit", self._stub.Submit, request, timeout or self.timeouts.submit)
        return m.commit_request(self.identity, tx)

    def commit_status(
        self, request: m.CommitRequest, signature: bytes | None = None, timeout: float | None = None
    ) -> m.CommitStatus:
        signed = request.signed(self._sign(request.digest, signature))
        response = self._call("commit_status", self._stub.CommitStatus, signed, timeout or self.timeouts.commit_status)
        return m.commit_status(request.tx_id, response)

    # ----- the usual calls -------------------------------------------------------------------------------------

    def evaluate(
        self,
        channel: str,
        chaincode: str,
        function: str,
        args: Sequence[str | bytes] = (),
        transient: Mapping[str, bytes] | None = None,
        target_orgs: Sequence[str] = (),
        timeout: float | None = None,
    ) -> bytes:
        proposal = self.proposal(channel, chaincode, function, args, transient, target_orgs)
        signed = proposal.signed(self._sign(proposal.digest, None))
        request = m.evaluate_request(proposal.tx_id, channel, signed, proposal.endorsing_orgs)
        response = self._call("evaluate", self._stub.Evaluate, request, timeout or self.timeouts.evaluate)
        return bytes(response.result.payload)

    def submit_async(
        self,
        channel: str,
        chaincode: str,
        function: str,
        args: Sequence[str | bytes] = (),
        transient: Mapping[str, bytes] | None = None,
        endorsing_orgs: Sequence[str] = (),
    ) -> Pending:
        """Endorse and send for ordering; return at once with the tx id. Read the commit status later."""
        tx = self.endorse(self.proposal(channel, chaincode, function, args, transient, endorsing_orgs))
        return Pending(self, tx, self.send(tx))

    def submit(
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
        return self.submit_async(channel, chaincode, function, args, transient, endorsing_orgs).wait(commit_timeout)

    # ----- events ----------------------------------------------------------------------------------------------

    def chaincode_events(
        self,
        channel: str,
        chaincode: str,
        start_block: int | None = None,
        checkpoint: Checkpoint | None = None,
        signature: bytes | None = None,
    ) -> EventStream:
        """Events from `start_block`, or resuming after a checkpoint, or (neither) from the next commit on."""
        after = ""
        if checkpoint is not None and not checkpoint.is_empty:
            start_block, after = checkpoint.block_number, checkpoint.tx_id
        raw = m.chaincode_events_request_bytes(self.identity, channel, chaincode, start_block, after)
        signed = gateway_pb2.SignedChaincodeEventsRequest(request=raw, signature=self._sign(digest(raw), signature))
        return EventStream(self._stub.ChaincodeEvents(signed))


class EventStream:
    """An open chaincode event stream; iterate it, close() it from any thread to stop."""

    def __init__(self, call: grpc.Call) -> None:
        self._call = call

    def __iter__(self) -> Iterator[m.ChaincodeEvent]:
        try:
            for response in self._call:
                yield from m.events_of(response)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.CANCELLED:
                return
            raise from_rpc_error("events", e) from None

    def close(self) -> None:
        self._call.cancel()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
