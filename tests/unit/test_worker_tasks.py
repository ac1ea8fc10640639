"""The insurer's tasks over the in-memory ledger and a real Redis: adjudication and payment, each idempotent, and
what they keep goes through the records service like every other write."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from consortium import topology as topo
from fabric_gateway import BlockWaitTimeout, CommitStatusUnavailable
from fabric_gateway.checkpoint import Checkpoint, RedisCheckpointer
from ledger.claim_batches import ClaimBatches
from ledger.contracts import Ledger
from ledger.errors import LedgerConflict, LedgerForbidden, LedgerInvalid, LedgerNotFound
from ledger.fake import FakeLedger
from records import synthetic
from records import validation as fv
from records.errors import StillPending
from records.fhir_claim import claim_response_id
from records.service import Custodian, Records
from records.store import Store
from tests import fhir_samples as fhir
from tests.unit.conftest import free_port
from workers import adjudication, context, outbox, remittance, rules, schedule, tasks
from workers import app as app_module
from workers.adjudication import NotYetAvailable
from workers.settings import WorkerSettings

KINDS = {"HospitalMSP": "provider", "ClinicMSP": "provider", "InsurerMSP": "insurer"}
CARC = "https://x12.org/codes/claim-adjustment-reason-codes"
RARC = "https://x12.org/codes/remittance-advice-remark-codes"
MPI = "MPI-55501-TT"


def records_of(world: FakeLedger, tmp_path: Path, msp: str) -> Records:
    store = Store(tmp_path / f"{msp}.sqlite", msp.encode().ljust(32, b"k"))
    return Records(store, Ledger(world.member(msp)), fhir.CONSORTIUM_KEY, fhir.MPI_SYSTEM, Custodian(msp, KINDS[msp]))


@pytest.fixture
def insurer(redis_topology: topo.Topology, tmp_path: Path) -> Iterator[tuple[FakeLedger, Records, context.OrgContext]]:
    world = FakeLedger(KINDS)
    records = records_of(world, tmp_path, "InsurerMSP")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    redis.Redis.from_url(redis_topology.redis_admin_url).flushall()  # each test starts with the insurer's memory empty
    r = redis.Redis.from_url(redis_topology.redis_url_for("InsurerOrg"))
    ctx = context.OrgContext(
        WorkerSettings.load(redis_topology, "InsurerOrg"), records, r, httpx.Client(), httpx.Client(), loop
    )
    context._context = ctx
    yield world, records, ctx
    context._context = None
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    records.store.close()


def submit_claim(world: FakeLedger, tmp_path: Path, lines: list[tuple[str, int, str]]) -> dict[str, Any]:
    """The hospital files a claim; returns the summary the Submitted event carries."""
    hospital = records_of(world, tmp_path, "HospitalMSP")

    async def go() -> str:
        patient = {**fhir.PATIENTS[0], "id": "p1", "identifier": [{"system": fhir.MPI_SYSTEM, "value": MPI}]}
        put = fv.entry({"resource": patient, "request": {"method": "PUT", "url": "Patient/p1"}}, 0)
        await hospital.transaction([put])
        claim = synthetic.claim("p1", "InsurerMSP", lines, "2026-11-02", "Coverage/c1")
        (w,) = await hospital.transaction(
            [fv.entry({"resource": claim, "request": {"method": "POST", "url": "Claim"}}, 0)]
        )
        return hospital.store.ledger_key("Claim", w.id)

    claim_id = asyncio.run(go())
    hospital.store.close()
    return next(p for _, _, name, p in world.events if name == "Claims.Submitted" and p["claimId"] == claim_id)


@contextlib.contextmanager
def hospital_worker(
    redis_topology: topo.Topology, hospital: Records, members: httpx.Client
) -> Iterator[asyncio.AbstractEventLoop]:
    """The hospital's worker context over these records, asking other members through `members`; its loop."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    r = redis.Redis.from_url(redis_topology.redis_url_for("HospitalOrg"))
    settings = WorkerSettings.load(redis_topology, "HospitalOrg")
    context._context = context.OrgContext(settings, hospital, r, members, httpx.Client(), loop)
    try:
        yield loop
    finally:
        context._context = None
        loop.call_soon_threadsafe(loop.stop)
        hospital.store.close()


def cover(ctx: context.OrgContext) -> None:
    coverage = {**synthetic.coverage(MPI, "InsurerMSP", "2026-01-01", "2026-12-31"), "id": "c1"}
    patient = ctx.records.pseudonym_of_identifier(fhir.MPI_SYSTEM, MPI)
    ctx.run(ctx.records.keep(coverage, patient))


def adjudications(world: FakeLedger, claim_id: str) -> int:
    return sum(1 for _, _, name, p in world.events if name == "Claims.Adjudicated" and p["claimId"] == claim_id)


def test_a_covered_claim_is_adjudicated_once_and_paid_once(insurer: Any, tmp_path: Path) -> None:
    world, records, ctx = insurer
    ctx.settings = replace(ctx.settings, remittance=replace(ctx.settings.remittance, mode="per-claim"))
    cover(ctx)
    claim = submit_claim(world, tmp_path, [("99213", 1, "100.00")])
    assert tasks.adjudicate.apply(args=[claim]).get() == "approved"
    assert tasks.adjudicate.apply(args=[claim]).get() == "approved"  # a redelivery: the chain already has it
    assert adjudications(world, claim["claimId"]) == 1
    response = json.loads(records.read("ClaimResponse", claim_response_id(claim["claimId"])).content)
    assert response["outcome"] == "complete" and response["meta"]["versionId"] == "1"
    adjudicated = next(p for _, _, n, p in world.events if n == "Claims.Adjudicated")
    ref = tasks.pay.apply(args=[adjudicated]).get()
    tasks.pay.apply(args=[adjudicated]).get()
    paid = [p for _, _, n, p in world.events if n == "Claims.Paid"]
    assert [p["paymentRef"] for p in paid] == [ref]
    payment = json.loads(records.read("PaymentReconciliation", claim["claimId"]).content)
    assert payment["paymentAmount"]["value"] == 100.0


def test_a_claim_without_coverage_is_denied_with_carc_31(insurer: Any, tmp_path: Path) -> None:
    world, records, _ = insurer
    claim = submit_claim(world, tmp_path, [("99213", 1, "100.00")])
    assert tasks.adjudicate.apply(args=[claim]).get() == "denied"
    response = json.loads(records.read("ClaimResponse", claim_response_id(claim["claimId"])).content)
    reasons = response["item"][0]["adjudication"][1]["reason"]["coding"]
    assert [c["code"] for c in reasons] == ["31"]


