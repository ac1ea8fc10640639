"""Retrying transactions that did not commit for a reason that passes: a lost read-write race (MVCC / phantom read
conflicts), or endorsers that were briefly unavailable.

Such a transaction did not commit (`NotCommitted`), so the retry builds and submits a NEW one: `attempt` must make a
new proposal each call. For an unknown outcome (`CommitUnknown`) do not retry this way: look the transaction up, or
send the same signed transaction again.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fabric_gateway.errors import CommitError, EndorseError, FabricError, GatewayError

T = TypeVar("T")

CONFLICT_CODES = frozenset({"MVCC_READ_CONFLICT", "PHANTOM_READ_CONFLICT"})


def is_read_race(err: FabricError) -> bool:
    """True when the transaction failed only because a concurrent write changed what it read.

    At commit that is an MVCC or phantom read conflict. At endorsement it shows as endorsers that returned different
    results ("ProposalResponsePayloads do not match"): one of them had already committed the competing write.
    """
    if isinstance(err, CommitError):
        return err.code in CONFLICT_CODES
    if isinstance(err, EndorseError):
        return any("ProposalResponsePayloads do not match" in m for m in err.chaincode_messages)
    return False


# What endorsing peers answer when they cannot reach another peer or the chaincode server (Fabric's own wording:
# core/chaincode; the next three when the chaincode server dies during the call, its stream ending or never answering),
# or when a new chaincode definition was committed while they ran the call (their cache caught up mid-call).
_UNREACHABLE = re.compile(
    r"code = Unavailable|could not launch chaincode|connection refused"
    r"|chaincode stream terminated|timeout expired while executing transaction|\] error sending"
    r"|chaincode definition for '[^']*' changed during invoke",
    re.IGNORECASE,
)
# How long an endorsement that met unavailable endorsers is tried again before giving up. A member's peer restarted
# with new keys (a certificate renewal) is a new gossip member: the other orgs' peers list it for endorsement only
# once its alive messages (every 5 s) have reached them, which took more than 6 s for one of them under load.
UNAVAILABLE_RETRY_S = 20.0


def is_unavailable(err: GatewayError) -> bool:
    """The ledger could not run the call because something it needs is down or not ready, not because of the call:
    no set of live peers meets the endorsement policy (a member's peer is down, or discovery does not yet see the
    chaincode on a new member's peer just after a chaincode definition changed), or a peer could not reach another
    peer or the chaincode server. Nothing was written, and the same request succeeds once they are back."""
    if err.stage == "endorse" and err.code == "FAILED_PRECONDITION":  # no combination of peers meets the policy
        return True
    return any(_UNREACHABLE.search(d.message) for d in err.details)


def _backoff(err: CommitError | EndorseError, attempt: int, attempts: int, base_delay: float) -> float:
    """How long to wait before the next attempt; re-raises `err` when it is not a read race or attempts are used up.
    Exponential with full jitter, so competing writers spread out instead of colliding again."""
    if not is_read_race(err) or attempt == attempts - 1:
        raise err
    return random.uniform(0, base_delay * 2**attempt)


def retry_conflicts(attempt: Callable[[], T], attempts: int = 5, base_delay: float = 0.05) -> T:
    """Run `attempt` (which must build and submit a NEW transaction each call) until it is not a read race."""
    for n in range(attempts):
        try:
            return attempt()
        except (CommitError, EndorseError) as e:
            time.sleep(_backoff(e, n, attempts, base_delay))
    raise AssertionError("unreachable")


async def retry_conflicts_async(attempt: Callable[[], Awaitable[T]], attempts: int = 5, base_delay: float = 0.05) -> T:
    """`retry_conflicts` for coroutines."""
    for n in range(attempts):
        try:
            return await attempt()
        except (CommitError, EndorseError) as e:
            await asyncio.sleep(_backoff(e, n, attempts, base_delay))
    raise AssertionError("unreachable")


async def retry_unavailable_async(attempt: Callable[[], Awaitable[T]], within_s: float = UNAVAILABLE_RETRY_S) -> T:
    """Run `attempt` (which must build a NEW proposal each call) again while its endorsement meets unavailable
    endorsers (`is_unavailable`), for at most `within_s`; then the last error is raised. A peer that restarts, or
    discovery that lags a chaincode definition by a gossip round, is ridden out instead of failing the request."""
    deadline = time.monotonic() + within_s
    pause = 0.2
    while True:
        try:
            return await attempt()
        except EndorseError as e:
            left = deadline - time.monotonic()
            if not is_unavailable(e) or left <= 0:
                raise
        await asyncio.sleep(min(pause, left))  # the last try at the deadline itself, not a pause before it
        pause = min(pause * 2, 2.0)
