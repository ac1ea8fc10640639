"""CareLedger's Python client for the Fabric Gateway service (peer gRPC), modelled on the official clients."""

from gateway.fabric.checkpoint import (
    Checkpoint,
    Checkpointer,
    FileCheckpointer,
    InMemoryCheckpointer,
    RedisCheckpointer,
)
from gateway.fabric.client import Gateway, Pending, Submitted, Timeouts
from gateway.fabric.connection import Endpoint
from gateway.fabric.errors import (
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
from gateway.fabric.identity import Identity, Signer, ecdsa_signer, load_msp
from gateway.fabric.messages import ChaincodeEvent, CommitStatus
from gateway.fabric.retry import retry_conflicts

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