def test_every_adjudicated_claim_gets_an_explanation_of_benefit(insurer: Any, tmp_path: Path) -> None:
    world, records, ctx = insurer
    cover(ctx)
    claim = submit_claim(world, tmp_path, [("99213", 1, "100.00"), ("85025", 2, "15.00")])
    assert tasks.adjudicate.apply(args=[claim]).get() == "approved"
    eob = json.loads(records.read("ExplanationOfBenefit", claim_response_id(claim["claimId"])).content)
    fv.validate_resource(eob, "ExplanationOfBenefit")  # valid R4
    assert eob["claim"]["identifier"]["value"] == claim["claimId"]
    assert eob["patient"]["identifier"]["value"] == claim["patient"]
    assert eob["insurance"] == [{"focal": True, "coverage": {"reference": "Coverage/c1"}}]
    assert [(i["productOrService"]["coding"][0]["code"], i["net"]["value"]) for i in eob["item"]] == [
        ("99213", 100.0),
        ("85025", 30.0),
    ]
    assert [t["amount"]["value"] for t in eob["total"]] == [130.0, 130.0]
    assert eob["payment"]["amount"]["value"] == 130.0
    assert not records.store.pending_batches()  # kept at the insurer, registered nowhere


def test_claims_filed_together_are_adjudicated_together_and_paid_in_one_remittance(
    insurer: Any, tmp_path: Path
) -> None:
    world, records, ctx = insurer
    cover(ctx)
    hospital = records_of(world, tmp_path, "HospitalMSP")
    hospital.ledger.claim_batches = ClaimBatches(hospital.ledger, window_s=0.05)

    async def file_five() -> list[str]:
        patient = {**fhir.PATIENTS[0], "id": "p1", "identifier": [{"system": fhir.MPI_SYSTEM, "value": MPI}]}
        await hospital.transaction(
            [fv.entry({"resource": patient, "request": {"method": "PUT", "url": "Patient/p1"}}, 0)]
        )
        claims = [
            synthetic.claim("p1", "InsurerMSP", [(code, 1, "50.00")], "2026-11-02", "Coverage/c1")
            for code in ("99213", "85025", "80053", "71046", "99214")
        ]
        entries = [fv.entry({"resource": c, "request": {"method": "POST", "url": "Claim"}}, 0) for c in claims]
        written = await asyncio.gather(*(hospital.transaction([e]) for e in entries))
        return [w.id for (w,) in written]

    asyncio.run(file_five())
    hospital.store.close()
    (batch,) = [p for _, _, name, p in world.events if name == "Claims.SubmittedBatch"]  # one transaction, 5 claims
    assert len(batch["claims"]) == 5
    outcomes = tasks.adjudicate_batch.apply(args=[batch["claims"]]).get()
    assert sorted(outcomes.values()) == ["approved"] * 3 + ["partial"] * 2  # 85025 and 80053 above the fee schedule
    assert tasks.adjudicate_batch.apply(args=[batch["claims"]]).get() == outcomes  # a rerun changes nothing
    assert [n for _, _, n, _ in world.events].count("Claims.AdjudicatedBatch") == 1
    (adjudicated,) = [p for _, _, name, p in world.events if name == "Claims.AdjudicatedBatch"]
    assert tasks.pay_many.apply(args=[adjudicated["claims"]]).get() == "5 queued for the next remittance"
    assert ctx.settings.remittance.cycle_seconds == 2
    (ref,) = tasks.remit.apply().get()  # the next cycle pays them, however short a time they were queued
    assert tasks.remit.apply().get() == []  # nothing left to pay
    # A repeat of the block's payment task after the payment (a replay) queues them again, unread: the next
    # remittance asks to pay the same claims under the same reference, the contract answers with the payment it
    # recorded, and they leave the queue, paid once.
    tasks.pay_many.apply(args=[adjudicated["claims"]]).get()
    assert tasks.remit.apply().get() == [ref]
    assert [n for _, _, n, _ in world.events].count("Claims.PaidBatch") == 1
    assert ctx.redis.zcard(ctx.settings.keys.to_pay("HospitalMSP")) == 0
    (payment,) = [p for _, _, name, p in world.events if name == "Claims.PaidBatch"]
    assert payment["paymentRef"] == ref and len(payment["lines"]) == 5
    reconciliation = json.loads(records.read("PaymentReconciliation", ref).content)
    assert len(reconciliation["detail"]) == 5
    assert sum(d["amount"]["value"] for d in reconciliation["detail"]) == reconciliation["paymentAmount"]["value"]


def test_prior_authorisations_filed_together_are_decided_in_one_transaction(insurer: Any, tmp_path: Path) -> None:
    world, records, ctx = insurer
    cover(ctx)
    hospital = records_of(world, tmp_path, "HospitalMSP")
    hospital.ledger.claim_batches = ClaimBatches(hospital.ledger, window_s=0.05)

    async def file_together() -> None:
        patient = {**fhir.PATIENTS[0], "id": "p1", "identifier": [{"system": fhir.MPI_SYSTEM, "value": MPI}]}
        await hospital.transaction(
            [fv.entry({"resource": patient, "request": {"method": "PUT", "url": "Patient/p1"}}, 0)]
        )
        requests = [  # approved by the rules, pended for a person, denied with its reason; and a claim
            synthetic.claim("p1", "InsurerMSP", [(code, 1, "900.00")], "2026-11-02", "Coverage/c1")
            | {"use": "preauthorization"}
            for code in ("70553", "27447", "S9987")
        ] + [synthetic.claim("p1", "InsurerMSP", [("99213", 1, "50.00")], "2026-11-02", "Coverage/c1")]
        entries = [fv.entry({"resource": c, "request": {"method": "POST", "url": "Claim"}}, 0) for c in requests]
        await asyncio.gather(*(hospital.transaction([e]) for e in entries))

    asyncio.run(file_together())
    hospital.store.close()
    (batch,) = [p for _, _, name, p in world.events if name == "Claims.SubmittedBatch"]  # one transaction, 4 claims
    requests = [c for c in batch["claims"] if c.get("use") == "preauthorization"]
    assert len(requests) == 3 and len(batch["claims"]) == 4
    codes = {c["claimId"]: world.state[f"lines/{c['claimId']}"]["lines"][0]["code"] for c in requests}
    calls = counted(world, "Claims:LinesBatch", "Claims:DecidePreauthBatch", "Claims:DecidePreauth")
    states = tasks.decide_preauth_batch.apply(args=[requests]).get()
    assert {codes[cid]: state for cid, state in states.items()} == {
        "70553": "approved",
        "27447": "pended",
        "S9987": "denied",
    }
    assert calls == {"Claims:LinesBatch": 1, "Claims:DecidePreauthBatch": 1, "Claims:DecidePreauth": 0}
    # A rerun (a redelivery, a replayed block) records nothing: the pended request, decidable again by a person, is
    # not pended a second time, because the decision names the decisions it saw.
    assert tasks.decide_preauth_batch.apply(args=[requests]).get() == states
    assert [n for _, _, n, _ in world.events].count("Claims.PreauthDecidedBatch") == 1
    assert all(len(world.state[f"claim/{cid}"]["decisions"]) == 1 for cid in codes)
    for cid, state in states.items():
        response = json.loads(records.read("ClaimResponse", cid).content)
        assert response["outcome"] == ("queued" if state == "pended" else "complete")
        assert bool(response.get("preAuthRef")) is (state == "approved")


