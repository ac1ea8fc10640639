"""A fake Fabric Gateway stub for unit tests: it checks every signature against the caller's key, runs a Python
function as the chaincode, orders each submitted transaction into its own block, and can be told to fail a stage
the way a real Gateway does (a gRPC status with gateway.ErrorDetail messages in the trailers)."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.hashes import SHA256
from fabric_protos.common import common_pb2, ledger_pb2
from fabric_protos.gateway import gateway_pb2
from fabric_protos.orderer import ab_pb2
from fabric_protos.peer import (
    chaincode_event_pb2,
    chaincode_pb2,
    events_pb2,
    proposal_pb2,
    proposal_response_pb2,
    transaction_pb2,
)
from google.protobuf import any_pb2
from google.rpc import status_pb2

from fabric_gateway import Identity, ecdsa_signer

CERT = b"-----BEGIN CERTIFICATE-----\nnot parsed by the client\n-----END CERTIFICATE-----\n"


class FakeRpcError(grpc.RpcError):
    """A failed call as grpc raises it: status code, message, and Fabric's error details in the trailers."""

    def __init__(
        self, code: grpc.StatusCode, message: str = "", details: tuple[tuple[str, str, str], ...] = ()
    ) -> None:
        status = status_pb2.Status(code=code.value[0], message=message)
        for address, msp_id, text in details:
            packed = any_pb2.Any()
            packed.Pack(gateway_pb2.ErrorDetail(address=address, msp_id=msp_id, message=text))
            status.details.append(packed)
        self._code, self._message = code, message
        self.trailers = (("grpc-status-details-bin", status.SerializeToString()),)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self.trailers


@dataclass
class Call:
    args: list[bytes]  # function name first
    channel: str
    tx_id: str
    transient: dict[str, bytes]
    orgs: list[str]


