"""The insurer's tasks over the in-memory ledger and a real Redis: adjudication and payment, each idempotent, and
what they keep goes through the records service like every other write."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from consortium import topology as topo
from fabric_gateway import BlockWaitTimeout, CommitStatusUnavailable
from ledger.claim_batches import ClaimBatches
from ledger.contracts import Ledger
from ledger.errors import LedgerNotFound
from ledger.fake import FakeLedger
from records import synthetic
from records import validation as fv
from records.errors import StillPending
from records.fhir_claim import claim_response_id
from records.service import Custodian, Records
from records.store import Store
from tests import fhir_samples as fhir
from workers import adjudication, context, rules, tasks
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
    for claim in adjudicated["claims"]:
        assert tasks.pay.apply(args=[{**claim, "eventBlock": 0}]).get() == "queued for the next remittance"
    ctx.settings = replace(ctx.settings, remittance=replace(ctx.settings.remittance, cycle_seconds=0))
    (ref,) = tasks.remit.apply().get()
    assert tasks.remit.apply().get() == []  # nothing left to pay
    (payment,) = [p for _, _, name, p in world.events if name == "Claims.PaidBatch"]
    assert payment["paymentRef"] == ref and len(payment["lines"]) == 5
    reconciliation = json.loads(records.read("PaymentReconciliation", ref).content)
    assert len(reconciliation["detail"]) == 5
    assert sum(d["amount"]["value"] for d in reconciliation["detail"]) == reconciliation["paymentAmount"]["value"]


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
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    r = redis.Redis.from_url(redis_topology.redis_url_for("HospitalOrg"))
    settings = WorkerSettings.load(redis_topology, "HospitalOrg")
    monkeypatch.setattr(tasks.outbox, "publish", lambda *args: None)  # the EHR's notification: not this test's
    context._context = context.OrgContext(settings, hospital, r, members, httpx.Client(), loop)
    try:
        adjudicated = {**submitted, "status": "adjudicated", "outcome": "approved"}
        early = tasks.fetch_claim_response.apply(args=[adjudicated, "delivery-1"])
        assert early.state == "FAILURE" and isinstance(early.result, NotYetAvailable)  # asked again, not given up
        assert asyncio.run_coroutine_threadsafe(hospital.reconcile_pending(), loop).result(10)["committed"] == 1
        assert tasks.fetch_claim_response.apply(args=[adjudicated, "delivery-1"]).get() == "kept"
        local = hospital.by_ledger_key("Claim", submitted["claimId"])
        assert local is not None and hospital.store.read("ClaimResponse", local.id) is not None
    finally:
        context._context = None
        loop.call_soon_threadsafe(loop.stop)
        hospital.store.close()


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
