"""Fabric Gateway messages: built, signed and parsed here, and nowhere else.

Both the blocking and the asyncio client use these functions; they do no I/O. The shapes follow the Gateway
protocol as the official clients implement it:
- tx id = hex(SHA-256(nonce || creator)), nonce 24 random bytes;
- a proposal's channel header carries type ENDORSER_TRANSACTION, channel, tx id, timestamp and a chaincode header
  extension naming the chaincode; its signature header carries creator and nonce;
- the proposal payload is a ChaincodeInvocationSpec (args[0] = function name) plus the transient map;
- signatures cover the proposal bytes, the prepared envelope's payload, and the commit-status/events request bytes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2
from fabric_protos.orderer import ab_pb2
from fabric_protos.peer import chaincode_pb2, proposal_pb2, proposal_response_pb2, transaction_pb2
from google.protobuf import timestamp_pb2

from fabric_gateway.identity import Identity, digest

NONCE_BYTES = 24


@dataclass(frozen=True)
class TransactionContext:
    tx_id: str
    nonce: bytes


def new_context(identity: Identity, nonce: bytes | None = None) -> TransactionContext:
    nonce = nonce if nonce is not None else os.urandom(NONCE_BYTES)
    return TransactionContext(digest(nonce + identity.creator).hex(), nonce)


def _as_bytes(arg: str | bytes) -> bytes:
    return arg.encode() if isinstance(arg, str) else arg


def proposal_bytes(
    identity: Identity,
    ctx: TransactionContext,
    channel: str,
    chaincode: str,
    function: str,
    args: Sequence[str | bytes] = (),
    transient: Mapping[str, bytes] | None = None,
) -> bytes:
    """The serialized Proposal that endorsers execute and that the client signs."""
    timestamp = timestamp_pb2.Timestamp()
    timestamp.GetCurrentTime()
    extension = proposal_pb2.ChaincodeHeaderExtension(chaincode_id=chaincode_pb2.ChaincodeID(name=chaincode))
    channel_header = common_pb2.ChannelHeader(
        type=common_pb2.HeaderType.ENDORSER_TRANSACTION,
        channel_id=channel,
        tx_id=ctx.tx_id,
        timestamp=timestamp,
        epoch=0,
        extension=extension.SerializeToString(),
    )
    signature_header = common_pb2.SignatureHeader(creator=identity.creator, nonce=ctx.nonce)
    header = common_pb2.Header(
        channel_header=channel_header.SerializeToString(),
        signature_header=signature_header.SerializeToString(),
    )
    spec = chaincode_pb2.ChaincodeInvocationSpec(
        chaincode_spec=chaincode_pb2.ChaincodeSpec(
            chaincode_id=chaincode_pb2.ChaincodeID(name=chaincode),
            input=chaincode_pb2.ChaincodeInput(args=[function.encode(), *(_as_bytes(a) for a in args)]),
        )
    )
    payload = proposal_pb2.ChaincodeProposalPayload(input=spec.SerializeToString(), TransientMap=dict(transient or {}))
    proposal = proposal_pb2.Proposal(header=header.SerializeToString(), payload=payload.SerializeToString())
    return bytes(proposal.SerializeToString())


def endorse_request(
    tx_id: str, channel: str, signed: proposal_pb2.SignedProposal, orgs: Sequence[str] = ()
) -> gateway_pb2.EndorseRequest:
    return gateway_pb2.EndorseRequest(
        transaction_id=tx_id, channel_id=channel, proposed_transaction=signed, endorsing_organizations=list(orgs)
    )


def evaluate_request(
    tx_id: str, channel: str, signed: proposal_pb2.SignedProposal, orgs: Sequence[str] = ()
) -> gateway_pb2.EvaluateRequest:
    return gateway_pb2.EvaluateRequest(
        transaction_id=tx_id, channel_id=channel, proposed_transaction=signed, target_organizations=list(orgs)
    )


def commit_status_request_bytes(identity: Identity, channel: str, tx_id: str) -> bytes:
    request = gateway_pb2.CommitStatusRequest(channel_id=channel, transaction_id=tx_id, identity=identity.creator)
    return bytes(request.SerializeToString())


def seek_position(start_block: int | None) -> ab_pb2.SeekPosition:
    if start_block is None:
        return ab_pb2.SeekPosition(next_commit=ab_pb2.SeekNextCommit())
    return ab_pb2.SeekPosition(specified=ab_pb2.SeekSpecified(number=start_block))


def chaincode_events_request_bytes(
    identity: Identity, channel: str, chaincode: str, start_block: int | None, after_tx_id: str = ""
) -> bytes:
    request = gateway_pb2.ChaincodeEventsRequest(
        channel_id=channel,
        chaincode_id=chaincode,
        identity=identity.creator,
        start_position=seek_position(start_block),
        after_transaction_id=after_tx_id,
    )
    return bytes(request.SerializeToString())


def result_from_envelope(envelope: common_pb2.Envelope) -> bytes:
    """The chaincode's return value inside an endorsed transaction envelope."""
    payload = common_pb2.Payload.FromString(envelope.payload)
    tx = transaction_pb2.Transaction.FromString(payload.data)
    for action in tx.actions:
        action_payload = transaction_pb2.ChaincodeActionPayload.FromString(action.payload)
        response_payload = proposal_response_pb2.ProposalResponsePayload.FromString(
            action_payload.action.proposal_response_payload
        )
        chaincode_action = proposal_pb2.ChaincodeAction.FromString(response_payload.extension)
        return bytes(chaincode_action.response.payload)
    raise ValueError("the endorsed transaction holds no chaincode action")


