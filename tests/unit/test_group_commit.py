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


def test_a_failed_group_does_each_item_again_alone_so_only_the_faulty_one_fails() -> None:
    calls: list[list[str]] = []

    def failing_on_b(items: list[str]) -> None:
        calls.append(items)
        if "b" in items:
            raise RuntimeError("b cannot be committed")

    async def scenario() -> list[BaseException | None]:
        group = GroupCommit(failing_on_b)
        return list(await asyncio.gather(group("a"), group("b"), group("c"), return_exceptions=True))

    answers = asyncio.run(scenario())
    assert answers[0] is None and answers[2] is None
    assert str(answers[1]) == "b cannot be committed"
    assert calls == [["a", "b", "c"], ["a"], ["b"], ["c"]]


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


def test_a_caller_cancelled_twice_holds_up_nobody() -> None:
    release = threading.Event()

    def slow(items: list[str]) -> None:
        release.wait(5)

    async def scenario() -> None:
        group = GroupCommit(slow)
        a, b, c = (asyncio.create_task(group(x)) for x in "abc")
        await asyncio.sleep(0.05)  # the group's work is running in its thread
        a.cancel()
        await asyncio.sleep(0)
        a.cancel()  # again, as a cancel scope delivers it
        release.set()
        await asyncio.wait_for(asyncio.gather(b, c), 5)  # the others are answered
        with pytest.raises(asyncio.CancelledError):
            await a

    asyncio.run(asyncio.wait_for(scenario(), 10))
