"""Gateway protocol messages: built, serialised and parsed here, and nowhere else. No I/O.

The shapes follow the Gateway protocol as the official clients implement it:
- tx id = hex(SHA-256(nonce || creator)), nonce 24 random bytes;
- a proposal's channel header carries type ENDORSER_TRANSACTION, channel, tx id, timestamp and a chaincode header
  extension naming the chaincode; its signature header carries creator and nonce;
- the proposal payload is a ChaincodeInvocationSpec (args[0] = the transaction name, "Contract:Function" when the
  contract is named) plus the transient map;
- signatures cover the proposal bytes, the prepared envelope's payload, and the commit-status / events request bytes.

A proposal, an endorsed transaction and a commit-status request serialise as the official clients' Bytes() do
(gateway.ProposedTransaction, gateway.PreparedTransaction, gateway.SignedCommitStatusRequest), so one can be kept,
signed elsewhere, or sent again unchanged, by this client or by an official one.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fabric_protos.common import common_pb2, ledger_pb2
from fabric_protos.gateway import gateway_pb2
from fabric_protos.orderer import ab_pb2
from fabric_protos.peer import proposal_pb2, proposal_response_pb2, transaction_pb2

from fabric_gateway.identity import Identity, digest
from fabric_gateway.wire import L1, L2, L3, L4, L5, L7, V1, V2, field, number, repeated, text, texts

NONCE_BYTES = 24
_ENDORSER_TRANSACTION = V1 + bytes((common_pb2.HeaderType.ENDORSER_TRANSACTION,))


class Target:
    """A chaincode (and optionally one contract in it) on a channel, with the proposal fields that never change
    between its transactions encoded once."""

    __slots__ = ("_chaincode_id", "_channel_id", "_extension", "_prefix", "chaincode", "channel", "contract_name")

    def __init__(self, channel: str, chaincode: str, contract_name: str = "") -> None:
        self.channel = channel
        self.chaincode = chaincode
        self.contract_name = contract_name
        chaincode_id = text(L2, chaincode)  # ChaincodeID.name
        self._chaincode_id = field(L2, chaincode_id)  # ChaincodeSpec.chaincode_id
        self._channel_id = text(L4, channel)  # ChannelHeader.channel_id
        self._extension = field(L7, field(L2, chaincode_id))  # ChannelHeader.extension: ChaincodeHeaderExtension
        self._prefix = f"{contract_name}:" if contract_name else ""

    def proposal(
        self,
        identity: Identity,
        name: str,
        args: Sequence[str | bytes] = (),
        transient: Mapping[str, bytes] | None = None,
        endorsing_orgs: Sequence[str] = (),
        nonce: bytes | None = None,
    ) -> ProposalState:
        """A new, unsigned proposal to run transaction `name` with `args`."""
        nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
        creator = identity.creator
        tx_id = hashlib.sha256(nonce + creator).hexdigest()
        seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
        channel_header = (
            _ENDORSER_TRANSACTION
            + field(L3, number(V1, seconds) + number(V2, nanos))
            + self._channel_id
            + text(L5, tx_id)
            + self._extension
        )
        header = field(L1, channel_header) + field(L2, field(L1, creator) + field(L2, nonce))
        call = [(self._prefix + name).encode(), *(a.encode() if isinstance(a, str) else a for a in args)]
        spec = self._chaincode_id + field(L3, repeated(L1, call))  # ChaincodeSpec: chaincode id, input.args
        payload = field(L1, field(L1, spec))  # ChaincodeProposalPayload.input: ChaincodeInvocationSpec
        if transient:
            payload += b"".join([field(L2, text(L1, k) + field(L2, v)) for k, v in transient.items()])
        raw = field(L1, header) + field(L2, payload)
        return ProposalState(tx_id, self.channel, raw, tuple(endorsing_orgs))


def _signed(payload: bytes, signature: bytes) -> bytes:
    """SignedProposal, Envelope and the signed request messages: the signed bytes (1) and the signature (2)."""
    return field(L1, payload) + field(L2, signature)


# ----- the three signed values of a transaction ----------------------------------------------------------------


@dataclass(slots=True)
class ProposalState:
    """A transaction proposal: what endorsers execute. Signed once; the signature is empty until then."""

    tx_id: str
    channel: str
    proposal_bytes: bytes
    endorsing_orgs: tuple[str, ...] = ()
    signature: bytes = b""

    @property
    def digest(self) -> bytes:
        return digest(self.proposal_bytes)

    def request(self) -> bytes:
        """The EndorseRequest, or EvaluateRequest (the same fields: orgs are the endorsing or the target ones)."""
        return (
            text(L1, self.tx_id)
            + text(L2, self.channel)
            + field(L3, _signed(self.proposal_bytes, self.signature))
            + texts(L4, self.endorsing_orgs)
        )

    def to_bytes(self) -> bytes:
        """gateway.ProposedTransaction."""
        signed = _signed(self.proposal_bytes, self.signature)
        return text(L1, self.tx_id) + field(L2, signed) + texts(L3, self.endorsing_orgs)

    @classmethod
    def from_bytes(cls, data: bytes, signature: bytes | None = None) -> ProposalState:
        """Load `to_bytes()`; a `signature` given here (of `digest`, made elsewhere) replaces any in the bytes."""
        proposed = gateway_pb2.ProposedTransaction.FromString(data)
        proposal = proposal_pb2.Proposal.FromString(proposed.proposal.proposal_bytes)
        header = common_pb2.Header.FromString(proposal.header)
        channel = common_pb2.ChannelHeader.FromString(header.channel_header).channel_id
        return cls(
            proposed.transaction_id,
            channel,
            proposed.proposal.proposal_bytes,
            tuple(proposed.endorsing_organizations),
            proposed.proposal.signature if signature is None else signature,
        )


@dataclass(slots=True)
class TransactionState:
    """An endorsed transaction: the envelope payload the Gateway assembled from the endorsements, to be signed and
    sent for ordering, and the chaincode's result inside it."""

    tx_id: str
    channel: str
    payload: bytes
    result: bytes
    signature: bytes = b""

    @property
    def digest(self) -> bytes:
        return digest(self.payload)

    def request(self) -> bytes:
        """The SubmitRequest."""
        envelope = _signed(self.payload, self.signature)
        return text(L1, self.tx_id) + text(L2, self.channel) + field(L3, envelope)

    def to_bytes(self) -> bytes:
        """gateway.PreparedTransaction."""
        return text(L1, self.tx_id) + field(L2, _signed(self.payload, self.signature))

    @classmethod
    def from_bytes(cls, data: bytes, signature: bytes | None = None) -> TransactionState:
        prepared = gateway_pb2.PreparedTransaction.FromString(data)
        envelope = prepared.envelope
        return cls.of_envelope(
            prepared.transaction_id, envelope.payload, envelope.signature if signature is None else signature
        )

    @classmethod
    def of_envelope(cls, tx_id: str, payload_bytes: bytes, signature: bytes = b"") -> TransactionState:
        payload = common_pb2.Payload.FromString(payload_bytes)
        channel = common_pb2.ChannelHeader.FromString(payload.header.channel_header).channel_id
        return cls(tx_id, channel, payload_bytes, _result_of(payload), signature)