def channel_of(envelope: common_pb2.Envelope) -> str:
    payload = common_pb2.Payload.FromString(envelope.payload)
    return str(common_pb2.ChannelHeader.FromString(payload.header.channel_header).channel_id)


# ----- the three signed steps of a transaction, as values a caller can sign anywhere ---------------------------


@dataclass(frozen=True)
class Proposal:
    tx_id: str
    channel: str
    proposal_bytes: bytes
    endorsing_orgs: tuple[str, ...] = ()

    @property
    def digest(self) -> bytes:
        return digest(self.proposal_bytes)

    def signed(self, signature: bytes) -> proposal_pb2.SignedProposal:
        return proposal_pb2.SignedProposal(proposal_bytes=self.proposal_bytes, signature=signature)


@dataclass(frozen=True)
class PreparedTransaction:
    """An endorsed transaction, ready to be signed and sent for ordering."""

    tx_id: str
    channel: str
    envelope: common_pb2.Envelope
    result: bytes

    @property
    def digest(self) -> bytes:
        return digest(self.envelope.payload)

    def submit_request(self, signature: bytes) -> gateway_pb2.SubmitRequest:
        signed = common_pb2.Envelope(payload=self.envelope.payload, signature=signature)
        return gateway_pb2.SubmitRequest(
            transaction_id=self.tx_id, channel_id=self.channel, prepared_transaction=signed
        )


@dataclass(frozen=True)
class CommitRequest:
    tx_id: str
    channel: str
    request_bytes: bytes

    @property
    def digest(self) -> bytes:
        return digest(self.request_bytes)

    def signed(self, signature: bytes) -> gateway_pb2.SignedCommitStatusRequest:
        return gateway_pb2.SignedCommitStatusRequest(request=self.request_bytes, signature=signature)


@dataclass(frozen=True)
class CommitStatus:
    tx_id: str
    code: str  # a peer.TxValidationCode name: VALID, MVCC_READ_CONFLICT, ENDORSEMENT_POLICY_FAILURE, ...
    block_number: int

    @property
    def successful(self) -> bool:
        return self.code == "VALID"


@dataclass(frozen=True)
class ChaincodeEvent:
    block_number: int
    tx_id: str
    chaincode: str
    name: str
    payload: bytes


def new_proposal(
    identity: Identity,
    channel: str,
    chaincode: str,
    function: str,
    args: Sequence[str | bytes] = (),
    transient: Mapping[str, bytes] | None = None,
    endorsing_orgs: Sequence[str] = (),
) -> Proposal:
    ctx = new_context(identity)
    raw = proposal_bytes(identity, ctx, channel, chaincode, function, args, transient)
    return Proposal(ctx.tx_id, channel, raw, tuple(endorsing_orgs))


def prepared(proposal: Proposal, response: gateway_pb2.EndorseResponse) -> PreparedTransaction:
    envelope = response.prepared_transaction
    return PreparedTransaction(proposal.tx_id, proposal.channel, envelope, result_from_envelope(envelope))


def commit_request(identity: Identity, tx: PreparedTransaction) -> CommitRequest:
    return CommitRequest(tx.tx_id, tx.channel, commit_status_request_bytes(identity, tx.channel, tx.tx_id))


def commit_status(tx_id: str, response: gateway_pb2.CommitStatusResponse) -> CommitStatus:
    code = transaction_pb2.TxValidationCode.Name(response.result)
    return CommitStatus(tx_id, code, int(response.block_number))


def events_of(response: gateway_pb2.ChaincodeEventsResponse) -> list[ChaincodeEvent]:
    return [
        ChaincodeEvent(int(response.block_number), e.tx_id, e.chaincode_id, e.event_name, bytes(e.payload))
        for e in response.events
    ]
