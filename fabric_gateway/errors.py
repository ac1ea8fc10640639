"""Every failure the client raises, one hierarchy, with Fabric's details kept: the transaction id, which stage,
and each peer's or orderer's own message.

    FabricError
    ├── CommitUnknown        the transaction may still commit: look it up by tx id, or send the same signed bytes again
    ├── NotCommitted         it did not commit and never will: a NEW transaction is safe
    ├── GatewayError         a Gateway call failed; .stage .code .message .details .tx_id
    │   ├── GatewayTimeout   (also a TimeoutError) the deadline passed
    │   ├── GatewayUnavailable  the peer, or what it needed (endorsers, orderers), could not be reached
    │   ├── EvaluateError    ├ EvaluateTimeout ├ EvaluateUnavailable
    │   ├── EndorseError     ├ EndorseTimeout  ├ EndorseUnavailable              all NotCommitted
    │   ├── SubmitError      ├ SubmitTimeout   ├ SubmitUnavailable  (CommitUnknown) └ SubmitRefused (NotCommitted)
    │   ├── CommitStatusError├ CommitStatusTimeout ├ CommitStatusUnavailable    all CommitUnknown
    │   └── EventsError      ├ EventsTimeout   ├ EventsUnavailable
    ├── CommitError          ordered, but the peers marked it invalid (.code, .block_number); NotCommitted
    └── BlockWaitTimeout     an org's peer did not reach a block in time (also a TimeoutError); .height, None
                             when the Gateway could not reach that peer

An endorsement that failed, even by timeout, cannot commit: the client never had a transaction to send. A submit
that timed out, or lost its connection, may have reached an orderer. The Gateway answers a refusal by the orderer
(or a malformed request) with a definite code, which is `SubmitRefused`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import grpc
from fabric_protos.gateway import gateway_pb2
from google.rpc import status_pb2

Stage = Literal["evaluate", "endorse", "submit", "commit_status", "events"]


@dataclass(frozen=True)
class ErrorDetail:
    """One endorsing peer's or orderer's answer, as the Gateway attaches it to a failure."""

    address: str
    msp_id: str
    message: str


class FabricError(Exception):
    """Base class of everything the Gateway client raises."""


class CommitUnknown(FabricError):
    """Whether the transaction commits is not known: ask (`Network.commit_status(tx_id)`) or resubmit the same
    signed transaction, which commits at most once."""


class NotCommitted(FabricError):
    """The transaction did not commit and never will; building and submitting a new one is safe."""


class DiscoveryError(FabricError):
    """The peer's discovery service refused a query; `code` is the gRPC status name (UNKNOWN for a refusal in the
    answer itself)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"discovery failed ({code}): {message}")


class GatewayError(FabricError):
    """A Gateway call failed. `stage` says which, `code` is the gRPC status name, `details` what each peer said."""

    stage: Stage

    def __init__(self, code: str, message: str, details: tuple[ErrorDetail, ...] = (), tx_id: str = "") -> None:
        self.code = code
        self.message = message
        self.details = details
        self.tx_id = tx_id
        about = f" for transaction {tx_id}" if tx_id else ""
        lines = [f"{self.stage} failed{about} ({code}): {message}"]
        lines += [f"  {d.msp_id} {d.address}: {d.message}" for d in details]
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.code, self.message, self.details, self.tx_id)

    @property
    def chaincode_messages(self) -> list[str]:
        """What each peer said; a chaincode's own error message is among these."""
        return [d.message for d in self.details]


class GatewayTimeout(GatewayError, TimeoutError):
    """The call's deadline passed."""


class GatewayUnavailable(GatewayError):
    """The Gateway peer, or the endorsers or orderers it needed, could not be reached."""


class EvaluateError(GatewayError):
    stage = "evaluate"


class EvaluateTimeout(EvaluateError, GatewayTimeout):
    pass


class EvaluateUnavailable(EvaluateError, GatewayUnavailable):
    pass


class EndorseError(GatewayError, NotCommitted):
    """Endorsement was refused or failed: a chaincode error, a policy that cannot be met, inconsistent results."""

    stage = "endorse"


class EndorseTimeout(EndorseError, GatewayTimeout):
    pass


class EndorseUnavailable(EndorseError, GatewayUnavailable):
    pass


class SubmitError(GatewayError):
    """Sending the endorsed transaction for ordering failed; the subclass says whether it may still commit."""

    stage = "submit"


