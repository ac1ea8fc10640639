"""Claims filed together go in one transaction, and a patient is never in two batches in flight at once."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from ledger.claim_batches import ClaimBatches
from ledger.contracts import Committed
from ledger.transport import OnPrepared


class _Ledger:
    """Records each batch sent and which patients were in flight together; answers once `gate` opens."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.batches: list[list[str]] = []
        self.in_flight: list[set[str]] = []

    async def submit_claims(
        self, submissions: Sequence[Mapping[str, Any]], details: Mapping[str, Any], on_prepared: OnPrepared | None
    ) -> Committed:
        patients = {str(s["patient"]) for s in submissions}
        for others in self.in_flight:
            assert not patients & others, f"patients {patients & others} in two batches in flight"
        self.in_flight.append(patients)
        self.batches.append([str(s["claimId"]) for s in submissions])
        await self.gate.wait()
        self.in_flight.remove(patients)
        claims = [{"claimId": s["claimId"], "status": "submitted"} for s in submissions]
        return Committed(f"tx{len(self.batches)}", {"claims": claims}, len(self.batches))

    async def submit_claim_now(
        self, submission: Mapping[str, Any], detail: Mapping[str, Any], on_prepared: OnPrepared | None
    ) -> Committed:
        answer = await self.submit_claims([submission], {str(submission["claimId"]): detail}, on_prepared)
        return Committed(answer.tx_id, answer.result["claims"][0], answer.block_number)


def test_a_patients_next_claim_waits_for_the_batch_in_flight_and_every_claim_is_answered() -> None:
    async def until(condition: Any) -> None:
        while not condition():
            await asyncio.sleep(0.001)

    async def scenario() -> tuple[_Ledger, list[Committed]]:
        ledger = _Ledger()
        batches = ClaimBatches(ledger, window_s=0.01)  # type: ignore[arg-type]

        def file(claim: str, patient: str) -> asyncio.Task[Committed]:
            return asyncio.create_task(batches.submit({"claimId": claim, "patient": patient}, {}))

        filed = [file(f"c0-{p}", f"p{p}") for p in range(3)]
        await until(lambda: len(ledger.batches) == 1)  # the first wave is in flight
        filed += [file(f"c{wave}-{p}", f"p{p}") for wave in (1, 2, 3) for p in range(3)]  # the same patients again
        filed.append(file("other", "p9"))
        await until(lambda: len(ledger.batches) == 2)
        ledger.gate.set()
        return ledger, list(await asyncio.wait_for(asyncio.gather(*filed), 5))

    ledger, answers = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert sorted(a.result["claimId"] for a in answers) == sorted(
        [f"c{w}-{p}" for w in range(4) for p in range(3)] + ["other"]
    )
    assert sorted(c for b in ledger.batches for c in b) == sorted(a.result["claimId"] for a in answers)  # each once
    assert len(ledger.batches) < len(answers)  # batched, not one by one
    assert ledger.batches[1] == ["other"]  # another patient's claim did not wait behind the first wave


class _OneInsurerDown(_Ledger):
    """Endorsement of any transaction holding a claim for "down" fails as unavailable endorsers do (the pair's
    collection has no peers that can endorse yet)."""

    async def submit_claims(
        self, submissions: Sequence[Mapping[str, Any]], details: Mapping[str, Any], on_prepared: OnPrepared | None
    ) -> Committed:
        if any(s["insurer"] == "down" for s in submissions):
            self.batches.append([str(s["claimId"]) for s in submissions])
            raise ConnectionError("endorse failed: no combination of peers can endorse")
        return await super().submit_claims(submissions, details, on_prepared)


def test_a_batch_holds_one_insurers_claims_so_an_insurer_that_cannot_endorse_fails_only_its_own() -> None:
    async def scenario() -> list[Committed | BaseException]:
        ledger = _OneInsurerDown()
        ledger.gate.set()
        batches = ClaimBatches(ledger, window_s=0.05)  # type: ignore[arg-type]
        claims = [("a1", "p1", "up"), ("d1", "p2", "down"), ("a2", "p3", "up"), ("d2", "p4", "down")]
        claims.append(("a3", "p2", "up"))  # p2 is in the "down" batch: this one waits for it, then goes alone
        filed = [batches.submit({"claimId": c, "patient": p, "insurer": i}, {}) for c, p, i in claims]
        answers = await asyncio.gather(*filed, return_exceptions=True)
        assert ledger.batches[:2] == [["a1", "a2"], ["d1", "d2"]]
        assert ledger.batches[2:] == [["a3"]]
        return answers

    answers = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert [isinstance(a, ConnectionError) for a in answers] == [False, True, False, True, False]
    assert [a.result["claimId"] for a in answers if isinstance(a, Committed)] == ["a1", "a2", "a3"]


def test_the_window_grows_with_the_rate_claims_arrive_at_up_to_its_longest() -> None:
    batches = ClaimBatches(_Ledger(), window_s=0.1, busy_rate=40, max_window_s=0.4)  # type: ignore[arg-type]
    assert batches.window(at=1000.0) == 0.1  # idle: the shortest window
    for n in range(20):  # 20 claims in the first half of a second
        batches.rate.add(1000.0 + n / 40)
    assert batches.window(at=1000.5) == 0.1  # 20 a second: below the busy rate
    for n in range(60):  # 60 more in the second half
        batches.rate.add(1000.5 + n / 120)
    assert batches.window(at=1000.99) == pytest.approx(0.2)  # 80 a second: twice the busy rate, twice the window
    for n in range(200):  # 200 in the next second
        batches.rate.add(1001.0 + n / 200)
    assert batches.window(at=1001.999) == 0.4  # 200 a second: the longest window, never longer
    assert batches.window(at=1002.5) == pytest.approx(0.25)  # none since: half of the last second, 100 a second
    assert batches.window(at=1003.5) == 0.1  # quiet again


def test_a_caller_cancelled_while_its_batch_is_on_its_way_holds_up_nobody() -> None:
    async def scenario() -> None:
        ledger = _Ledger()
        batches = ClaimBatches(ledger, window_s=0.01)  # type: ignore[arg-type]
        filed = [asyncio.create_task(batches.submit({"claimId": c, "patient": c}, {})) for c in ("a", "b", "c")]
        while not ledger.batches:
            await asyncio.sleep(0.001)
        filed[0].cancel()
        await asyncio.sleep(0)
        filed[0].cancel()
        await asyncio.sleep(0.01)
        assert not filed[0].done()  # it waits for its claim's answer, which the batch shares
        ledger.gate.set()
        answers = await asyncio.wait_for(asyncio.gather(filed[1], filed[2]), 5)
        assert [a.result["claimId"] for a in answers] == ["b", "c"]
        with pytest.raises(asyncio.CancelledError):
            await filed[0]
        assert ledger.batches == [["a", "b", "c"]]

    asyncio.run(asyncio.wait_for(scenario(), 10))
