"""CareLedger's Python client for the Fabric Gateway service (peer gRPC), modelled on the official clients."""

from fabric_gateway.checkpoint import (
    Checkpoint,
    Checkpointer,
    FileCheckpointer,
    InMemoryCheckpointer,
    RedisCheckpointer,
)
from fabric_gateway.client import Gateway, Pending, Submitted, Timeouts
from fabric_gateway.connection import Endpoint
from fabric_gateway.errors import (
    CommitFailed,
    CommitStatusFailed,
    EndorsementFailed,
    EvaluateFailed,
    EventsFailed,
    FabricError,
    GatewayError,
    GatewayTimeout,
    PeerUnavailable,
    SubmitFailed,
)
from fabric_gateway.identity import Identity, Signer, ecdsa_signer, load_msp
from fabric_gateway.messages import ChaincodeEvent, CommitStatus
from fabric_gateway.retry import retry_conflicts

__all__ = [
    "ChaincodeEvent",
    "Checkpoint",
    "Checkpointer",
    "CommitFailed",
    "CommitStatus",
    "CommitStatusFailed",
    "EndorsementFailed",
    "Endpoint",
    "EvaluateFailed",
    "EventsFailed",
    "FabricError",
    "FileCheckpointer",
    "Gateway",
    "GatewayError",
    "GatewayTimeout",
    "Identity",
    "InMemoryCheckpointer",
    "PeerUnavailable",
    "Pending",
    "RedisCheckpointer",
    "Signer",
    "SubmitFailed",
    "Submitted",
    "Timeouts",
    "ecdsa_signer",
    "load_msp",
    "retry_conflicts",
]