def test_a_prior_authorisation_batch_answers_the_others_then_fails_on_a_refusal_it_did_not_expect(
    insurer: Any, tmp_path: Path
) -> None:
    world, records, ctx = insurer
    cover(ctx)
    claims = [submit_claim(world, tmp_path, [(code, 1, "900.00")]) for code in ("70553", "72148")]
    for c in claims:
        world.state[f"claim/{c['claimId']}"] |= {"use": "preauthorization"}
    odd, fine = sorted(claims, key=lambda c: str(c["claimId"]))  # the refused one comes first in the results
    decide_batch = world.handlers["Claims:DecidePreauthBatch"]

    def refusing_the_first(call: Any) -> Any:
        out = decide_batch(call)
        first = {"claimId": odd["claimId"], "status": "refused", "code": "FORBIDDEN", "message": "not yours"}
        return {**out, "results": [first, *(r for r in out["results"] if r["claimId"] != odd["claimId"])]}

    world.handlers["Claims:DecidePreauthBatch"] = refusing_the_first
    with pytest.raises(LedgerForbidden):
        tasks.decide_preauth_batch.apply(args=[[c | {"use": "preauthorization"} for c in claims]]).get()
    kept = json.loads(records.read("ClaimResponse", fine["claimId"]).content)  # the other one is answered
    assert kept["outcome"] == "complete" and kept["preAuthRef"]


def counted(world: FakeLedger, *functions: str) -> dict[str, int]:
    """Count the calls of these contract functions from now on."""
    calls = dict.fromkeys(functions, 0)
    for function in functions:
        handler = world.handlers[function]

        def counting(call: Any, function: str = function, handler: Any = handler) -> Any:
            calls[function] += 1
            return handler(call)

        world.handlers[function] = counting
    return calls


def purge_lines(world: FakeLedger, claim_id: str) -> None:
    """What a purge leaves on the insurer's peer: the claim marked, its private lines gone."""
    world.state[f"claim/{claim_id}"] = {**world.state[f"claim/{claim_id}"], "linesPurged": True}
    del world.state[f"lines/{claim_id}"]


def test_a_batch_reads_every_claims_lines_in_one_read(insurer: Any, tmp_path: Path) -> None:
    """The claims of a batch have their lines read in one Claims:LinesBatch, never one Claims:Lines each; a claim
    whose lines are purged is answered with the word a single read gives, and the others are adjudicated."""
    world, _, ctx = insurer
    cover(ctx)
    claims = [
        submit_claim(world, tmp_path, [(code, 1, price)])
        for code, price in (("99213", "100.00"), ("85025", "20.00"), ("71046", "80.00"))
    ]
    purge_lines(world, claims[1]["claimId"])
    calls = counted(world, "Claims:Lines", "Claims:LinesBatch")
    outcomes = tasks.adjudicate_batch.apply(args=[claims]).get()
    assert outcomes == {
        claims[0]["claimId"]: "approved",
        claims[1]["claimId"]: "its lines are purged",
        claims[2]["claimId"]: "approved",
    }
    assert calls == {"Claims:Lines": 0, "Claims:LinesBatch": 1}
    (batch,) = [p for _, _, name, p in world.events if name == "Claims.AdjudicatedBatch"]
    assert {c["claimId"] for c in batch["claims"]} == {claims[0]["claimId"], claims[2]["claimId"]}


def test_a_batch_with_a_claim_not_on_the_peer_yet_is_tried_again_whole(insurer: Any, tmp_path: Path) -> None:
    """One claim's lines not on the insurer's peer yet: the batch waits (NotYetAvailable, as the claim's own read
    would raise) and records nothing; once the lines are there, the whole batch is adjudicated."""
    world, _, ctx = insurer
    cover(ctx)
    claims = [submit_claim(world, tmp_path, [(code, 1, "20.00")]) for code in ("85025", "80053")]
    late = world.state.pop(f"lines/{claims[1]['claimId']}")
    with pytest.raises(NotYetAvailable, match="has no lines on this peer"):
        adjudication.adjudicate_batch(ctx, claims)
    assert not [name for _, _, name, _ in world.events if name.startswith("Claims.Adjudicated")]
    world.state[f"lines/{claims[1]['claimId']}"] = late
    assert set(adjudication.adjudicate_batch(ctx, claims).values()) == {"approved"}


def unknown(world: FakeLedger, claim_id: str) -> None:
    del world.state[f"claim/{claim_id}"]


def not_on_this_peer(world: FakeLedger, claim_id: str) -> None:
    del world.state[f"lines/{claim_id}"]


