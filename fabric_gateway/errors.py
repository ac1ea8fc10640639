"""Typed Fabric Gateway failures that keep Fabric's details: which peer, which org, what the chaincode said."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from fabric_protos.gateway import gateway_pb2
from google.rpc import status_pb2


@dataclass(frozen=True)
class PeerDetail:
    """One endorsing peer's answer, as the Gateway reports it."""

    address: str
    msp_id: str
    message: str


class FabricError(Exception):
    """Base class of everything the Gateway client raises."""


class GatewayError(FabricError):
    """A Gateway RPC failed. `stage` is endorse, evaluate, submit, commit_status or events."""

    def __init__(self, stage: str, code: str, message: str, details: tuple[PeerDetail, ...] = ()) -> None:
        self.stage = stage
        self.code = code
        self.message = message
        self.details = details
        lines = [f"{stage} failed ({code}): {message}"]
        lines += [f"  {d.msp_id} peer {d.address}: {d.message}" for d in details]
        super().__init__("\n".join(lines))

    @property
    def chaincode_messages(self) -> list[str]:
        return [d.message for d in self.details]


class EndorsementFailed(GatewayError):
    """Endorsement was refused or failed: a chaincode error, a policy that cannot be met, inconsistent results."""


class EvaluateFailed(GatewayError):
    pass


class SubmitFailed(GatewayError):
    """The ordering service did not accept the transaction."""


class CommitStatusFailed(GatewayError):
    """The commit status could not be read (the transaction may still commit)."""


class EventsFailed(GatewayError):
    pass


class GatewayTimeout(GatewayError, TimeoutError):
    """The call's deadline passed. For submit/commit status the transaction may still commit."""


class PeerUnavailable(GatewayError):
    """The Gateway peer could not be reached."""


class CommitFailed(FabricError):
    """The transaction was ordered but the peers marked it invalid (e.g. MVCC_READ_CONFLICT)."""

    def __init__(self, tx_id: str, code: str, block_number: int) -> None:
        super().__init__(f"transaction {tx_id} failed to commit with status {code} in block {block_number}")
        self.tx_id = tx_id
        self.code = code
        self.block_number = block_number


_BY_STAGE: dict[str, type[GatewayError]] = {
    "endorse": EndorsementFailed,
    "evaluate": EvaluateFailed,
    "submit": SubmitFailed,
    "commit_status": CommitStatusFailed,
    "events": EventsFailed,
}


def _metadata_items(metadata: Any) -> list[tuple[str, Any]]:
    return [(item[0], item[1]) for item in (metadata or ())]


def peer_details(trailing_metadata: Any) -> tuple[PeerDetail, ...]:
    """Unpack the gateway.ErrorDetail messages Fabric puts in the grpc-status-details-bin trailer."""
    for key, value in _metadata_items(trailing_metadata):
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        details = []
        for any_detail in status.details:
            detail = gateway_pb2.ErrorDetail()
            if any_detail.Unpack(detail):
                details.append(PeerDetail(detail.address, detail.msp_id, detail.message))
        return tuple(details)
    return ()


def from_rpc_error(stage: str, err: grpc.RpcError, deadline_passed: bool = False) -> GatewayError:
    """Map a gRPC failure (blocking or asyncio) to the typed error for its stage.

    A call whose deadline passed is a timeout even when the server got there first and reset the stream
    (CANCELLED), which it does for very short deadlines.
    """
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = err.details() if hasattr(err, "details") else str(err)
    trailers = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    details = peer_details(trailers)
    name = code.name if code is not None else "UNKNOWN"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED or (deadline_passed and code == grpc.StatusCode.CANCELLED):
        return GatewayTimeout(stage, name, message or "deadline exceeded", details)
    if code == grpc.StatusCode.UNAVAILABLE:
        return PeerUnavailable(stage, name, message or "unavailable", details)
    return _BY_STAGE[stage](stage, name, message or "", details)
