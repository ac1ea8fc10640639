"""Claims a provider files at about the same time go to the ledger together: one Claims:SubmitBatch transaction
instead of one transaction per claim, while each caller still gets its own answer.

A batch is sent when its window has passed since its first claim, or when it holds `max_claims`. The window grows
with the rate claims arrive at: `window_s` up to `busy_rate` claims a second, in proportion above it, up to
`max_window_s`. A batch costs the peers, orderers, chaincode and the insurer's worker much the same whatever it
holds, so under load fuller batches save what more batches would spend: at 100 claims a second, a fixed 150 ms window
left the machine saturated and the queue growing, a 400 ms one took a tenth less CPU and kept up. A quiet gateway
keeps the short window, and its claims their short wait.

A batch holds the claims of one insurer: its endorsement needs the peers of the provider-insurer pair's private
collection, so an insurer whose peers cannot endorse yet (just after it joined, or while its peer is down) fails its
own claims only, never another insurer's that happened to arrive in the same window. A claim whose patient is in a
batch still on its way waits for the next one: the contract reads and writes a duplicate index per patient, so two
batches in flight with the same patient would have one fail on an MVCC read conflict at commit (and at many claims a
second, a retry would meet the next batch). The contract takes a batch all or nothing; so when it refuses one (a
duplicate, an invalid claim), each claim of it is submitted again on its own, and only the faulty one fails. The
signed batch transaction is given to every caller's `on_prepared`: each keeps it (made durable once for all, see
`ledger.transport.kept`), and settling any of them settles all (it commits once).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ledger.errors import LedgerRefused
from ledger.transport import OnPrepared, Prepared, kept, outcome_of

if TYPE_CHECKING:
    from ledger.contracts import Committed, Ledger


@dataclass
class _Filed:
    submission: Mapping[str, Any]
    detail: Mapping[str, Any]
    on_prepared: OnPrepared | None
    answer: asyncio.Future[Committed] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def _patient(filed: _Filed) -> str:
    return str(filed.submission.get("patient") or "")


def _insurer(filed: _Filed) -> str:
    return str(filed.submission.get("insurer") or "")


class FilingRate:
    """Claims filed per second in this process, over the last second (the current second's, and the share of the
    second before that the last second still covers)."""

    def __init__(self) -> None:
        self._second = 0
        self._now = 0
        self._before = 0

    def add(self, at: float) -> None:
        second = int(at)
        if second != self._second:
            self._before = self._now if second == self._second + 1 else 0
            self._second, self._now = second, 0
        self._now += 1

    def per_second(self, at: float) -> float:
        if int(at) != self._second:  # nothing filed yet this second: the last one's fades out
            return self._now * (1 - (at - int(at))) if int(at) == self._second + 1 else 0.0
        return self._before * (1 - (at - self._second)) + self._now


class ClaimBatches:
    def __init__(
        self,
        ledger: Ledger,
        window_s: float = 0.02,
        max_claims: int = 200,
        busy_rate: float = 40.0,
        max_window_s: float = 0.4,
    ) -> None:
        self.ledger = ledger
        self.window_s = window_s
        self.max_claims = max_claims
        self.busy_rate = busy_rate
        self.max_window_s = max(max_window_s, window_s)
        self.rate = FilingRate()
        self._waiting: list[_Filed] = []
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight: Counter[str] = Counter()  # patients of the batches sent and not answered yet

    async def submit(
        self, submission: Mapping[str, Any], detail: Mapping[str, Any], on_prepared: OnPrepared | None = None
    ) -> Committed:
        filed = _Filed(submission, detail, on_prepared)
        self._waiting.append(filed)
        self.rate.add(asyncio.get_running_loop().time())
        if len(self._waiting) >= self.max_claims:
            self._send_now()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.window(), self._send_now)
        return await outcome_of(filed.answer)  # the claim goes in its batch even if its caller is cancelled

    def window(self, at: float | None = None) -> float:
        """How long the next batch waits for more claims (at the event loop's time `at`, now by default): longer
        the busier this gateway is."""
        rate = self.rate.per_second(asyncio.get_running_loop().time() if at is None else at)
        return min(self.max_window_s, self.window_s * max(1.0, rate / self.busy_rate))

    def _send_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for batch in self._ready_batches():
            sent = {id(f) for f in batch}
            self._waiting = [f for f in self._waiting if id(f) not in sent]
            asyncio.get_running_loop().create_task(self._in_turn(batch))

    def _ready_batches(self) -> list[list[_Filed]]:
        """The waiting claims that can go now, one batch per insurer, in the order they were filed. A patient goes in
        one batch only (the first insurer's that takes it), and not at all while a batch with it is in flight."""
        batches: dict[str, list[_Filed]] = {}
        taken_by: dict[str, str] = {}  # patient -> the insurer whose batch holds it in this round
        for f in self._waiting:
            patient, insurer = _patient(f), _insurer(f)
            if self._in_flight[patient] or taken_by.setdefault(patient, insurer) != insurer:
                continue
            batch = batches.setdefault(insurer, [])
            if len(batch) < self.max_claims:
                batch.append(f)
        return list(batches.values())

    async def _in_turn(self, batch: list[_Filed]) -> None:
        """Send the batch, its patients marked in flight until it is answered; then whatever waited for them."""
        patients = {_patient(f) for f in batch}
        self._in_flight.update(patients)
        try:
            await self._send(batch)
        finally:
            self._in_flight.subtract(patients)
            self._in_flight += Counter()  # drop the patients no batch holds any more
            if self._waiting and self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self.window(), self._send_now)

    async def _send(self, batch: list[_Filed]) -> None:
        if len(batch) == 1:
            return await self._alone(batch[0])

        def keep_everywhere(prepared: Prepared) -> None:
            kept(prepared, *(f.on_prepared for f in batch))

        submissions = [f.submission for f in batch]
        details = {str(f.submission["claimId"]): f.detail for f in batch}
        try:
            committed = await self.ledger.submit_claims(submissions, details, keep_everywhere)
        except LedgerRefused:  # one of them is at fault: find out which by submitting each on its own
            await asyncio.gather(*(self._alone(f) for f in batch))
            return
        except BaseException as e:
            for f in batch:
                f.answer.set_exception(e)
            return
        claims = {c["claimId"]: c for c in committed.result["claims"]}
        for f in batch:
            f.answer.set_result(replace(committed, result=claims[f.submission["claimId"]]))

    async def _alone(self, filed: _Filed) -> None:
        try:
            filed.answer.set_result(
                await self.ledger.submit_claim_now(filed.submission, filed.detail, filed.on_prepared)
            )
        except BaseException as e:
            filed.answer.set_exception(e)