def another_insurers(world: FakeLedger, claim_id: str) -> None:
    world.state[f"claim/{claim_id}"] = {**world.state[f"claim/{claim_id}"], "insurer": "ClinicMSP"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (None, "lines 99213"),
        (purge_lines, "its lines are purged"),
        (not_on_this_peer, "NotYetAvailable: claim {id} has no lines on this peer"),
        (unknown, "NotYetAvailable: claim {id} does not exist"),
        (another_insurers, "LedgerForbidden: InsurerMSP is not a party to claim {id}"),
    ],
)
def test_a_batch_read_gives_each_claim_what_its_own_read_gives(
    insurer: Any, tmp_path: Path, change: Any, expected: str
) -> None:
    """load_lines_batch maps each result's code and message to what load_lines makes of the same claim's own
    Claims:Lines: its lines, the same word, or the same exception with the same message."""
    world, _, ctx = insurer
    claim = submit_claim(world, tmp_path, [("99213", 1, "100.00")])
    if change is not None:
        change(world, claim["claimId"])

    def outcome(load: Any) -> str:
        try:
            found = load()
        except Exception as e:
            return f"{type(e).__name__}: {e}"
        if isinstance(found, str):
            return found
        return "lines " + " ".join(line["code"] for line in found.lines)

    single = outcome(lambda: adjudication.load_lines(ctx, claim))
    batch = outcome(lambda: adjudication.load_lines_batch(ctx, [claim])[0])
    assert single == expected.format(id=claim["claimId"])
    assert batch == single


def test_a_batch_read_keeps_each_claims_detail(insurer: Any, tmp_path: Path) -> None:
    """Read together, each claim gets its own coverage, edits and duplicate mark, in the order of the batch (and a
    claim listed twice is asked for once)."""
    world, _, ctx = insurer
    first = submit_claim(world, tmp_path, [("99213", 1, "100.00")])
    duplicate = submit_claim(world, tmp_path, [("99213", 1, "100.00")])  # same patient, day and code: CARC 18
    calls = counted(world, "Claims:LinesBatch")
    loaded = adjudication.load_lines_batch(ctx, [duplicate, first, duplicate])
    assert calls == {"Claims:LinesBatch": 1}
    assert all(isinstance(p, adjudication.Pending) for p in loaded)
    pending = [p for p in loaded if isinstance(p, adjudication.Pending)]
    assert [p.claim["claimId"] for p in pending] == [duplicate["claimId"], first["claimId"], duplicate["claimId"]]
    assert [p.duplicate_of for p in pending] == [first["claimId"], "", first["claimId"]]
    assert [e["reason"] for e in pending[0].edits] == ["18"] and pending[1].edits == []
    assert pending[0].coverage == pending[1].coverage == "Coverage/c1"


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([], "1 to 500 claims, not 0"),
        (["a" * 64] * 501, "1 to 500 claims, not 501"),
        (["a" * 64, "b" * 64, "a" * 64], "claimIds[2]: claim " + "a" * 64 + " appears twice"),
        (["CLM-1"], "claimIds[0] must be an opaque key"),
        (["A" * 64], "claimIds[0] must be an opaque key"),
    ],
)
def test_the_in_memory_lines_batch_refuses_a_malformed_list_whole(insurer: Any, ids: list[str], message: str) -> None:
    """As the contract does: only a malformed list refuses the call; an unknown claim is a result."""
    _, records, _ = insurer
    with pytest.raises(LedgerInvalid, match=re.escape(message)):
        asyncio.run(records.ledger.claim_lines_batch(ids))
    (result,) = asyncio.run(records.ledger.claim_lines_batch(["c" * 64]))
    assert (result["code"], "detail" in result) == ("NOT_FOUND", False)


def test_a_repeat_that_finds_the_claim_decided_and_purged_since_is_done(insurer: Any, tmp_path: Path) -> None:
    """A redelivered adjudication that runs after the claim's retention passed finds the decision on chain and its
    private part purged: the work was done by the first run, so the task succeeds instead of failing for good."""
    world, _, ctx = insurer
    ctx.settings = replace(ctx.settings, remittance=replace(ctx.settings.remittance, mode="per-claim"))
    cover(ctx)
    claim = submit_claim(world, tmp_path, [("99213", 1, "100.00")])
    assert tasks.adjudicate.apply(args=[claim]).get() == "approved"
    get = world.handlers["Claims:Get"]

    def purged(call: Any) -> Any:
        raise LedgerNotFound(f"the private part of claim {claim['claimId']} was purged after retention")

    world.handlers["Claims:Get"] = lambda call: {**get(call), "linesPurged": True}
    world.handlers["Claims:AdjudicationOf"] = purged
    assert tasks.adjudicate.apply(args=[claim]).get() == "its lines are purged"
    assert adjudications(world, claim["claimId"]) == 1


def test_a_task_whose_ledger_waits_keep_timing_out_stays_in_the_outbox(insurer: Any, tmp_path: Path) -> None:
    """The peers stay behind for longer than the task's retries last: the task gives up for now, but it can still
    succeed, so it stays in the outbox (the listener sends it again) instead of landing in the failed list."""
    world, records, ctx = insurer
    cover(ctx)
    claim = submit_claim(world, tmp_path, [("99213", 1, "100.00")])
    assert tasks.adjudicate.apply(args=[claim]).get() == "approved"
    adjudicated = {**next(p for _, _, n, p in world.events if n == "Claims.Adjudicated"), "eventBlock": 7}

    async def behind(channel: str, block: int, orgs: Any) -> None:
        raise BlockWaitTimeout(channel, orgs[0], block, block - 1)

    records.ledger.wait_for_block = behind  # type: ignore[method-assign]
    keys = ctx.settings.keys
    task_id = f"InsurerMSP:tx:Claims.Adjudicated:{claim['claimId']}:pay"
    ctx.redis.hset(keys.inflight, task_id, json.dumps({"task": "careledger.pay", "args": [adjudicated], "at": 0}))
    result = tasks.pay.apply(args=[adjudicated], task_id=task_id)
    assert result.state == "FAILURE" and isinstance(result.result, BlockWaitTimeout)
    assert ctx.redis.hexists(keys.inflight, task_id), "given up for good although it can still succeed"
    assert ctx.redis.llen(keys.failed) == 0


def test_one_purge_runs_at_a_time(insurer: Any) -> None:
    """A purge still running when the next period starts is not joined by another purging the same claims."""
    world, _, ctx = insurer
    asked: list[str] = []
    world.handlers["Claims:DueForPurge"] = lambda call: asked.append("due") or {"claims": [], "bookmark": ""}
    running = ctx.redis.lock(ctx.settings.keys.purge_lock, timeout=60)
    assert running.acquire()
    assert tasks.purge_due.apply().get() == 0
    assert asked == []
    running.release()
    assert tasks.purge_due.apply().get() == 0
    assert asked == ["due"]


