"""Writes handed in during one turn of the event loop are done in one call; each caller gets its group's outcome."""

from __future__ import annotations

import asyncio
import threading

import pytest

from records.group_commit import GroupCommit


def test_items_handed_in_together_are_done_in_one_call_and_later_ones_in_the_next() -> None:
    calls: list[list[int]] = []

    async def scenario() -> None:
        group = GroupCommit(calls.append)
        await asyncio.gather(*(group(i) for i in range(5)))
        await group(5)

    asyncio.run(scenario())
    assert calls == [[0, 1, 2, 3, 4], [5]]


def test_every_caller_of_a_failed_group_gets_its_error() -> None:
    def failing(items: list[str]) -> None:
        raise RuntimeError(f"store down ({len(items)})")

    async def scenario() -> list[BaseException | None]:
        group = GroupCommit(failing)
        return list(await asyncio.gather(group("a"), group("b"), return_exceptions=True))

    answers = asyncio.run(scenario())
    assert [str(a) for a in answers] == ["store down (2)", "store down (2)"]


def test_a_cancelled_caller_waits_for_its_item_to_be_done() -> None:
    release = threading.Event()
    done: list[str] = []

    def slow(items: list[str]) -> None:
        release.wait(5)
        done.extend(items)

    async def scenario() -> None:
        group = GroupCommit(slow)
        caller = asyncio.create_task(group("x"))
        await asyncio.sleep(0.05)
        caller.cancel()
        await asyncio.sleep(0.05)
        assert not caller.done()  # still waiting for the work in its thread
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert done == ["x"]

    asyncio.run(asyncio.wait_for(scenario(), 10))
