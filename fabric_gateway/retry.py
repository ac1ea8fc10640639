"""Retrying transactions that lost a read-write race (MVCC / phantom read conflicts).

Such a transaction did not commit (`NotCommitted`), so the retry builds and submits a NEW one: `attempt` must make a
new proposal each call. For an unknown outcome (`CommitUnknown`) do not retry this way: look the transaction up, or
send the same signed transaction again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fabric_gateway.errors import CommitError, EndorseError, FabricError

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
