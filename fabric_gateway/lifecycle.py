"""The `_lifecycle` and `qscc` system chaincodes' queries as plain values: request arguments built and answers parsed
here, no I/O. The network objects (`aio.AsyncNetwork`) evaluate them through the Gateway."""

from __future__ import annotations

from dataclasses import dataclass

from fabric_protos.common import collection_pb2, ledger_pb2
from fabric_protos.peer.lifecycle import lifecycle_pb2

LIFECYCLE, QSCC = "_lifecycle", "qscc"


@dataclass(frozen=True)
class ChainInfo:
    height: int  # blocks held: the newest block's number + 1
    current_hash: str  # hex
    previous_hash: str  # hex


@dataclass(frozen=True)
class ChaincodeDefinition:
    name: str
    sequence: int
    version: str
    endorsement_plugin: str
    validation_plugin: str
    init_required: bool
    collections: tuple[str, ...]  # private data collection names
    approvals: tuple[tuple[str, bool], ...]  # (MSP id, approved) for every channel member, sorted by MSP id


def chain_info(blockchain_info: bytes) -> ChainInfo:
    info = ledger_pb2.BlockchainInfo.FromString(blockchain_info)
    return ChainInfo(int(info.height), info.currentBlockHash.hex(), info.previousBlockHash.hex())


def definitions_args() -> bytes:
    return bytes(lifecycle_pb2.QueryChaincodeDefinitionsArgs().SerializeToString())


def definition_args(name: str) -> bytes:
    return bytes(lifecycle_pb2.QueryChaincodeDefinitionArgs(name=name).SerializeToString())


def definition_names(result: bytes) -> list[str]:
    """The names in a QueryChaincodeDefinitionsResult (the committed definitions of a channel)."""
    found = lifecycle_pb2.QueryChaincodeDefinitionsResult.FromString(result)
    return sorted(str(d.name) for d in found.chaincode_definitions)


def _collection_names(config: collection_pb2.CollectionConfigPackage) -> tuple[str, ...]:
    return tuple(sorted(str(c.static_collection_config.name) for c in config.config))


def definition(name: str, result: bytes) -> ChaincodeDefinition:
    """A QueryChaincodeDefinitionResult: the committed definition and which members approved it."""
    found = lifecycle_pb2.QueryChaincodeDefinitionResult.FromString(result)
    return ChaincodeDefinition(
        name=name,
        sequence=int(found.sequence),
        version=str(found.version),
        endorsement_plugin=str(found.endorsement_plugin),
        validation_plugin=str(found.validation_plugin),
        init_required=bool(found.init_required),
        collections=_collection_names(found.collections),
        approvals=tuple(sorted((str(k), bool(v)) for k, v in found.approvals.items())),
    )
