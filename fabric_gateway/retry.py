"""Retrying transactions that lost a read-write race (MVCC / phantom read conflicts)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fabric_gateway.errors import CommitFailed, EndorsementFailed, FabricError

T = TypeVar("T")

CONFLICT_CODES = frozenset({"MVCC_READ_CONFLICT", "PHANTOM_READ_CONFLICT"})


def is_read_race(err: FabricError) -> bool:
    """True when the transaction failed only because a concurrent write changed what it read.

    At commit that is an MVCC or phantom read conflict. At endorsement it shows as endorsers that returned different
    results ("ProposalResponsePayloads do not match"): one of them had already committed the competing write.
    """
    if isinstance(err, CommitFailed):
        return err.code in CONFLICT_CODES
    if isinstance(err, EndorsementFailed):
        return any("ProposalResponsePayloads do not match" in m for m in err.chaincode_messages)
    return False


def retry_conflicts(attempt: Callable[[], T], attempts: int = 5, base_delay: float = 0.05) -> T:
    """Run `attempt` (which must build and submit a NEW transaction each call) until it is not a read race.

    Backoff is exponential with full jitter, so competing writers spread out instead of colliding again.
    """
    for n in range(attempts):
        try:
            return attempt()
        except (CommitFailed, EndorsementFailed) as e:
            if not is_read_race(e) or n == attempts - 1:
                raise
            time.sleep(random.uniform(0, base_delay * 2**n))
    raise AssertionError("unreachable")


async def retry_conflicts_async(attempt: Callable[[], Awaitable[T]], attempts: int = 5, base_delay: float = 0.05) -> T:
    """`retry_conflicts` for coroutines."""
    for n in range(attempts):
        try:
            return await attempt()
        except (CommitFailed, EndorsementFailed) as e:
            if not is_read_race(e) or n == attempts - 1:
                raise
            await asyncio.sleep(random.uniform(0, base_delay * 2**n))
    raise AssertionError("unreachable")