@dataclass
class FakeGateway:
    """The stub. `chaincode` answers each call (raise FakeRpcError to refuse); `fail[stage]` makes a stage fail."""

    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    chaincode: Callable[[Call], bytes] = lambda call: b"result of " + call.args[0]
    fail: dict[str, Exception] = field(default_factory=dict)
    validation_code: str = "VALID"
    delay: float = 0.0  # seconds each call takes
    # each org's peer's chain height, one per ask (the last one stays); an exception is raised instead
    heights: dict[str, list[int | Exception]] = field(default_factory=dict)
    events: list[gateway_pb2.ChaincodeEventsResponse] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    submitted: list[gateway_pb2.SubmitRequest] = field(default_factory=list)
    committed: dict[str, tuple[str, int]] = field(default_factory=dict)  # tx id -> (validation code, block)
    events_requests: list[gateway_pb2.ChaincodeEventsRequest] = field(default_factory=list)
    blocks: list[events_pb2.FilteredBlock] = field(default_factory=list)  # what DeliverFiltered streams
    new_block: threading.Condition = field(default_factory=threading.Condition)
    commit_status_calls: int = 0
    deliver: bool = False  # whether DeliverFiltered is served (else it is UNIMPLEMENTED, as a stub without it)
    orders: bool = True  # False: submitted transactions are accepted but never committed
    seek_headers: list[common_pb2.ChannelHeader] = field(default_factory=list)

    @property
    def identity(self) -> Identity:
        return Identity("HospitalMSP", CERT)

    def signer(self) -> Callable[[bytes], bytes]:
        return ecdsa_signer(self.key)

    # ----- what the server checks and does -----

    def _verify(self, signed: bytes, signature: bytes) -> None:
        try:
            self.key.public_key().verify(signature, hashlib.sha256(signed).digest(), ec.ECDSA(Prehashed(SHA256())))
        except Exception:
            raise FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "bad signature") from None

    def _enter(self, stage: str, timeout: float | None) -> None:
        time.sleep(self.delay)
        if stage in self.fail:
            raise self.fail[stage]
        if timeout is not None and self.delay > timeout:
            raise FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    def _run(self, signed: proposal_pb2.SignedProposal, orgs: list[str]) -> tuple[Call, proposal_pb2.Proposal, bytes]:
        self._verify(signed.proposal_bytes, signed.signature)
        proposal = proposal_pb2.Proposal.FromString(signed.proposal_bytes)
        header = common_pb2.Header.FromString(proposal.header)
        channel_header = common_pb2.ChannelHeader.FromString(header.channel_header)
        payload = proposal_pb2.ChaincodeProposalPayload.FromString(proposal.payload)
        spec = chaincode_pb2.ChaincodeInvocationSpec.FromString(payload.input).chaincode_spec
        call = Call(
            list(spec.input.args), channel_header.channel_id, channel_header.tx_id, dict(payload.TransientMap), orgs
        )
        self.calls.append(call)
        if spec.chaincode_id.name == "qscc":
            heights = self.heights.get(orgs[0], [1])
            height = heights.pop(0) if len(heights) > 1 else heights[0]
            if isinstance(height, Exception):
                raise height
            return call, proposal, ledger_pb2.BlockchainInfo(height=height).SerializeToString()
        return call, proposal, self.chaincode(call)

    def Evaluate(self, request: gateway_pb2.EvaluateRequest, timeout: float | None = None) -> Any:
        _, _, result = self._run(request.proposed_transaction, list(request.target_organizations))
        self._enter("evaluate", timeout)
        return gateway_pb2.EvaluateResponse(result=proposal_response_pb2.Response(status=200, payload=result))

    def Endorse(self, request: gateway_pb2.EndorseRequest, timeout: float | None = None) -> Any:
        _, proposal, result = self._run(request.proposed_transaction, list(request.endorsing_organizations))
        self._enter("endorse", timeout)
        action = proposal_pb2.ChaincodeAction(response=proposal_response_pb2.Response(status=200, payload=result))
        response_payload = proposal_response_pb2.ProposalResponsePayload(extension=action.SerializeToString())
        endorsed = transaction_pb2.ChaincodeEndorsedAction(
            proposal_response_payload=response_payload.SerializeToString()
        )
        action_payload = transaction_pb2.ChaincodeActionPayload(action=endorsed)
        header = common_pb2.Header.FromString(proposal.header)
        tx = transaction_pb2.Transaction(
            actions=[
                transaction_pb2.TransactionAction(
                    header=header.signature_header, payload=action_payload.SerializeToString()
                )
            ]
        )
        payload = common_pb2.Payload(header=header, data=tx.SerializeToString())
        return gateway_pb2.EndorseResponse(
            prepared_transaction=common_pb2.Envelope(payload=payload.SerializeToString())
        )

    def Submit(self, request: gateway_pb2.SubmitRequest, timeout: float | None = None) -> Any:
        self._enter("submit", timeout)
        self._verify(request.prepared_transaction.payload, request.prepared_transaction.signature)
        self.submitted.append(request)
        if not self.orders:
            return gateway_pb2.SubmitResponse()
        tx_id = request.transaction_id
        with self.new_block:
            code = self.validation_code if tx_id not in self.committed else "DUPLICATE_TXID"
            number = len(self.committed) + 1
            self.committed.setdefault(tx_id, (code, number))  # a transaction id commits once
            validation_code = transaction_pb2.TxValidationCode.Value(code)
            tx = events_pb2.FilteredTransaction(txid=tx_id, tx_validation_code=validation_code)
            self.blocks.append(events_pb2.FilteredBlock(channel_id="claims", number=number, filtered_transactions=[tx]))
            self.new_block.notify_all()
        return gateway_pb2.SubmitResponse()

    def CommitStatus(self, signed: gateway_pb2.SignedCommitStatusRequest, timeout: float | None = None) -> Any:
        self._enter("commit_status", timeout)
        self.commit_status_calls += 1
        self._verify(signed.request, signed.signature)
        request = gateway_pb2.CommitStatusRequest.FromString(signed.request)
        if request.transaction_id not in self.committed:
            raise FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "never committed")
        code, block = self.committed[request.transaction_id]
        return gateway_pb2.CommitStatusResponse(result=transaction_pb2.TxValidationCode.Value(code), block_number=block)

    def ChaincodeEvents(self, signed: gateway_pb2.SignedChaincodeEventsRequest, timeout: float | None = None) -> Any:
        self._verify(signed.request, signed.signature)
        self.events_requests.append(gateway_pb2.ChaincodeEventsRequest.FromString(signed.request))
        return self._stream()

    def _stream(self) -> Iterator[gateway_pb2.ChaincodeEventsResponse]:
        yield from self.events
        if "events" in self.fail:
            raise self.fail["events"]

    def DeliverFiltered(self, envelopes: Iterator[common_pb2.Envelope], timeout: float | None = None) -> Any:
        """Filtered blocks from the newest on, as the peer's Deliver service sends them. `fail["deliver"]` refuses
        the stream; `fail["deliver_later"]` breaks it at the next block."""
        if not self.deliver:
            raise FakeRpcError(grpc.StatusCode.UNIMPLEMENTED, "unknown service protos.Deliver")
        envelope = next(envelopes)
        self._verify(envelope.payload, envelope.signature)
        payload = common_pb2.Payload.FromString(envelope.payload)
        header = common_pb2.ChannelHeader.FromString(payload.header.channel_header)
        assert header.type == common_pb2.HeaderType.DELIVER_SEEK_INFO
        assert ab_pb2.SeekInfo.FromString(payload.data).start.WhichOneof("Type") == "newest"
        self.seek_headers.append(header)
        if "deliver" in self.fail:
            raise self.fail["deliver"]
        return FakeStream(self)


