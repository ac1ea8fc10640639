"""Blocks and transactions as an explorer shows them: who sent what to which contract function, and whether it was
valid. Parsed from the peer's own messages (qscc GetBlockByNumber / GetTransactionByID, a filtered-block stream).
No I/O, and no arguments: a transaction's arguments (and its transient data, which never reaches a block) are
application data, so only the function name (the invocation's first argument) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from fabric_protos.common import common_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import (
    chaincode_event_pb2,
    chaincode_pb2,
    events_pb2,
    proposal_pb2,
    proposal_response_pb2,
    transaction_pb2,
)

from fabric_gateway.messages import code_name

FUNCTION_MAX = 100  # characters of a function name kept: a malformed one must not carry data
_HEADER_TYPES: dict[int, str] = {number: name for name, number in common_pb2.HeaderType.items()}
_TRANSACTIONS_FILTER = common_pb2.BlockMetadataIndex.TRANSACTIONS_FILTER


@dataclass(frozen=True)
class TransactionSummary:
    tx_id: str
    kind: str  # the channel header type: ENDORSER_TRANSACTION, CONFIG, ...
    timestamp: str  # ISO 8601, UTC, as the creator stamped it
    creator_msp: str
    chaincode: str  # "" for a config transaction
    function: str  # "Contract:Function" as invoked; never its arguments
    validation: str  # the peer's TxValidationCode name: VALID, MVCC_READ_CONFLICT, ...
    endorsers: tuple[str, ...]  # MSP ids of the endorsing peers
    events: tuple[str, ...]  # chaincode event names it emitted

    @property
    def valid(self) -> bool:
        return self.validation == "VALID"


@dataclass(frozen=True)
class BlockSummary:
    number: int
    data_hash: str  # hex
    previous_hash: str  # hex
    transactions: tuple[TransactionSummary, ...]


@dataclass(frozen=True)
class FilteredTransaction:
    tx_id: str
    kind: str
    validation: str
    events: tuple[str, ...]


@dataclass(frozen=True)
class FilteredBlock:
    """What a filtered-block stream says of a block: its number and each transaction's id, type, validity."""

    channel: str
    number: int
    transactions: tuple[FilteredTransaction, ...]


def _iso(ts: object) -> str:
    seconds = int(getattr(ts, "seconds", 0))
    nanos = int(getattr(ts, "nanos", 0))
    moment = datetime.fromtimestamp(seconds + nanos / 1e9, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _msp_of(serialized_identity: bytes) -> str:
    try:
        return str(identities_pb2.SerializedIdentity.FromString(serialized_identity).mspid)
    except Exception:  # a malformed identity names nobody
        return ""


def _function_name(spec_input: bytes) -> tuple[str, str]:
    """(chaincode, function) of a ChaincodeProposalPayload."""
    payload = proposal_pb2.ChaincodeProposalPayload.FromString(spec_input)
    invocation = chaincode_pb2.ChaincodeInvocationSpec.FromString(payload.input)
    spec = invocation.chaincode_spec
    args = list(spec.input.args)
    name = args[0].decode("utf-8", "replace")[:FUNCTION_MAX] if args else ""
    return str(spec.chaincode_id.name), name


def _endorsed_action(data: bytes) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
    """(chaincode, function, endorser MSPs, event names) of an endorser transaction's first action."""
    tx = transaction_pb2.Transaction.FromString(data)
    if not tx.actions:
        return "", "", (), ()
    action = transaction_pb2.ChaincodeActionPayload.FromString(tx.actions[0].payload)
    chaincode, function = _function_name(action.chaincode_proposal_payload)
    endorsers = tuple(_msp_of(e.endorser) for e in action.action.endorsements)
    response = proposal_response_pb2.ProposalResponsePayload.FromString(action.action.proposal_response_payload)
    cc_action = proposal_pb2.ChaincodeAction.FromString(response.extension)
    events: tuple[str, ...] = ()
    if cc_action.events:
        event = chaincode_event_pb2.ChaincodeEvent.FromString(cc_action.events)
        events = (str(event.event_name),) if event.event_name else ()
    return chaincode, function, endorsers, events


def transaction_summary(envelope_bytes: bytes, validation: str) -> TransactionSummary:
    """One transaction of a block (an Envelope), with the validation code the committing peer gave it."""
    envelope = common_pb2.Envelope.FromString(envelope_bytes)
    payload = common_pb2.Payload.FromString(envelope.payload)
    header = common_pb2.ChannelHeader.FromString(payload.header.channel_header)
    signature = common_pb2.SignatureHeader.FromString(payload.header.signature_header)
    kind = _HEADER_TYPES.get(header.type, str(header.type))
    chaincode = function = ""
    endorsers: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    if header.type == common_pb2.HeaderType.ENDORSER_TRANSACTION:
        chaincode, function, endorsers, events = _endorsed_action(payload.data)
    return TransactionSummary(
        tx_id=str(header.tx_id),
        kind=kind,
        timestamp=_iso(header.timestamp),
        creator_msp=_msp_of(signature.creator),
        chaincode=chaincode,
        function=function,
        validation=validation,
        endorsers=endorsers,
        events=events,
    )


def block_summary(block_bytes: bytes) -> BlockSummary:
    """A common.Block, as qscc GetBlockByNumber returns it."""
    block = common_pb2.Block.FromString(block_bytes)
    metadata = list(block.metadata.metadata)
    codes = metadata[_TRANSACTIONS_FILTER] if len(metadata) > _TRANSACTIONS_FILTER else b""
    txs = []
    for i, envelope in enumerate(block.data.data):
        validation = code_name(codes[i]) if i < len(codes) else "UNKNOWN"
        txs.append(transaction_summary(envelope, validation))
    return BlockSummary(
        number=int(block.header.number),
        data_hash=block.header.data_hash.hex(),
        previous_hash=block.header.previous_hash.hex(),
        transactions=tuple(txs),
    )


def processed_transaction(processed: bytes) -> TransactionSummary:
    """A peer.ProcessedTransaction, as qscc GetTransactionByID returns it."""
    tx = transaction_pb2.ProcessedTransaction.FromString(processed)
    return transaction_summary(tx.transactionEnvelope.SerializeToString(), code_name(tx.validationCode))


def filtered_block(deliver_response: bytes) -> FilteredBlock | None:
    """A DeliverResponse carrying a filtered block, or None for a status (the end of the stream)."""
    message = events_pb2.DeliverResponse.FromString(deliver_response)
    if message.WhichOneof("Type") != "filtered_block":
        return None
    block = message.filtered_block
    txs = []
    for tx in block.filtered_transactions:
        names = tuple(
            str(a.chaincode_event.event_name)
            for a in tx.transaction_actions.chaincode_actions
            if a.chaincode_event.event_name
        )
        kind = _HEADER_TYPES.get(tx.type, str(tx.type))
        txs.append(FilteredTransaction(str(tx.txid), kind, code_name(tx.tx_validation_code), names))
    return FilteredBlock(str(block.channel_id), int(block.number), tuple(txs))
