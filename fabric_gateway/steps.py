"""Every Gateway operation as a generator of steps, with no I/O: the one core of the blocking and asyncio clients.

An operation yields what it needs done, a `Call` of a Gateway method with its serialised request, and is sent back
the answer: the serialised response, or the `grpc.RpcError` the call raised. Three more calls are not gRPC: "pause"
(answer None), and "watch" / "commit_event", by which `submit_transaction` follows commits on the channel's block
stream (see `commits`) when the driver has one (answers: the running stream's handle, or None; then the status,
None to ask CommitStatus instead, or False when the deadline passed).
Everything else — building and signing requests, reading answers, mapping failures to errors, deciding to poll
again — happens here, once. A driver only performs the steps: `client.Gateway` with blocking calls, `aio.AsyncGateway`
by awaiting them. Requests and responses stay bytes between the two, so the drivers hand them to gRPC without
protobuf (de)serialisers, and each operation parses only the answer it reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeAlias, TypeVar

import grpc

from fabric_gateway import messages as m
from fabric_gateway.checkpoint import Checkpoint
from fabric_gateway.errors import (
    BlockWaitTimeout,
    CommitError,
    CommitStatusTimeout,
    EvaluateError,
    EvaluateTimeout,
    EvaluateUnavailable,
    FabricError,
    from_rpc_error,
)
from fabric_gateway.identity import Identity, Signer, digest

T = TypeVar("T")

UnaryStage = Literal["evaluate", "endorse", "submit", "commit_status"]


@dataclass(slots=True)  # not frozen: a frozen dataclass is slower to build, and there is one per call
class Call:
    """One thing a driver does: call a Gateway method with a serialised request and a deadline; or wait."""

    stage: UnaryStage | Literal["pause", "watch", "commit_event"]
    request: bytes
    timeout: float
    channel: str = ""
    tx_id: str = ""
    handle: object = None  # for "commit_event": what "watch" answered


@dataclass(slots=True)
class Done(Generic[T]):
    value: T


Reply: TypeAlias = object  # see the module docstring
Steps: TypeAlias = Generator[Call, Reply, T]


def taking_call(unary: Callable[..., T]) -> Callable[[Call], T]:
    """A unary callable (request, timeout=) as the drivers perform a Call."""
    return lambda call: unary(call.request, timeout=call.timeout)


def resume(operation: Steps[T], reply: Reply) -> Call | Done[T]:
    """Run an operation (started with reply None) up to its next call, or to its end."""
    try:
        return operation.send(reply)
    except StopIteration as stop:
        return Done(stop.value)


@dataclass(frozen=True)
class Timeouts:
    """Default deadlines of each call, in seconds."""

    evaluate: float = 10.0
    endorse: float = 30.0
    submit: float = 10.0
    commit_status: float = 60.0


DEFAULT_TIMEOUTS = Timeouts()


@dataclass(frozen=True)
class Submitted:
    """A committed transaction: its id, the chaincode's result, and where it committed."""

    tx_id: str
    result: bytes
    status: m.CommitStatus


class Session:
    """What every object of one Gateway shares: who signs, the default deadlines, and the chain heights its peers
    were last seen at."""

    __slots__ = ("heights", "identity", "signer", "timeouts")

    def __init__(self, identity: Identity, signer: Signer | None, timeouts: Timeouts) -> None:
        self.identity = identity
        self.signer = signer
        self.timeouts = timeouts
        # (channel, org) -> the highest height that org's peer answered with: a ledger only grows, so a wait for a
        # block below it is over without asking again.
        self.heights: dict[tuple[str, str], int] = {}

    def sign(self, value: m.ProposalState | m.TransactionState | m.CommitState) -> None:
        """Sign a value that is not signed yet (a signature given offline is kept)."""
        if not value.signature:
            value.signature = self.signature(value.digest)

    def signature(self, message_digest: bytes) -> bytes:
        if self.signer is None:
            raise ValueError("this gateway has no signer: sign the digest elsewhere and load the signed bytes")
        return self.signer(message_digest)


def rpc(stage: UnaryStage, request: bytes, timeout: float, tx_id: str) -> Steps[bytes]:
    started = time.monotonic()
    reply = yield Call(stage, request, timeout)
    if isinstance(reply, bytes):
        return reply
    assert isinstance(reply, grpc.RpcError)
    raise from_rpc_error(stage, reply, tx_id, deadline_passed=time.monotonic() - started >= timeout)


def commit_event(session: Session, tx: m.TransactionState, watch: object) -> Steps[m.CommitStatus | None]:
    """The status the channel's block stream brings (see `commits`), or None: ask CommitStatus."""
    timeout = session.timeouts.commit_status
    reply = yield Call("commit_event", b"", timeout, tx.channel, tx.tx_id, watch)
    if reply is False:
        raise CommitStatusTimeout("DEADLINE_EXCEEDED", f"not committed within {timeout:g} s", (), tx.tx_id)
    assert reply is None or isinstance(reply, m.CommitStatus)
    return reply


