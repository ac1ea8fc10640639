"""Retrying transactions that lost a read-write race (MVCC / phantom read conflicts)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from gateway.fabric.errors import CommitFailed

T = TypeVar("T")

CONFLICT_CODES = frozenset({"MVCC_READ_CONFLICT", "PHANTOM_READ_CONFLICT"})


def retry_conflicts(attempt: Callable[[], T], attempts: int = 5, base_delay: float = 0.05) -> T:
    """Run `attempt` (which must build and submit a NEW transaction each call) until it is not a read conflict.

    Backoff is exponential with full jitter, so competing writers spread out instead of colliding again.
    """
    for n in range(attempts):
        try:
            return attempt()
        except CommitFailed as e:
            if e.code not in CONFLICT_CODES or n == attempts - 1:
                raise
            time.sleep(random.uniform(0, base_delay * 2**n))
    raise AssertionError("unreachable")
