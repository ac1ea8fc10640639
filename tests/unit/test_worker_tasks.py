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
from ledger.claim_batches import ClaimBatches
from ledger.contracts import Ledger
from ledger.fake import FakeLedger
from records import synthetic
from records import validation as fv
from records.fhir_claim import claim_response_id
from records.service import Custodian, Records
from records.store import Store
from tests import fhir_samples as fhir
from workers import context, tasks
from workers.settings import WorkerSettings

KINDS = {"HospitalMSP": "provider", "ClinicMSP": "provider", "InsurerMSP": "insurer"}
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