# ----- one stage each ----------------------------------------------------------------------------------------


def evaluate(session: Session, proposal: m.ProposalState, timeout: float | None = None) -> Steps[bytes]:
    session.sign(proposal)
    timeout = timeout or session.timeouts.evaluate
    reply = yield from rpc("evaluate", proposal.request(), timeout, proposal.tx_id)
    return m.evaluate_result(reply)


def endorse(session: Session, proposal: m.ProposalState, timeout: float | None = None) -> Steps[m.TransactionState]:
    session.sign(proposal)
    timeout = timeout or session.timeouts.endorse
    reply = yield from rpc("endorse", proposal.request(), timeout, proposal.tx_id)
    return m.prepared(proposal, reply)


def submit(session: Session, tx: m.TransactionState, timeout: float | None = None) -> Steps[m.CommitState]:
    """Send for ordering; returns the (unsigned) request to read the commit status with."""
    session.sign(tx)
    yield from rpc("submit", tx.request(), timeout or session.timeouts.submit, tx.tx_id)
    return m.CommitState.new(session.identity, tx.channel, tx.tx_id)


def commit_status(session: Session, commit: m.CommitState, timeout: float | None = None) -> Steps[m.CommitStatus]:
    """Waits until the transaction is committed, then says whether it is valid."""
    session.sign(commit)
    timeout = timeout or session.timeouts.commit_status
    reply = yield from rpc("commit_status", commit.request(), timeout, commit.tx_id)
    return m.commit_status(commit.tx_id, reply)


# ----- whole operations --------------------------------------------------------------------------------------


def submit_async(session: Session, proposal: m.ProposalState) -> Steps[tuple[m.TransactionState, m.CommitState]]:
    tx = yield from endorse(session, proposal)
    return tx, (yield from submit(session, tx))


def submit_transaction(session: Session, proposal: m.ProposalState) -> Steps[Submitted]:
    """Endorse, order, and wait for the commit; raises CommitError unless the transaction is valid. The channel's
    block stream must run before the transaction is sent, so that its block cannot be missed."""
    tx = yield from endorse(session, proposal)
    watch = yield Call("watch", b"", 0, tx.channel)
    commit = yield from submit(session, tx)
    status = (yield from commit_event(session, tx, watch)) if watch is not None else None
    if status is None:
        status = yield from commit_status(session, commit)
    if not status.successful:
        raise CommitError(status.tx_id, status.code, status.block_number)
    return Submitted(tx.tx_id, tx.result, status)


def wait_for_block(
    session: Session, channel: str, block_number: int, orgs: Sequence[str], timeout: float
) -> Steps[None]:
    """Poll each org's peer (through the Gateway: qscc, the system chaincode every peer runs, evaluating
    GetChainInfo with the org as target) until its ledger holds `block_number`: what one org wrote in that block can
    then be read, and built on, through that org's peer. Short pauses at first (peers commit a block within
    milliseconds of each other), then longer. A peer the Gateway cannot reach yet (it learns the other orgs' peers
    through gossip) is asked again until the time is up."""
    qscc = m.Target(channel, "qscc")
    deadline = time.monotonic() + timeout
    for org in orgs:
        if session.heights.get((channel, org), 0) > block_number:
            continue  # seen holding it already
        pause, height = 0.005, None
        failure: EvaluateError | None = None
        while True:
            proposal = qscc.proposal(session.identity, "GetChainInfo", [channel], endorsing_orgs=[org])
            ask_for = max(min(deadline - time.monotonic(), session.timeouts.evaluate), 0.001)
            try:
                height = m.chain_height((yield from evaluate(session, proposal, ask_for)))
            except (EvaluateTimeout, EvaluateUnavailable) as e:
                failure = e
            except EvaluateError as e:
                if e.code != "FAILED_PRECONDITION":  # not "no peers available": the org's peer refused
                    raise
                failure = e
            if height is not None and height > block_number:
                session.heights[(channel, org)] = max(height, session.heights.get((channel, org), 0))
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BlockWaitTimeout(channel, org, block_number, height) from failure
            yield Call("pause", b"", min(pause, remaining))
            pause = min(pause * 2, 0.2)


# ----- events ------------------------------------------------------------------------------------------------


def chaincode_events_request(
    session: Session, channel: str, chaincode: str, start_block: int | None, checkpoint: Checkpoint | None
) -> bytes:
    """The signed request for events from `start_block`, or resuming after a checkpoint, or (neither) from the next
    commit on. A checkpoint that is not empty wins over `start_block`."""
    after = ""
    if checkpoint is not None and not checkpoint.is_empty:
        start_block, after = checkpoint.block_number, checkpoint.tx_id
    request = m.chaincode_events_request(session.identity, channel, chaincode, start_block, after)
    return m.signed_request(request, session.signature(digest(request)))


def events_failure(err: grpc.RpcError) -> FabricError | None:
    """The error to raise for a broken event stream, or None when it ended because the reader closed it."""
    if err.code() == grpc.StatusCode.CANCELLED:
        return None
    return from_rpc_error("events", err)