@dataclass(slots=True)
class CommitState:
    """A request for a transaction's commit status."""

    tx_id: str
    channel: str
    request_bytes: bytes
    signature: bytes = b""

    @classmethod
    def new(cls, identity: Identity, channel: str, tx_id: str) -> CommitState:
        request = text(L1, tx_id) + text(L2, channel) + field(L3, identity.creator)
        return cls(tx_id, channel, request)

    @property
    def digest(self) -> bytes:
        return digest(self.request_bytes)

    def request(self) -> bytes:
        """The SignedCommitStatusRequest."""
        return _signed(self.request_bytes, self.signature)

    to_bytes = request

    @classmethod
    def from_bytes(cls, data: bytes, signature: bytes | None = None) -> CommitState:
        signed = gateway_pb2.SignedCommitStatusRequest.FromString(data)
        request = gateway_pb2.CommitStatusRequest.FromString(signed.request)
        signature = signed.signature if signature is None else signature
        return cls(request.transaction_id, request.channel_id, signed.request, signature)


# ----- answers ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommitStatus:
    tx_id: str
    code: str  # a peer.TxValidationCode name: VALID, MVCC_READ_CONFLICT, ENDORSEMENT_POLICY_FAILURE, ...
    block_number: int

    @property
    def successful(self) -> bool:
        return self.code == "VALID"