class FakeStream:
    """An open DeliverFiltered stream: the newest block, then each new one; cancel() ends it."""

    def __init__(self, fake: FakeGateway) -> None:
        self.fake = fake
        self.cancelled = False
        self.sent = max(len(fake.blocks) - 1, 0)

    def __iter__(self) -> FakeStream:
        return self

    def __next__(self) -> events_pb2.DeliverResponse:
        with self.fake.new_block:
            if not self.fake.blocks:  # a new channel: its genesis block
                self.fake.blocks.append(events_pb2.FilteredBlock(channel_id="claims", number=0))
            while self.sent >= len(self.fake.blocks) and not self.cancelled:
                self.fake.new_block.wait(0.05)
            if self.cancelled:
                raise FakeRpcError(grpc.StatusCode.CANCELLED, "cancelled")
            if "deliver_later" in self.fake.fail and self.sent > 0:
                raise self.fake.fail["deliver_later"]
            block = self.fake.blocks[self.sent]
            self.sent += 1
            return events_pb2.DeliverResponse(filtered_block=block)

    def cancel(self) -> None:
        with self.fake.new_block:
            self.cancelled = True
            self.fake.new_block.notify_all()


class AsyncFakeGateway:
    """The same fake, with coroutine methods as a grpc.aio stub has."""

    def __init__(self, fake: FakeGateway) -> None:
        self.fake = fake

    async def Evaluate(self, request: Any, timeout: float | None = None) -> Any:
        return self.fake.Evaluate(request, timeout)

    async def Endorse(self, request: Any, timeout: float | None = None) -> Any:
        return self.fake.Endorse(request, timeout)

    async def Submit(self, request: Any, timeout: float | None = None) -> Any:
        return self.fake.Submit(request, timeout)

    async def CommitStatus(self, request: Any, timeout: float | None = None) -> Any:
        return self.fake.CommitStatus(request, timeout)

    def ChaincodeEvents(self, request: Any) -> AsyncIterator[Any]:
        return self._stream(request)

    async def _stream(self, request: Any) -> AsyncIterator[Any]:
        for response in self.fake.ChaincodeEvents(request):
            yield response

    def DeliverFiltered(self, envelopes: Iterator[Any]) -> AsyncIterator[Any]:
        return self._deliver(self.fake.DeliverFiltered(envelopes))

    async def _deliver(self, stream: FakeStream) -> AsyncIterator[Any]:
        while True:
            if stream.sent < len(self.fake.blocks) or not self.fake.blocks:
                yield next(stream)
            else:
                await asyncio.sleep(0.001)


def event(block: int, tx_id: str, name: str, payload: bytes = b"{}") -> gateway_pb2.ChaincodeEventsResponse:
    return gateway_pb2.ChaincodeEventsResponse(
        block_number=block,
        events=[
            chaincode_event_pb2.ChaincodeEvent(chaincode_id="careledger", tx_id=tx_id, event_name=name, payload=payload)
        ],
    )