def test_a_worker_killed_while_purging_blocks_purges_only_for_the_lease(
    insurer: Any, redis_topology: topo.Topology
) -> None:
    """The lock of a purge whose worker died is a lease: it lapses within PURGE_LEASE_S, and the purge after that
    runs. A purge renews its lease before each claim, so a long backlog keeps it."""
    world, _, ctx = insurer
    admin = redis.Redis.from_url(redis_topology.redis_admin_url)  # the org's own user may not read TTLs
    asked: list[str] = []
    world.handlers["Claims:DueForPurge"] = lambda call: asked.append("due") or {"claims": [], "bookmark": ""}
    assert tasks.PURGE_LEASE_S <= 60
    dead = ctx.redis.lock(ctx.settings.keys.purge_lock, timeout=tasks.PURGE_LEASE_S)
    assert dead.acquire()  # and its worker is killed: nobody releases it
    assert tasks.purge_due.apply().get() == 0 and asked == []
    assert 0 < admin.pttl(ctx.settings.keys.purge_lock) <= tasks.PURGE_LEASE_S * 1000
    admin.pexpire(ctx.settings.keys.purge_lock, 1)  # the lease lapses
    time.sleep(0.05)
    assert tasks.purge_due.apply().get() == 0 and asked == ["due"]

    renewed: list[int] = []
    claims = [{"claimId": f"c{i}"} for i in range(3)]
    world.handlers["Claims:DueForPurge"] = lambda call: {"claims": claims, "bookmark": ""}

    def purge(call: Any) -> Any:
        renewed.append(int(admin.pttl(ctx.settings.keys.purge_lock)))
        raise LedgerConflict("the lines of the claim are purged already")

    world.handlers["Claims:PurgeLines"] = purge
    assert tasks.purge_due.apply().get() == 3
    assert len(renewed) == 3 and all(
        tasks.PURGE_LEASE_S * 1000 - 2000 < ms <= tasks.PURGE_LEASE_S * 1000 for ms in renewed
    )
    assert not admin.exists(ctx.settings.keys.purge_lock)