@dataclass(frozen=True, slots=True)
class ChaincodeEvent:
    block_number: int
    tx_id: str
    chaincode: str
    name: str
    payload: bytes


def _result_of(payload: common_pb2.Payload) -> bytes:
    """The chaincode's return value inside an endorsed transaction's payload."""
    tx = transaction_pb2.Transaction.FromString(payload.data)
    for action in tx.actions:
        action_payload = transaction_pb2.ChaincodeActionPayload.FromString(action.payload)
        response_payload = proposal_response_pb2.ProposalResponsePayload.FromString(
            action_payload.action.proposal_response_payload
        )
        return bytes(proposal_pb2.ChaincodeAction.FromString(response_payload.extension).response.payload)
    raise ValueError("the endorsed transaction holds no chaincode action")


def prepared(proposal: ProposalState, endorse_response: bytes) -> TransactionState:
    """The endorsed transaction in a gateway.EndorseResponse."""
    payload = gateway_pb2.EndorseResponse.FromString(endorse_response).prepared_transaction.payload
    return TransactionState(
        proposal.tx_id, proposal.channel, payload, _result_of(common_pb2.Payload.FromString(payload))
    )


def evaluate_result(evaluate_response: bytes) -> bytes:
    return bytes(gateway_pb2.EvaluateResponse.FromString(evaluate_response).result.payload)


_CODE_NAMES: dict[int, str] = {number: name for name, number in transaction_pb2.TxValidationCode.items()}


def code_name(code: int) -> str:
    """A peer.TxValidationCode's name."""
    return _CODE_NAMES.get(code, str(code))


def commit_status(tx_id: str, commit_status_response: bytes) -> CommitStatus:
    response = gateway_pb2.CommitStatusResponse.FromString(commit_status_response)
    return CommitStatus(tx_id, code_name(response.result), response.block_number)


def chain_height(blockchain_info: bytes) -> int:
    """The height (last block number + 1) in a common.BlockchainInfo, as qscc GetChainInfo returns it."""
    return int(ledger_pb2.BlockchainInfo.FromString(blockchain_info).height)


# ----- chaincode events ------------------------------------------------------------------------------------------


def chaincode_events_request(
    identity: Identity, channel: str, chaincode: str, start_block: int | None, after_tx_id: str = ""
) -> bytes:
    """A serialised ChaincodeEventsRequest: from `start_block` (after `after_tx_id` in it), or from the next commit."""
    if start_block is None:
        position = ab_pb2.SeekPosition(next_commit=ab_pb2.SeekNextCommit())
    else:
        position = ab_pb2.SeekPosition(specified=ab_pb2.SeekSpecified(number=start_block))
    request = gateway_pb2.ChaincodeEventsRequest(
        channel_id=channel,
        chaincode_id=chaincode,
        identity=identity.creator,
        start_position=position,
        after_transaction_id=after_tx_id,
    )
    return bytes(request.SerializeToString())


def signed_request(request: bytes, signature: bytes) -> bytes:
    """A SignedChaincodeEventsRequest."""
    return _signed(request, signature)


def chaincode_events(events_response: bytes) -> list[ChaincodeEvent]:
    response = gateway_pb2.ChaincodeEventsResponse.FromString(events_response)
    block = response.block_number
    return [ChaincodeEvent(block, e.tx_id, e.chaincode_id, e.event_name, e.payload) for e in response.events]
