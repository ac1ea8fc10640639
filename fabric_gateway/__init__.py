"""CareLedger's Python client for the Fabric Gateway service (peer gRPC), shaped like the official clients.

Gateway (connection + identity) -> Network (channel) -> Contract (chaincode, optionally one contract in it) ->
evaluate / submit / submit_async, or step by step new_proposal -> endorse -> submit -> status, each value
serialisable and signable offline. `Gateway` blocks; `AsyncGateway` (fabric_gateway.aio) is the same for asyncio.
"""

from fabric_gateway.aio import (
    AsyncCommit,
    AsyncContract,
    AsyncGateway,
    AsyncNetwork,
    AsyncProposal,
    AsyncTransaction,
)
from fabric_gateway.base import ProposalOptions
from fabric_gateway.checkpoint import (
    Checkpoint,
    Checkpointer,
    FileCheckpointer,
    InMemoryCheckpointer,
    RedisCheckpointer,
)
from fabric_gateway.client import ChaincodeEvents, Commit, Contract, Gateway, Network, Proposal, Transaction
from fabric_gateway.connection import Endpoint
from fabric_gateway.discovery import DiscoveredPeer, discover_peers
from fabric_gateway.errors import (
    BlockWaitTimeout,
    CommitError,
    CommitStatusError,
    CommitStatusTimeout,
    CommitStatusUnavailable,
    CommitUnknown,
    DiscoveryError,
    EndorseError,
    EndorseTimeout,
    EndorseUnavailable,
    ErrorDetail,
    EvaluateError,
    EvaluateTimeout,
    EvaluateUnavailable,
    EventsError,
    EventsTimeout,
    EventsUnavailable,
    FabricError,
    GatewayError,
    GatewayTimeout,
    GatewayUnavailable,
    NotCommitted,
    SubmitError,
    SubmitRefused,
    SubmitTimeout,
    SubmitUnavailable,
)
from fabric_gateway.identity import Identity, Signer, ecdsa_signer, load_msp
from fabric_gateway.messages import ChaincodeEvent, CommitStatus
from fabric_gateway.retry import is_read_race, retry_conflicts, retry_conflicts_async
from fabric_gateway.steps import DEFAULT_TIMEOUTS, Submitted, Timeouts

__all__ = [
    "DEFAULT_TIMEOUTS",
    "AsyncCommit",
    "AsyncContract",
    "AsyncGateway",
    "AsyncNetwork",
    "AsyncProposal",
    "AsyncTransaction",
    "BlockWaitTimeout",
    "ChaincodeEvent",
    "ChaincodeEvents",
    "Checkpoint",
    "Checkpointer",
    "Commit",
    "CommitError",
    "CommitStatus",
    "CommitStatusError",
    "CommitStatusTimeout",
    "CommitStatusUnavailable",
    "CommitUnknown",
    "Contract",
    "DiscoveredPeer",
    "DiscoveryError",
    "EndorseError",
    "EndorseTimeout",
    "EndorseUnavailable",
    "Endpoint",
    "ErrorDetail",
    "EvaluateError",
    "EvaluateTimeout",
    "EvaluateUnavailable",
    "EventsError",
    "EventsTimeout",
    "EventsUnavailable",
    "FabricError",
    "FileCheckpointer",
    "Gateway",
    "GatewayError",
    "GatewayTimeout",
    "GatewayUnavailable",
    "Identity",
    "InMemoryCheckpointer",
    "Network",
    "NotCommitted",
    "Proposal",
    "ProposalOptions",
    "RedisCheckpointer",
    "Signer",
    "SubmitError",
    "SubmitRefused",
    "SubmitTimeout",
    "SubmitUnavailable",
    "Submitted",
    "Timeouts",
    "Transaction",
    "discover_peers",
    "ecdsa_signer",
    "is_read_race",
    "load_msp",
    "retry_conflicts",
    "retry_conflicts_async",
]