def test_a_claim_response_for_a_claim_still_settling_here_is_fetched_once_it_settles(
    redis_topology: topo.Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hospital's gateway did not know its claim's outcome (its peer went away) and keeps the Claim pending
    until its reconciler settles it; the insurer adjudicates it meanwhile. The hospital's worker does not take the
    Claim for one not held here: it asks again, and keeps the ClaimResponse once the Claim is committed."""
    world = FakeLedger(KINDS)
    hospital = records_of(world, tmp_path, "HospitalMSP")
    patient = {**fhir.PATIENTS[0], "id": "p1", "identifier": [{"system": fhir.MPI_SYSTEM, "value": MPI}]}
    put = fv.entry({"resource": patient, "request": {"method": "PUT", "url": "Patient/p1"}}, 0)
    claim = synthetic.claim("p1", "InsurerMSP", [("99213", 1, "100.00")], "2026-11-02", "Coverage/c1")
    world.fail_next("Claims:Submit", CommitStatusUnavailable("UNAVAILABLE", "peer gone"), committed=True)

    async def file() -> None:
        await hospital.transaction([put])
        with pytest.raises(StillPending):
            await hospital.transaction(
                [fv.entry({"resource": claim, "request": {"method": "POST", "url": "Claim"}}, 0)]
            )

    asyncio.run(file())
    submitted = next(p for _, _, name, p in world.events if name == "Claims.Submitted")
    response = {"resourceType": "ClaimResponse", "id": "cr", "status": "active", "outcome": "complete"}
    members = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200, json=response)))
    monkeypatch.setattr(tasks.outbox, "publish", lambda *args: None)  # the EHR's notification: not this test's
    with hospital_worker(redis_topology, hospital, members) as loop:
        adjudicated = {**submitted, "status": "adjudicated", "outcome": "approved"}
        early = tasks.fetch_claim_response.apply(args=[adjudicated, "delivery-1"])
        assert early.state == "FAILURE" and isinstance(early.result, NotYetAvailable)  # asked again, not given up
        assert asyncio.run_coroutine_threadsafe(hospital.reconcile_pending(), loop).result(10)["committed"] == 1
        assert tasks.fetch_claim_response.apply(args=[adjudicated, "delivery-1"]).get() == "kept"
        local = hospital.by_ledger_key("Claim", submitted["claimId"])
        assert local is not None and hospital.store.read("ClaimResponse", local.id) is not None


def test_the_answers_of_one_block_are_fetched_in_one_request_and_those_not_kept_yet_asked_for_again(
    redis_topology: topo.Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = FakeLedger(KINDS)
    hospital = records_of(world, tmp_path, "HospitalMSP")
    patient = {**fhir.PATIENTS[0], "id": "p1", "identifier": [{"system": fhir.MPI_SYSTEM, "value": MPI}]}
    claims = [
        synthetic.claim("p1", "InsurerMSP", [(code, 1, "100.00")], "2026-11-02", "Coverage/c1")
        for code in ("99213", "85025")
    ]

    async def file() -> None:
        await hospital.transaction(
            [fv.entry({"resource": patient, "request": {"method": "PUT", "url": "Patient/p1"}}, 0)]
        )
        for claim in claims:
            await hospital.transaction(
                [fv.entry({"resource": claim, "request": {"method": "POST", "url": "Claim"}}, 0)]
            )

    asyncio.run(file())
    submitted = [p for _, _, name, p in world.events if name == "Claims.Submitted"]
    first, second = (s["claimId"] for s in submitted)
    asked: list[list[str]] = []

    def insurer_gateway(request: httpx.Request) -> httpx.Response:
        wanted = request.url.params.get_list("claim")
        asked.append(wanted)
        kept = [first] if len(asked) == 1 else wanted  # the second answer is not kept at the insurer at first
        entries = [
            {"resource": {"resourceType": "ClaimResponse", "id": "x", "outcome": "complete",
                          "request": {"reference": f"Claim/{c}"}}}
            for c in wanted if c in kept
        ]  # fmt: skip
        return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset", "entry": entries})

    published: list[tuple[str, list[Any], str]] = []
    monkeypatch.setattr(tasks.outbox, "publish", lambda r, m, q, task, args, tid: published.append((task, args, tid)))
    members = httpx.Client(transport=httpx.MockTransport(insurer_gateway))
    with hospital_worker(redis_topology, hospital, members):
        items = [[{**s, "status": "adjudicated", "outcome": "approved"}, f"d-{s['claimId']}"] for s in submitted]
        tasks.fetch_claim_responses.apply(args=[items])  # retried at once when run eagerly
        assert asked == [[first, second], [second]]  # one request for both; then only what was missing
        notified = [(task, [(event, n["claimId"], d) for event, n, d in args[0]]) for task, args, _ in published]
        assert notified == [
            ("careledger.notify_many", [("Claims.Adjudicated", first, f"d-{first}")]),
            ("careledger.notify_many", [("Claims.Adjudicated", second, f"d-{second}")]),
        ]
        for s in submitted:
            local = hospital.by_ledger_key("Claim", s["claimId"])
            assert local is not None
            kept = json.loads(hospital.read("ClaimResponse", local.id).content)
            assert kept["request"] == {"reference": f"Claim/{local.id}"}


def test_an_insurer_gateway_without_the_many_claims_form_gets_each_claim_asked_on_its_own(
    redis_topology: topo.Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = FakeLedger(KINDS)
    hospital = records_of(world, tmp_path, "HospitalMSP")
    published: list[tuple[str, list[Any], str]] = []
    monkeypatch.setattr(tasks.outbox, "publish", lambda r, m, q, task, args, tid: published.append((task, args, tid)))
    older = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(404, json={})))
    with hospital_worker(redis_topology, hospital, older):
        claims = [{"claimId": c, "insurer": "InsurerMSP", "provider": "HospitalMSP", "patient": "p"} for c in "ab"]
        items = [[c, f"d-{c['claimId']}"] for c in claims]
        assert tasks.fetch_claim_responses.apply(args=[items]).get() == "kept 0"
        assert published == [
            ("careledger.fetch_claim_response", [claims[0], "d-a"], "d-a:alone"),
            ("careledger.fetch_claim_response", [claims[1], "d-b"], "d-b:alone"),
        ]


def test_an_insurer_answers_many_claim_responses_to_their_provider_only(
    insurer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from records import sharing as sharing_module

    _, records, ctx = insurer
    monkeypatch.setattr(sharing_module, "CLAIM_RESPONSE_WAIT_S", 0.2)
    for claim_id, provider in (("a" * 64, "HospitalMSP"), ("b" * 64, "ClinicMSP")):
        response = {
            "resourceType": "ClaimResponse",
            "id": claim_response_id(claim_id),
            "status": "active",
            "requestor": {"identifier": {"system": "urn:careledger:msp", "value": provider}},
            "request": {"reference": f"Claim/{claim_id}"},
        }
        ctx.run(records.keep(response, "p" * 64))
    sharing = sharing_module.Sharing(records, None)
    asked = ["c" * 64, "b" * 64, "a" * 64]  # one not kept, one of another provider's, one of the caller's
    found = ctx.run(sharing.claim_responses_for(asked, "HospitalMSP"))
    assert [json.loads(s.content)["request"]["reference"] for s in found] == [f"Claim/{'a' * 64}"]


def test_a_member_that_asks_in_a_loop_gets_answers_at_once_beyond_its_share_of_waits(
    insurer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from records import sharing as sharing_module

    _, records, ctx = insurer
    monkeypatch.setattr(sharing_module, "CLAIM_RESPONSE_WAIT_S", 3.0)
    sharing = sharing_module.Sharing(records, None)
    never = ["d" * 64]  # a claim no response will be kept for

    async def scenario() -> tuple[float, float, int]:
        waiting = [
            asyncio.create_task(sharing.claim_responses_for(never, "HospitalMSP"))
            for _ in range(sharing_module.WAITS_PER_CALLER)
        ]
        await asyncio.sleep(0.1)
        t0 = time.monotonic()
        assert await sharing.claim_responses_for(never, "HospitalMSP") == []  # one more: answered with what is kept
        beyond = time.monotonic() - t0
        other = asyncio.create_task(sharing.claim_responses_for(never, "ClinicMSP"))  # another member still waits
        await asyncio.sleep(0.3)
        other_waits = not other.done()
        for task in [*waiting, other]:
            task.cancel()
        await asyncio.gather(*waiting, other, return_exceptions=True)
        return beyond, float(other_waits), len(sharing._waiting)

    beyond, other_waits, left = ctx.run(scenario())
    assert beyond < 0.5
    assert other_waits
    assert left == 0  # every wait gave its place back, cancelled ones included


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, {"disclosures": []}, False),  # nothing disclosed is no documentation
        (403, {"resourceType": "OperationOutcome"}, False),  # no consent for the review purpose
        (200, {"disclosures": [{"resourceKey": "0" * 64, "version": 1}]}, False),  # a document that proves nothing
    ],
)
def test_a_records_review_passes_only_on_records_that_prove_themselves(
    insurer: Any, status: int, body: dict[str, Any], expected: bool
) -> None:
    _, _, ctx = insurer
    asked: list[httpx.Request] = []

    def provider(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(status, json=body)

    review = replace(ctx, members=httpx.Client(transport=httpx.MockTransport(provider)))
    review.settings = replace(ctx.settings, rules=rules.Rules.from_config({"records_review": {"codes": ["97110"]}}))
    claim = {"claimId": "c1", "provider": "HospitalMSP", "insurer": "InsurerMSP", "patient": "p" * 64}
    assert adjudication._records_disclosed(review, claim) is expected
    assert asked and asked[0].url.params["purpose"] == "HPAYMT"


def test_an_exact_duplicate_claim_is_answered_with_carc_18_naming_the_original(insurer: Any, tmp_path: Path) -> None:
    """The same claim filed twice (a resend, or a bundle that bills a visit twice): the Claims contract files the
    second with the whole-claim edit CARC 18, and the insurer answers it as a payer does: every line denied with 18,
    the edit as the ClaimResponse's error, a note naming the claim it duplicates. The original is paid."""
    world, records, ctx = insurer
    cover(ctx)
    first = submit_claim(world, tmp_path, [("99213", 1, "100.00"), ("85025", 2, "15.00")])
    again = submit_claim(world, tmp_path, [("85025", 2, "15.00"), ("99213", 1, "100.00")])  # codes in another order
    assert tasks.adjudicate.apply(args=[first]).get() == "approved"
    assert tasks.adjudicate.apply(args=[again]).get() == "denied"
    response = json.loads(records.read("ClaimResponse", claim_response_id(again["claimId"])).content)
    for item in response["item"]:
        benefit = item["adjudication"][1]
        assert benefit["amount"]["value"] == 0 and [c["code"] for c in benefit["reason"]["coding"]] == ["18"]
    assert response["error"] == [{"code": {"coding": [{"system": CARC, "code": "18"}]}}]
    assert first["claimId"] in response["processNote"][0]["text"]
    eob = json.loads(records.read("ExplanationOfBenefit", claim_response_id(again["claimId"])).content)
    assert eob["payment"]["amount"]["value"] == 0 and first["claimId"] in eob["processNote"][0]["text"]
    original = json.loads(records.read("ClaimResponse", claim_response_id(first["claimId"])).content)
    assert "error" not in original and "processNote" not in original


def test_a_line_without_a_charge_is_answered_with_its_edit(insurer: Any, tmp_path: Path) -> None:
    """A front-end edit the provider's gateway found (CARC 16, RARC M79: a line without a charge) is answered on
    that line, and listed with its RARC as the ClaimResponse's error."""
    world, records, ctx = insurer
    cover(ctx)
    claim = submit_claim(world, tmp_path, [("99213", 1, "100.00"), ("85025", 1, "0")])
    assert tasks.adjudicate.apply(args=[claim]).get() == "partial"
    response = json.loads(records.read("ClaimResponse", claim_response_id(claim["claimId"])).content)
    second = response["item"][1]["adjudication"][1]
    assert [c["code"] for c in second["reason"]["coding"]] == ["16"]
    codes = [(c["system"], c["code"]) for c in response["error"][0]["code"]["coding"]]
    assert response["error"][0]["itemSequence"] == 2 and codes == [(CARC, "16"), (RARC, "M79")]


def test_a_payment_cut_off_before_its_reconciliation_is_finished_before_another_starts(
    insurer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cycle pays two claims and is cut off (Redis away) before it keeps the PaymentReconciliation and empties
    its queue; a third claim is queued meanwhile. The next cycle finishes THAT payment (same reference, its
    reconciliation kept), and only the cycle after pays the third claim: each claim paid once, every payment
    reconciled."""
    world, records, ctx = insurer
    cover(ctx)
    claims = [submit_claim(world, tmp_path, [(code, 1, "50.00")]) for code in ("99213", "85025", "80053")]
    for claim in claims:
        assert tasks.adjudicate.apply(args=[claim]).get() in ("approved", "partial")  # 85025 above the schedule
    adjudicated = {p["claimId"]: p for _, _, n, p in world.events if n == "Claims.Adjudicated"}
    ctx.settings = replace(ctx.settings, remittance=replace(ctx.settings.remittance, cycle_seconds=0))
    first, second, third = (adjudicated[c["claimId"]] for c in claims)
    for claim in (first, second):
        remittance.queue(ctx, claim)
    keep = records.keep

    async def cut_off(resource: dict[str, Any], patient: str) -> bool:
        if resource["resourceType"] == "PaymentReconciliation":
            raise redis.ConnectionError("Redis went away")
        return await keep(resource, patient)

    monkeypatch.setattr(records, "keep", cut_off)
    with pytest.raises(redis.ConnectionError):
        remittance.remit(ctx, "HospitalMSP")
    monkeypatch.setattr(records, "keep", keep)
    remittance.queue(ctx, third)
    started = remittance.payment_ref("HospitalMSP", [first["claimId"], second["claimId"]])
    assert remittance.remit(ctx, "HospitalMSP") == started
    assert remittance.remit(ctx, "HospitalMSP") == remittance.payment_ref("HospitalMSP", [third["claimId"]])
    assert remittance.remit(ctx, "HospitalMSP") is None
    payments = [p for _, _, n, p in world.events if n == "Claims.PaidBatch"]
    assert sorted(line["claimId"] for p in payments for line in p["lines"]) == sorted(c["claimId"] for c in claims)
    for p in payments:
        kept = json.loads(records.read("PaymentReconciliation", p["paymentRef"]).content)
        assert [d["identifier"]["value"] for d in kept["detail"]] == [line["claimId"] for line in p["lines"]]
    assert ctx.redis.get(ctx.settings.keys.payment_under_way("HospitalMSP")) is None


def test_a_cycle_pays_every_queued_claim_in_payments_of_at_most_max_claims(insurer: Any, tmp_path: Path) -> None:
    world, _, ctx = insurer
    cover(ctx)
    codes = ("99213", "99214", "99215", "85025", "80053")
    claims = [submit_claim(world, tmp_path, [(code, 1, "50.00")]) for code in codes]
    for claim in claims:
        assert tasks.adjudicate.apply(args=[claim]).get() in ("approved", "partial")
    adjudicated = [p for _, _, n, p in world.events if n == "Claims.Adjudicated"]
    remittance.queue(ctx, *adjudicated)  # just now: the next cycle pays them all the same
    ctx.settings = replace(ctx.settings, remittance=replace(ctx.settings.remittance, max_claims=2))
    assert len(remittance.remit_due(ctx)) == 2  # 2 claims, and 2 more: a full payment's worth was still queued
    assert ctx.redis.zcard(ctx.settings.keys.to_pay("HospitalMSP")) == 1  # less than that: the next cycle
    assert len(remittance.remit_due(ctx)) == 1
    assert remittance.remit_due(ctx) == []
    paid = [p for _, _, n, p in world.events if n == "Claims.PaidBatch"]
    assert [len(p["lines"]) for p in paid] == [2, 2, 1]
    assert sorted(line["claimId"] for p in paid for line in p["lines"]) == sorted(c["claimId"] for c in adjudicated)


def test_a_claim_refused_by_a_peer_behind_stays_queued_until_the_chain_shows_it_done(
    insurer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, _, ctx = insurer
    cover(ctx)
    claim = submit_claim(world, tmp_path, [("99213", 1, "50.00")])
    assert tasks.adjudicate.apply(args=[claim]).get() == "approved"
    ctx.settings = replace(ctx.settings, remittance=replace(ctx.settings.remittance, cycle_seconds=0))
    remittance.queue(ctx, {**claim, "provider": "HospitalMSP"})
    pay_batch = ctx.ledger.pay_batch

    async def behind(provider: str, ref: str, claim_ids: list[str]) -> Any:
        raise LedgerConflict("no claim of payment can be paid: claim is submitted")

    monkeypatch.setattr(ctx.ledger, "pay_batch", behind)
    assert remittance.remit(ctx, "HospitalMSP") is None
    assert ctx.redis.zcard(ctx.settings.keys.to_pay("HospitalMSP")) == 1  # the chain says approved and unpaid
    monkeypatch.setattr(ctx.ledger, "pay_batch", pay_batch)
    assert remittance.remit(ctx, "HospitalMSP") is not None
    assert ctx.redis.zcard(ctx.settings.keys.to_pay("HospitalMSP")) == 0


def test_a_worker_renews_the_lease_of_the_messages_it_holds_only(insurer: Any) -> None:
    """kombu restores an unacknowledged message once its score is older than the visibility timeout: the worker
    keeps the score fresh for what it holds, and never adds back a message that was acknowledged meanwhile."""
    _, _, ctx = insurer
    index = ctx.settings.keys.celery_prefix + app_module.UNACKED_INDEX
    ctx.redis.zadd(index, {"held": 1.0, "gone-worker": 1.0})
    assert app_module.renew_leases(ctx.redis, index, ["held", "acknowledged"]) == 1
    scores = dict(ctx.redis.zrange(index, 0, -1, withscores=True))
    assert scores[b"gone-worker"] == 1.0 and scores[b"held"] > 1.0 and b"acknowledged" not in scores


def test_a_listener_checkpoint_moves_only_from_the_one_it_saved_last(insurer: Any) -> None:
    """Redis restarted and lost the latest writes (the tasks of an event and its checkpoint): the listener's next
    move finds an older checkpoint than the one it saved, and is refused, so the listener resumes from the stored
    one and replays the lost events' tasks."""
    _, _, ctx = insurer
    checkpointer = RedisCheckpointer(ctx.redis, ctx.settings.keys.listener_checkpoint_name("claims"))
    start = checkpointer.load()
    assert start == Checkpoint()  # a fresh start: nothing stored
    assert checkpointer.move(start, Checkpoint(5, "tx-a"))
    assert checkpointer.move(Checkpoint(5, "tx-a"), Checkpoint(5, "tx-b"))
    checkpointer.save(Checkpoint(5, "tx-a"))  # the move to tx-b was lost
    assert not checkpointer.move(Checkpoint(5, "tx-b"), Checkpoint(6, ""))
    assert checkpointer.load() == Checkpoint(5, "tx-a")  # left as stored: the listener resumes from there


def test_after_a_redis_outage_every_task_written_before_it_is_sent_again_at_once(
    insurer: Any, redis_topology: topo.Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis crash can lose a message a worker had just taken, or writes not yet in the append-only file: once
    the listener's watch saw Redis away and back, the outbox re-sends what was written before, not only after
    its usual delay, and then goes back to the usual delay."""
    _, _, ctx = insurer
    sent: list[str] = []
    monkeypatch.setattr(app_module.app, "send_task", lambda task, task_id="", **_: sent.append(task_id))
    msp, queue = "InsurerMSP", ctx.settings.queue
    outbox.publish(ctx.redis, msp, queue, "careledger.pay", [], "before")
    watch = schedule.RedisWatch(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there: Redis is away
    assert not watch.probe() and watch.outage() is None  # away, not back yet
    watch.client = redis.Redis.from_url(redis_topology.redis_url_for("InsurerOrg"))
    assert watch.probe()
    noticed = watch.outage()
    assert noticed is not None
    outbox.publish(ctx.redis, msp, queue, "careledger.pay", [], "after")  # written once Redis was back
    jobs = {job.name: job for job in schedule.jobs_for(ctx.settings, ctx.redis, watch)}
    sent.clear()
    jobs["outbox after a Redis outage"].run()
    assert sent == ["before"] and watch.outage() is None
    jobs["outbox after a Redis outage"].run()
    jobs["outbox"].run()
    assert sent == ["before"]  # once; the others wait for the usual delay


def test_a_notification_cut_off_between_its_marker_and_its_stream_entry_is_not_lost(
    insurer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream entry and its once-only marker are written in one MULTI/EXEC: a connection lost after the
    marker and before the entry (Redis killed) cannot leave a marker that makes every rerun skip the entry."""
    _, _, ctx = insurer
    monkeypatch.setattr(app_module.app, "send_task", lambda *a, **k: None)
    stream = ctx.settings.keys.stream("claims")
    claim = {"claimId": "c1", "insurer": "InsurerMSP", "provider": "HospitalMSP"}

    def cut_off(*args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(ctx.redis, "xadd", cut_off)  # a separate XADD after the marker would fail here
    with contextlib.suppress(redis.ConnectionError):
        tasks.notify.run("Claims.Submitted", claim, "d1")
    monkeypatch.undo()
    monkeypatch.setattr(app_module.app, "send_task", lambda *a, **k: None)
    tasks.notify.run("Claims.Submitted", claim, "d1")  # the rerun
    tasks.notify.run("Claims.Submitted", claim, "d1")
    assert [f[b"delivery"] for _, f in ctx.redis.xrange(stream)] == [b"d1"]


def test_a_worker_that_starts_sends_again_what_was_unfinished_before_it(
    insurer: Any, redis_topology: topo.Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed right after kombu took a message off the queue, before it recorded it, leaves that task in
    the outbox only: the worker process started in its place sends every unfinished task written before it
    started, once, instead of leaving it for the outbox's usual delay."""
    _, _, ctx = insurer
    sent: list[str] = []
    monkeypatch.setattr(app_module.app, "send_task", lambda task, task_id="", **_: sent.append(task_id))
    outbox.publish(ctx.redis, "InsurerMSP", ctx.settings.queue, "careledger.deliver", [], "taken-by-the-dead-one")
    sent.clear()
    url = redis_topology.redis_url_for("InsurerOrg")
    monkeypatch.setattr(app_module, "org_redis", lambda: ("InsurerMSP", url))
    outbox._resend_at_start()
    started = time.monotonic()
    while not sent and time.monotonic() - started < 10:
        time.sleep(0.01)
    assert sent == ["taken-by-the-dead-one"]


def test_notifications_sent_together_are_each_on_the_stream_once(insurer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, ctx = insurer
    monkeypatch.setattr(app_module.app, "send_task", lambda *a, **k: None)
    claims = [{"claimId": c, "insurer": "InsurerMSP", "provider": "HospitalMSP"} for c in ("c1", "c2", "c3")]
    tasks.notify.run("Claims.Submitted", claims[0], "d1")  # one of them notified on its own before
    items = [["Claims.Submitted", c, f"d{n}"] for n, c in enumerate(claims, start=1)]
    tasks.notify_many.run(items)
    tasks.notify_many.run(items)  # a repeat
    entries = [
        (f[b"delivery"], json.loads(f[b"claim"])["claimId"])
        for _, f in ctx.redis.xrange(ctx.settings.keys.stream("claims"))
    ]
    assert entries == [(b"d1", "c1"), (b"d2", "c2"), (b"d3", "c3")]
