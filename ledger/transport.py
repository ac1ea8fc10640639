"""The one seam between the typed contract calls and Fabric: submit or evaluate a contract function on a channel.

`FabricTransport` is the real one (an org's identity, through its own peer's Gateway); `ledger.fake.FakeLedger`
keeps the contracts' state in memory for fast unit tests of everything above the ledger.

Submit is not commit. Once a signed transaction may have reached an orderer, every failure is an unknown outcome:
the transport asks for the transaction's commit status by its id and sends the SAME signed transaction again (a
second copy is refused as a duplicate and does no harm) until the answer is definite or its deadline passes; only
then does it raise `OutcomeUnknown`, carrying the signed bytes, so whoever keeps them can settle it later. A caller
that must survive a crash in between gets the signed bytes before they are sent (`on_prepared`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from fabric_gateway import (
    AsyncContract,
    AsyncGateway,
    AsyncTransaction,
    CommitError,
    CommitStatus,
    CommitStatusTimeout,
    CommitUnknown,
    EndorseError,
    EvaluateError,
    SubmitRefused,
)
from fabric_gateway.retry import UNAVAILABLE_RETRY_S, retry_conflicts_async, retry_unavailable_async
from ledger.errors import refusal

log = logging.getLogger("careledger.ledger")
T = TypeVar("T")

CHAINCODE = "careledger"
UNKNOWN_OUTCOME_DEADLINE_S = 60.0  # how long one submit keeps resolving an unknown outcome before it says so
# How long one send waits for its commit before the same transaction is sent again: an orderer (the Raft leader) that
# died with it never orders it, and the commit status would wait its whole deadline. Long enough that a transaction
# that is only slow is rarely sent twice (each copy that is ordered is an invalid duplicate in a later block, work for
# every peer), and doubled after each send.
ATTEMPT_S = (8.0, 16.0)
SUBMIT_S = 10.0  # one Submit call (the orderer's acknowledgement)
LOOKUP_S = 3.0  # one look-up of the commit status by transaction id
# How often a transaction that lost a read race is built again (backoff doubling from 50 ms with full jitter: about
# 6 s in all, at most 13). Besides concurrent writers, a peer that was just restarted (a renewal, a crash) answers
# from an older state until it has caught up, and endorsers then disagree ("ProposalResponsePayloads do not match")
# for a few seconds: five tries (under a second) gave up while it caught up.
READ_RACE_ATTEMPTS = 8


@dataclass(frozen=True)
class Sent:
    """A committed transaction: its id, the block that holds it, and the contract's raw return value."""

    tx_id: str
    result: bytes
    block_number: int = 0


@dataclass(frozen=True)
class Prepared:
    """An endorsed, signed transaction about to be sent: what must be kept to send it again."""

    channel: str
    tx_id: str
    signed: bytes


class OutcomeUnknown(CommitUnknown):
    """A transaction may or may not commit, and its deadline passed while finding out. `prepared` is it, signed:
    settle it later with `Transport.settle`, never by building a new one."""

    def __init__(self, prepared: Prepared, cause: Exception) -> None:
        super().__init__(f"transaction {prepared.tx_id} on {prepared.channel}: outcome unknown ({cause})")
        self.prepared = prepared


# Keeps a signed transaction before it is sent. It may return a function that makes what it kept durable (a folder
# sync); `kept` calls each distinct one once after every callback, so a transaction kept for many writes (the claims
# of one batch) costs one sync, not one per write.
OnPrepared = Callable[[Prepared], Callable[[], None] | None]


def kept(prepared: Prepared, *callbacks: OnPrepared | None) -> None:
    """Give the transaction to each callback, then make what they kept durable: each distinct function they
    returned is called once, after them all."""
    finishing: list[Callable[[], None]] = []
    for keep in callbacks:
        if keep is not None and (finish := keep(prepared)) is not None and finish not in finishing:
            finishing.append(finish)
    for finish in finishing:
        finish()


