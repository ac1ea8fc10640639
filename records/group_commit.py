"""Writes that become final at the same moment, made final in one go.

The claims of one batch transaction commit on chain together, and each of their writes then commits its rows in the
store. One store transaction per claim queued them all on the store's single writer (and, in SQLite, on its lock);
one store transaction for all of them does the same work at once. `GroupCommit` gathers what is handed to it during
one turn of the event loop and does it in one call, in a thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from ledger.transport import in_thread, outcome_of

log = logging.getLogger("careledger.records")
T = TypeVar("T")


class GroupCommit(Generic[T]):
    """`await group(item)` returns once `work` has run over a list holding the item (and whatever else was handed in
    the same turn of the event loop), and raises what `work` raised for it. `work` must be safe to run again for an
    item: when a group fails, each of its items is done again on its own, so that one item's fault fails that item
    only. A caller cancelled meanwhile (however often) waits for its item to be done before it goes on, as
    `in_thread` does; the others of its group never wait on it. One event loop uses a group at a time."""

    def __init__(self, work: Callable[[list[T]], None]) -> None:
        self.work = work
        self._waiting: list[tuple[T, asyncio.Future[None]]] = []
        self._running: set[asyncio.Task[None]] = set()

    async def __call__(self, item: T) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._waiting.append((item, done))
        if len(self._waiting) == 1:  # the first of this turn: the group goes once the turn's callers have joined
            loop.call_soon(self._start)
        await outcome_of(done)

    def _start(self) -> None:
        group, self._waiting = self._waiting, []
        task = asyncio.ensure_future(self._run(group))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, group: list[tuple[T, asyncio.Future[None]]]) -> None:
        outcomes: list[BaseException | None] = [None] * len(group)
        try:
            try:
                await in_thread(self.work, [item for item, _ in group])
            except Exception as e:
                if len(group) == 1:
                    outcomes = [e]
                else:
                    log.warning("a group commit failed: each of its items again on its own", exc_info=True)
                    outcomes = [await self._alone(item) for item, _ in group]
        except BaseException as e:  # cancelled (the loop is closing): every caller hears it
            outcomes = [e] * len(group)
            raise
        finally:
            for (_, done), outcome in zip(group, outcomes, strict=True):
                if outcome is None:
                    done.set_result(None)
                else:
                    done.set_exception(outcome)

    async def _alone(self, item: T) -> Exception | None:
        try:
            await in_thread(self.work, [item])
        except Exception as e:
            return e
        return None