class SubmitRefused(SubmitError, NotCommitted):
    """The Gateway or the orderer refused the transaction (bad signature, malformed, not allowed)."""


class SubmitTimeout(SubmitError, GatewayTimeout, CommitUnknown):
    pass


class SubmitUnavailable(SubmitError, GatewayUnavailable, CommitUnknown):
    """The connection or the ordering service failed during the call."""


class CommitStatusError(GatewayError, CommitUnknown):
    """The commit status could not be read; the transaction may still commit."""

    stage = "commit_status"


class CommitStatusTimeout(CommitStatusError, GatewayTimeout):
    pass


class CommitStatusUnavailable(CommitStatusError, GatewayUnavailable):
    pass


class EventsError(GatewayError):
    stage = "events"


class EventsTimeout(EventsError, GatewayTimeout):
    pass


class EventsUnavailable(EventsError, GatewayUnavailable):
    pass


class CommitError(NotCommitted):
    """The transaction was ordered but the peers marked it invalid (e.g. MVCC_READ_CONFLICT) in `block_number`."""

    def __init__(self, tx_id: str, code: str, block_number: int) -> None:
        super().__init__(f"transaction {tx_id} failed to commit with status {code} in block {block_number}")
        self.tx_id = tx_id
        self.code = code
        self.block_number = block_number

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.tx_id, self.code, self.block_number)


class BlockWaitTimeout(FabricError, TimeoutError):
    """An org's peer had not committed the block when the wait ran out."""

    def __init__(self, channel: str, msp_id: str, block_number: int, height: int | None) -> None:
        known = f"its height is {height}" if height is not None else "the Gateway could not reach it"
        super().__init__(f"{msp_id}'s peer has not committed block {block_number} on {channel} ({known})")
        self.channel = channel
        self.msp_id = msp_id
        self.block_number = block_number
        self.height = height

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.channel, self.msp_id, self.block_number, self.height)


# (the error of each stage, its timeout, its unavailability)
_CLASSES: dict[Stage, tuple[type[GatewayError], type[GatewayError], type[GatewayError]]] = {
    "evaluate": (EvaluateError, EvaluateTimeout, EvaluateUnavailable),
    "endorse": (EndorseError, EndorseTimeout, EndorseUnavailable),
    "submit": (SubmitRefused, SubmitTimeout, SubmitUnavailable),
    "commit_status": (CommitStatusError, CommitStatusTimeout, CommitStatusUnavailable),
    "events": (EventsError, EventsTimeout, EventsUnavailable),
}

# Codes by which the Gateway answers a submit it did not pass on, or that the orderer refused (4xx). Any other
# failure of a submit (cancelled, internal, lost connection) leaves open whether an orderer has the transaction.
_REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.ABORTED,
    }
)


def error_details(trailing_metadata: Any) -> tuple[ErrorDetail, ...]:
    """Unpack the gateway.ErrorDetail messages Fabric puts in the grpc-status-details-bin trailer."""
    for item in trailing_metadata or ():
        if item[0] != "grpc-status-details-bin":
            continue
        details = []
        for any_detail in status_pb2.Status.FromString(item[1]).details:
            detail = gateway_pb2.ErrorDetail()
            if any_detail.Unpack(detail):
                details.append(ErrorDetail(detail.address, detail.msp_id, detail.message))
        return tuple(details)
    return ()


def from_rpc_error(stage: Stage, err: grpc.RpcError, tx_id: str = "", deadline_passed: bool = False) -> GatewayError:
    """Map a gRPC failure (blocking or asyncio) to the typed error for its stage.

    A call whose deadline passed is a timeout even when the server got there first and reset the stream
    (CANCELLED), which it does for very short deadlines.
    """
    code = err.code() if hasattr(err, "code") else None
    message = (err.details() if hasattr(err, "details") else None) or str(err)
    details = error_details(err.trailing_metadata() if hasattr(err, "trailing_metadata") else None)
    stage_error, timeout, unavailable = _CLASSES[stage]
    if code == grpc.StatusCode.DEADLINE_EXCEEDED or (deadline_passed and code == grpc.StatusCode.CANCELLED):
        cls = timeout
    elif code == grpc.StatusCode.UNAVAILABLE or (stage == "submit" and code not in _REFUSALS):
        cls = unavailable
    else:
        cls = stage_error
    return cls(code.name if code is not None else "UNKNOWN", message, details, tx_id)
