"""Writes that become final at the same moment, made final in one go.

The claims of one batch transaction commit on chain together, and each of their writes then commits its rows in the
store. One store transaction per claim queued them all on the store's single writer (and, in SQLite, on its lock);
one store transaction for all of them does the same work at once. `GroupCommit` gathers what is handed to it during
one turn of the event loop and does it in one call, in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Generic, TypeVar

from ledger.transport import in_thread

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """`await group(item)` returns once `work` has run over a list holding the item (and whatever else was handed in
    the same turn of the event loop), and raises what `work` raised. A caller cancelled meanwhile waits for its
    group's work to finish before it goes on, as `in_thread` does: its item is done all the same."""

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
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await done
            raise

    def _start(self) -> None:
        group, self._waiting = self._waiting, []
        task = asyncio.ensure_future(self._run(group))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, group: list[tuple[T, asyncio.Future[None]]]) -> None:
        try:
            await in_thread(self.work, [item for item, _ in group])
        except Exception as e:
            for _, done in group:
                done.set_exception(e)
        except BaseException:
            for _, done in group:
                done.cancel()
            raise
        else:
            for _, done in group:
                done.set_result(None)
