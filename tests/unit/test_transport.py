"""FabricTransport over the fake Gateway: a transaction whose outcome is unknown is looked up and sent again, the
same signed bytes, and no wait for its commit outlasts one attempt or the transport's deadline."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from fabric_gateway import AsyncGateway
from ledger import transport as tr
from ledger.transport import FabricTransport, OutcomeUnknown
from tests.unit.fake_gateway import AsyncFakeGateway, FakeGateway


class Recording(AsyncFakeGateway):
    """The async fake, noting the deadline of every commit status call; `lose_first` submits are accepted and then
    lost, as by a Raft leader killed right after it took them."""

    def __init__(self, fake: FakeGateway, lose_first: int) -> None:
        super().__init__(fake)
        self.status_timeouts: list[float | None] = []
        self.lose_first = lose_first

    async def Submit(self, request: Any, timeout: float | None = None) -> Any:
        self.fake.orders = len(self.fake.submitted) >= self.lose_first
        return await super().Submit(request, timeout)

    async def CommitStatus(self, request: Any, timeout: float | None = None) -> Any:
        self.status_timeouts.append(timeout)
        return await super().CommitStatus(request, timeout)


def test_a_transaction_an_orderer_lost_is_sent_again_after_one_bounded_wait() -> None:
    fake = FakeGateway()
    stub = Recording(fake, lose_first=1)

    async def scenario() -> tr.Sent:
        transport = FabricTransport(AsyncGateway(stub, fake.identity, fake.signer()), deadline_s=15.0)
        return await transport.submit("claims", "Probe:Write", ["k", "v"])

    sent = asyncio.run(scenario())
    assert len(fake.submitted) == 2
    assert fake.submitted[0].SerializeToString() == fake.submitted[1].SerializeToString()  # the same signed bytes
    assert fake.committed == {sent.tx_id: ("VALID", 1)}
    # The first wait for the commit was one attempt's, not the commit status call's default (a minute).
    assert stub.status_timeouts[0] is not None and stub.status_timeouts[0] <= tr.ATTEMPT_S[0]


def test_no_wait_outlasts_the_deadline_and_the_signed_transaction_is_handed_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeGateway()
    stub = Recording(fake, lose_first=10**6)  # no orderer ever orders it
    monkeypatch.setattr(tr, "ATTEMPT_S", (0.3, 0.6))

    async def scenario() -> None:
        transport = FabricTransport(AsyncGateway(stub, fake.identity, fake.signer()), deadline_s=2.0)
        await transport.submit("claims", "Probe:Write", ["k", "v"])

    began = time.monotonic()
    with pytest.raises(OutcomeUnknown) as raised:
        asyncio.run(scenario())
    assert time.monotonic() - began < 4.0
    assert raised.value.prepared.tx_id == fake.calls[-1].tx_id
    assert 2 <= len(fake.submitted) < 20  # sent again, not in a tight loop
    assert {r.SerializeToString() for r in fake.submitted} == {fake.submitted[0].SerializeToString()}
    assert all(t is not None and t <= 3.0 for t in stub.status_timeouts)


def test_a_transaction_kept_by_many_is_made_durable_once_by_each_distinct_keeper_after_all_of_them() -> None:
    prepared = tr.Prepared("claims", "t1", b"signed")
    done: list[str] = []

    def syncing(name: str) -> tr.OnPrepared:
        def keep(p: tr.Prepared) -> Any:
            assert p == prepared and not any(d.startswith("sync") for d in done)  # every save before any sync
            done.append(f"save {name}")
            return done_syncing

        return keep

    def done_syncing() -> None:
        done.append("sync")

    def plain(p: tr.Prepared) -> None:
        done.append("plain")

    tr.kept(prepared, syncing("a"), None, plain, syncing("b"))
    assert done == ["save a", "plain", "save b", "sync"]