class Transport(Protocol):
    async def submit(
        self,
        channel: str,
        function: str,
        args: Sequence[str],
        transient: Mapping[str, bytes] | None = None,
        on_prepared: OnPrepared | None = None,
    ) -> Sent:
        """Endorse, order and wait for the commit; raise LedgerRefused when the contract says no, OutcomeUnknown
        when the deadline passed without a definite answer."""
        ...

    async def settle(self, prepared: Prepared) -> Sent:
        """Send a kept transaction again until it is known to have committed (Sent) or not (NotCommitted)."""
        ...

    async def evaluate(self, channel: str, function: str, args: Sequence[str]) -> bytes:
        """Ask one peer; raise LedgerRefused when the contract says no."""
        ...

    async def wait_for_block(self, channel: str, block_number: int, orgs: Sequence[str]) -> None:
        """Return once these orgs' peers have committed the block (to act on what it wrote)."""
        ...


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs) in a thread, off the event loop. A cancellation of the caller waits for the thread to
    finish before it goes on: what the thread writes (a kept transaction, a store commit) must never land after the
    caller has moved on to undo it."""
    running = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await running
        raise


async def outcome_of(shared: asyncio.Future[T]) -> T:
    """The result of a future other callers wait on too (a batch's answer, a group's commit), waited for through any
    number of cancellations: the future itself is never cancelled, so the others always get it. A caller cancelled
    meanwhile gets CancelledError once the future is done, as `in_thread` does."""
    cancelled = False
    while not shared.done():
        try:
            await asyncio.shield(shared)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return shared.result()


class FabricTransport:
    """Contract calls as one org's identity through its own peer's Gateway."""

    def __init__(
        self,
        gateway: AsyncGateway,
        chaincode: str = CHAINCODE,
        deadline_s: float = UNKNOWN_OUTCOME_DEADLINE_S,
        unavailable_retry_s: float = UNAVAILABLE_RETRY_S,
    ) -> None:
        self.gateway = gateway
        self.chaincode = chaincode
        self.deadline_s = deadline_s
        self.unavailable_retry_s = unavailable_retry_s
        self._contracts: dict[str, AsyncContract] = {}

    def contract(self, channel: str) -> AsyncContract:
        """The chaincode on a channel, bound once."""
        if channel not in self._contracts:
            self._contracts[channel] = self.gateway.network(channel).contract(self.chaincode)
        return self._contracts[channel]

    async def submit(
        self,
        channel: str,
        function: str,
        args: Sequence[str],
        transient: Mapping[str, bytes] | None = None,
        on_prepared: OnPrepared | None = None,
    ) -> Sent:
        async def attempt() -> Sent:
            proposal = self.contract(channel).new_proposal(function, args=args, transient=transient)
            try:
                tx = await proposal.endorse()
            except EndorseError as e:
                raise (refusal(e.chaincode_messages) or e) from None
            tx.sign()
            prepared = Prepared(channel, tx.tx_id, tx.to_bytes())
            if on_prepared is not None:  # off the event loop: it writes (and syncs) files, and a slow disk under
                await in_thread(kept, prepared, on_prepared)  # load held up every request of the process
            return await self._until_known(tx, prepared)

        # A transaction that lost a read race, or met endorsers that were unavailable, did not commit: submitting a new
        # one is safe.
        return await retry_conflicts_async(
            lambda: retry_unavailable_async(attempt, self.unavailable_retry_s), attempts=READ_RACE_ATTEMPTS
        )

    async def settle(self, prepared: Prepared) -> Sent:
        return await self._until_known(self.gateway.transaction_from_bytes(prepared.signed), prepared, sent_before=True)

    async def _until_known(self, tx: AsyncTransaction, prepared: Prepared, sent_before: bool = False) -> Sent:
        """Send (again, as often as needed) and read the commit status until it is definite or the deadline passes.
        Each wait for the commit is bounded (ATTEMPT_S, never past the deadline): when it runs out, the transaction is
        not committed at our peer yet, so the same signed transaction is sent again (to an orderer that is alive; a
        second copy that is ordered is refused as a duplicate and does no harm). After any other failure its commit
        status is looked up by id first. A transaction the peers invalidated raises CommitError (NotCommitted)."""
        deadline = time.monotonic() + self.deadline_s
        pause, wait = 0.25, ATTEMPT_S[0]
        while True:
            began = time.monotonic()
            try:
                commit = await tx.submit(timeout=self._within(deadline, SUBMIT_S))
                sent_before = True
                status = await commit.status(timeout=self._within(deadline, wait))
            except SubmitRefused:
                # Refused outright the first time: it never reached an orderer. Refused when sent again: the first
                # copy may have been ordered, so only its commit status can tell.
                if not sent_before or (found := await self._looked_up(prepared, deadline)) is None:
                    raise
                status = found
            except CommitStatusTimeout as e:
                # Not committed at our peer within this send's wait: send it again at once, waiting longer next time.
                if time.monotonic() >= deadline:
                    raise self._unknown(prepared, e, deadline) from e
                self._again(prepared, e, deadline)
                if time.monotonic() - began < wait:  # answered before the wait was over: do not send in a loop
                    await asyncio.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
                    pause = min(pause * 2, 2.0)
                wait = min(wait * 2, ATTEMPT_S[1])
                continue
            except CommitUnknown as e:
                sent_before = True
                if (found := await self._looked_up(prepared, deadline)) is None:
                    if time.monotonic() + pause > deadline:
                        raise self._unknown(prepared, e, deadline) from e
                    self._again(prepared, e, deadline)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 2.0)
                    continue
                status = found
            if status.code == "DUPLICATE_TXID":  # a later copy's verdict: the ledger keeps the first copy's
                status = await self._looked_up(prepared, deadline) or status
            if not status.successful:
                raise CommitError(prepared.tx_id, status.code, status.block_number)
            return Sent(prepared.tx_id, tx.result, status.block_number)

    def _again(self, prepared: Prepared, cause: Exception, deadline: float) -> None:
        log.info("transaction not committed yet: sending it again", extra=self._where(prepared, cause, deadline))

    def _unknown(self, prepared: Prepared, cause: Exception, deadline: float) -> OutcomeUnknown:
        log.warning("transaction outcome unknown at its deadline", extra=self._where(prepared, cause, deadline))
        return OutcomeUnknown(prepared, cause)

    def _where(self, prepared: Prepared, cause: Exception, deadline: float) -> dict[str, object]:
        """What a log line of a send says: the transaction, how long it has been under way, and the last failure."""
        elapsed = round(self.deadline_s - (deadline - time.monotonic()), 1)
        return {
            "tx_id": prepared.tx_id,
            "channel": prepared.channel,
            "elapsed_s": elapsed,
            "cause": type(cause).__name__,
            "detail": str(cause)[:200],
        }

    @staticmethod
    def _within(deadline: float, limit: float) -> float:
        """A call's timeout: at most `limit`, never much past the deadline (a short call still goes out)."""
        return max(min(limit, deadline - time.monotonic()), 0.5)

    async def _looked_up(self, prepared: Prepared, deadline: float | None = None) -> CommitStatus | None:
        """The transaction's commit status by id when the peer knows it within a short wait, else None."""
        network = self.gateway.network(prepared.channel)
        timeout = LOOKUP_S if deadline is None else self._within(deadline, LOOKUP_S)
        try:
            return await network.commit_status(prepared.tx_id, timeout=timeout)
        except CommitUnknown:
            return None

    async def evaluate(self, channel: str, function: str, args: Sequence[str]) -> bytes:
        try:
            return await self.contract(channel).evaluate(function, args=args)
        except EvaluateError as e:
            raise (refusal(e.chaincode_messages) or e) from None

    async def wait_for_block(self, channel: str, block_number: int, orgs: Sequence[str]) -> None:
        await self.gateway.network(channel).wait_for_block(block_number, list(orgs))
