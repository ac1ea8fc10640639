"""The records service over the in-memory ledger: the write path, unknown outcomes, conditional writes, held
resources, verification, and consent-checked disclosure."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fabric_gateway import CommitStatusUnavailable
from ledger.contracts import Ledger
from ledger.errors import LedgerForbidden, LedgerNotFound
from ledger.fake import FakeLedger, FakeTransport
from ledger.transport import Prepared
from records import synthetic
from records import validation as fv
from records.errors import FhirInvalid, NotKeptHere, NotOnChain, PreconditionFailed, Refused, StillPending
from records.pending import PendingFiles, Remembered, RequestKey
from records.service import Custodian, Records
from records.sharing import Sharing
from records.store import Row
from tests import fhir_samples as fhir
from tests.stores import Stores

T = TypeVar("T")
KINDS = {"HospitalMSP": "provider", "ClinicMSP": "provider", "InsurerMSP": "insurer"}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


_stores: Stores | None = None


@pytest.fixture(autouse=True)
def backend(stores: Stores) -> Iterator[None]:
    """Every test here runs on SQLite and on PostgreSQL: `open_records` opens each org's store where `stores` says."""
    global _stores
    _stores = stores
    yield
    _stores = None


@pytest.fixture
def world() -> FakeLedger:
    return FakeLedger(KINDS)


def open_records(world: FakeLedger, tmp_path: Path, msp: str) -> Records:
    assert _stores is not None
    store = _stores.open(msp.encode().ljust(32, b"k"), name=msp)
    return Records(store, Ledger(world.member(msp)), fhir.CONSORTIUM_KEY, fhir.MPI_SYSTEM, Custodian(msp, KINDS[msp]))


@pytest.fixture
def hospital(world: FakeLedger, tmp_path: Path) -> Iterator[Records]:
    records = open_records(world, tmp_path, "HospitalMSP")
    yield records
    records.store.close()


def entries(bundle: dict[str, Any]) -> list[fv.Entry]:
    return fv.transaction_entries(fv.envelope(json.dumps(bundle).encode()))


def visit(n: int = 3, seed: int = 1) -> dict[str, Any]:
    return synthetic.Synthetic.seeded(seed).transaction(n)


def test_a_transaction_is_stored_and_registered_with_matching_digests(hospital: Records) -> None:
    written = run(hospital.transaction(entries(visit(4))))
    assert [w.version for w in written] == [1, 1, 1, 1]
    for w in written:
        stored = hospital.read(w.type, w.id)
        assert run(hospital.verify(stored)).ok
    assert not hospital.store.pending_batches()


def test_a_ledger_refusal_leaves_nothing(world: FakeLedger, hospital: Records) -> None:
    world.fail_next("Records:Register", LedgerForbidden("refused"))
    with pytest.raises(LedgerForbidden):
        run(hospital.transaction(entries(visit(5))))
    assert hospital.store.search(fv_query("Observation"))[0] == 0
    assert not hospital.store.pending_batches()


def test_an_unknown_outcome_that_committed_is_settled_as_committed(world: FakeLedger, hospital: Records) -> None:
    world.fail_next("Records:Register", CommitStatusUnavailable("UNAVAILABLE", "peer gone"), committed=True)
    with pytest.raises(StillPending):
        run(hospital.transaction(entries(visit(3))))
    assert run(hospital.reconcile_pending()) == {"committed": 1, "discarded": 0, "unknown": 0}
    assert hospital.store.search(fv_query("Observation"))[0] == 2
    assert len([p for p in world.events if p[2] == "Records.Registered"]) == 1  # sent again, registered once


def test_an_unknown_outcome_is_kept_pending_and_settled_by_sending_the_same_transaction(
    world: FakeLedger, hospital: Records
) -> None:
    world.fail_next("Records:Register", CommitStatusUnavailable("UNAVAILABLE", "peer gone"))
    bundle = entries(visit(3))
    with pytest.raises(StillPending):
        run(hospital.transaction(bundle, request="req1"))
    assert hospital.store.search(fv_query("Patient"))[0] == 0  # nothing readable until the ledger answers
    (batch,) = hospital.store.pending_batches()
    assert hospital.pending.load(batch) is not None  # the signed transaction was kept before it was sent
    # The client sends the same request again: it gets the first one's result, settled, never a second write.
    again = run(hospital.transaction(bundle, request="req1"))
    assert not hospital.store.pending_batches()
    assert hospital.store.search(fv_query("Patient"))[0] == 1
    assert [p for p in world.events if p[2] == "Records.Registered"].__len__() == 1
    assert {w.id for w in again} == {e.id for e in hospital.store.search(fv_query("Observation"))[1]} | {
        hospital.store.search(fv_query("Patient"))[1][0].id
    }
    # Answered as the first would have been: entries in the request's order, each created by it.
    assert [w.type for w in again] == [e.resource["resourceType"] for e in bundle] == ["Patient", *["Observation"] * 2]
    assert all(w.created for w in again)


def test_a_request_is_remembered_from_the_moment_its_transaction_is_sent(world: FakeLedger, hospital: Records) -> None:
    """A gateway that dies while the write is on its way leaves the request remembered with the kept transaction,
    so the client's retry (same body or Idempotency-Key) settles that write instead of writing a second one."""
    seen: list[Any] = []
    register = world.handlers["Records:Register"]

    def watched(call: Any) -> Any:
        seen.append(hospital.pending.remembered("req2"))
        return register(call)

    world.handlers["Records:Register"] = watched
    run(hospital.transaction(entries(visit(2)), request="req2"))
    (batch,) = seen
    assert batch is not None, "the request was not remembered while its transaction was sent"
    assert hospital.pending.remembered("req2") is None  # answered: the same content again is a new write


def test_the_reconciler_settles_what_an_unknown_outcome_left_pending(world: FakeLedger, hospital: Records) -> None:
    world.fail_next("Records:Register", CommitStatusUnavailable("UNAVAILABLE", "peer gone"), committed=True)
    world.fail_next("Records:Register", CommitStatusUnavailable("UNAVAILABLE", "still gone"))
    for n in (1, 2):
        with pytest.raises(StillPending):
            run(hospital.transaction(entries(visit(2, seed=n))))
    assert run(hospital.reconcile_pending()) == {"committed": 2, "discarded": 0, "unknown": 0}
    assert hospital.store.search(fv_query("Patient"))[0] == 2
    assert len([p for p in world.events if p[2] == "Records.Registered"]) == 2


def test_keep_writes_a_new_version_only_when_the_content_changes(hospital: Records) -> None:
    resource = {"resourceType": "ClaimResponse", "id": "cr-1", "status": "active", "outcome": "queued"}
    assert run(hospital.keep(resource, "a" * 64))
    assert not run(hospital.keep(resource, "a" * 64))
    assert run(hospital.keep({**resource, "outcome": "complete"}, "a" * 64))
    assert [s.version for s in hospital.history("ClaimResponse", "cr-1")] == [2, 1]


def test_keep_many_writes_what_changed_in_one_batch(hospital: Records, monkeypatch: pytest.MonkeyPatch) -> None:
    def response(rid: str, outcome: str) -> dict[str, Any]:
        return {"resourceType": "ClaimResponse", "id": rid, "status": "active", "outcome": outcome}

    run(hospital.keep(response("cr-1", "complete"), "a" * 64))
    staged: list[int] = []
    stage = hospital.store.stage
    monkeypatch.setattr(
        hospital.store, "stage", lambda batch, rows, *a, **k: (staged.append(len(rows)), stage(batch, rows, *a, **k))[1]
    )
    kept = run(
        hospital.keep_many(
            [
                (response("cr-1", "complete"), "a" * 64),
                (response("cr-2", "queued"), "a" * 64),
                (response("cr-3", "complete"), "b" * 64),
            ]
        )
    )
    assert kept == [False, True, True] and staged == [2]  # the unchanged one left alone, the others in one write
    assert hospital.store.head("ClaimResponse", "cr-3") == (1, "b" * 64)
    # The same resource twice (a version the batch would write twice): each kept on its own instead, in order.
    twice = run(hospital.keep_many([(response("cr-2", "complete"), "a" * 64), (response("cr-2", "denied"), "a" * 64)]))
    assert twice == [True, True]
    assert [json.loads(s.content)["outcome"] for s in hospital.history("ClaimResponse", "cr-2")] == [
        "denied",
        "complete",
        "queued",
    ]


def conditional_create(resource: dict[str, Any], condition: str) -> fv.Entry:
    request = {"method": "POST", "url": resource["resourceType"], "ifNoneExist": condition}
    return fv.entry({"resource": resource, "request": request}, 0)


def test_conditional_create_finds_the_existing_resource(hospital: Records) -> None:
    entry = conditional_create(fhir.PATIENTS[0], f"identifier={fhir.MPI_SYSTEM}|MPI-70931-QX")
    (first,) = run(hospital.transaction([entry]))
    (second,) = run(hospital.transaction([entry]))
    assert first.created and not second.created
    assert (second.id, second.version) == (first.id, 1)


def test_concurrent_conditional_creates_make_one_resource(hospital: Records) -> None:
    entry = conditional_create(fhir.PATIENTS[1], f"identifier={fhir.MPI_SYSTEM}|MPI-88412-ZR")

    async def ten() -> list[Any]:
        return list(await asyncio.gather(*(hospital.transaction([entry]) for _ in range(10))))

    results = run(ten())
    assert len({w.id for (w,) in results}) == 1
    assert sum(w.created for (w,) in results) == 1


class SlowLedger(FakeTransport):
    """The in-memory ledger, answering a submit only after the event loop has run whatever else is ready."""

    async def submit(self, *args: Any, **kwargs: Any) -> Any:
        for _ in range(20):
            await asyncio.sleep(0)
        return await super().submit(*args, **kwargs)


def test_conditional_creates_in_several_processes_of_an_org_make_one_resource(
    world: FakeLedger, tmp_path: Path, hospital: Records
) -> None:
    """Two gateway processes of one org (two Records on one store, each with its own in-process lock) decide
    conditional creates one after the other, through the store's lock (a file lock or a PostgreSQL advisory lock:
    each Records takes its own, so they exclude each other as two processes' would)."""
    others = [open_records(world, tmp_path, "HospitalMSP") for _ in range(2)]
    for records in others:  # each write waits for the ledger as a real one does, so the other process runs meanwhile
        records.ledger = Ledger(SlowLedger(world, "HospitalMSP"))
    entry = conditional_create(fhir.PATIENTS[1], f"identifier={fhir.MPI_SYSTEM}|MPI-88412-ZR")

    async def racing() -> list[Any]:
        return list(await asyncio.gather(*(others[i % 2].transaction([entry]) for i in range(8))))

    results = run(racing())
    for records in others:
        records.store.close()
    assert len({w.id for (w,) in results}) == 1
    assert sum(w.created for (w,) in results) == 1


def test_the_store_lock_is_released_when_a_waiter_gives_up(hospital: Records) -> None:
    """A conditional write cancelled while it waits for the store's lock lets the lock go once its thread gets it:
    the next write still gets it."""
    holder = hospital.store.exclusive()
    holder.acquire()

    async def give_up_waiting_then_write() -> None:
        waiting = asyncio.ensure_future(hospital._locked_across_processes().__aenter__())
        await asyncio.sleep(0)  # its first step runs: it is waiting for the lock in a thread
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        holder.release()
        async with hospital._locked_across_processes():
            pass

    run(asyncio.wait_for(give_up_waiting_then_write(), timeout=30))


def test_a_batch_another_process_is_sending_is_left_to_it_until_its_outcome_deadline(
    world: FakeLedger, tmp_path: Path, hospital: Records
) -> None:
    """Two processes of one org share the store and the kept transactions. The one whose write's outcome is unknown
    settles it at once; another leaves it alone while the sender may still be waiting for the outcome, and settles
    it (the same transaction, once) after that."""
    other = open_records(world, tmp_path, "HospitalMSP")
    other.pending = hospital.pending
    world.fail_next("Records:Register", CommitStatusUnavailable("UNAVAILABLE", "peer gone"), committed=True)
    with pytest.raises(StillPending):
        run(hospital.transaction(entries(visit(3))))
    assert run(other.reconcile_pending()) == {"committed": 0, "discarded": 0, "unknown": 0}
    assert run(other.reconcile_pending(sending_s=0)) == {"committed": 1, "discarded": 0, "unknown": 0}
    assert run(hospital.reconcile_pending()) == {"committed": 0, "discarded": 0, "unknown": 0}
    assert hospital.store.search(fv_query("Observation"))[0] == 2
    assert len([p for p in world.events if p[2] == "Records.Registered"]) == 1
    other.store.close()


def test_a_batch_left_by_the_gateways_processes_before_a_restart_is_settled_at_once(
    world: FakeLedger, tmp_path: Path, hospital: Records
) -> None:
    """A process of the gateway dies with a write whose outcome it never learned; the gateway's processes start
    again. Whatever was staged before they started has no live writer: the first reconciliation settles it, without
    waiting out the sender's deadline."""
    world.fail_next("Records:Register", CommitStatusUnavailable("UNAVAILABLE", "peer gone"), committed=True)
    with pytest.raises(StillPending):
        run(hospital.transaction(entries(visit(3))))
    restarted = open_records(world, tmp_path, "HospitalMSP")
    restarted.pending = hospital.pending
    nothing = {"committed": 0, "discarded": 0, "unknown": 0}
    # Processes that started before the write: its writer may still be waiting for the outcome.
    assert run(restarted.reconcile_pending(writers_since=time.time() - 60)) == nothing
    # Processes that started after it: nobody is left to settle it.
    assert run(restarted.reconcile_pending(writers_since=time.time() + 1)) == {**nothing, "committed": 1}
    assert len([p for p in world.events if p[2] == "Records.Registered"]) == 1
    restarted.store.close()


def test_a_batch_staged_without_a_kept_transaction_is_discarded_only_after_the_grace(
    world: FakeLedger, tmp_path: Path, hospital: Records
) -> None:
    """Rows staged by a process that had not yet kept (so not sent) its transaction: another may be about to send
    it, so they stay until the grace has passed; after it, nothing of them can be on chain and they go."""
    hospital.store.stage("b" * 32, [Row("Observation", "o-1", 1, "p" * 64, "2026-01-01T00:00:00Z", b"{}")])
    assert run(hospital.reconcile_pending()) == {"committed": 0, "discarded": 0, "unknown": 0}
    assert run(hospital.reconcile_pending(grace_s=0)) == {"committed": 0, "discarded": 1, "unknown": 0}
    assert not hospital.store.pending_batches()


def test_processes_taking_due_claims_do_not_take_the_same_ones(world: FakeLedger, hospital: Records) -> None:
    """A due claim one process took is not due for another until the retry delay has passed (it died holding it)."""
    world.fail_next("Records:Register", CommitStatusUnavailable("UNAVAILABLE", "peer gone"), committed=True)
    with pytest.raises(StillPending):
        run(hospital.transaction(entries(visit_with_claims())))
    assert run(hospital.reconcile_pending()) == {"committed": 1, "discarded": 0, "unknown": 0}
    taken = hospital.store.claims_due(100, 60)
    assert len(taken) == 2
    assert hospital.store.claims_due(100, 60) == []
    assert {c.key for c in hospital.store.claims_due(100, 0)} == {c.key for c in taken}
    assert run(hospital.claims_outbox.submit_due(retry_after_s=0)) == {"submitted": 2}


def test_a_conditional_entry_inside_a_transaction_bundle_reuses_the_patient(hospital: Records) -> None:
    bundle = visit(3, seed=11)
    patient = bundle["entry"][0]["resource"]
    system, value = patient["identifier"][0]["system"], patient["identifier"][0]["value"]
    bundle["entry"][0]["request"]["ifNoneExist"] = f"identifier={system}|{value}"
    first = run(hospital.transaction(entries(bundle)))
    second = run(hospital.transaction(entries(bundle)))
    assert second[0].id == first[0].id and not second[0].created
    assert all(w.created for w in second[1:])  # the new clinical entries point at the existing Patient
    assert all(
        json.loads(hospital.read(w.type, w.id).content)["subject"]["reference"] == f"Patient/{first[0].id}"
        for w in second[1:]
    )


def test_an_update_with_a_stale_if_match_is_refused(hospital: Records) -> None:
    def put(**condition: str) -> fv.Entry:
        request = {"method": "PUT", "url": "Patient/pat-jane", **condition}
        return fv.entry({"resource": fhir.PATIENTS[0], "request": request}, 0)

    run(hospital.transaction([put(ifNoneMatch="*")]))
    with pytest.raises(PreconditionFailed):
        run(hospital.transaction([put(ifNoneMatch="*")]))
    run(hospital.transaction([put(ifMatch='W/"1"')]))
    with pytest.raises(PreconditionFailed):
        run(hospital.transaction([put(ifMatch='W/"1"')]))
    assert hospital.read("Patient", "pat-jane").version == 2


def test_an_insurer_does_not_keep_clinical_records(world: FakeLedger, tmp_path: Path) -> None:
    insurer = open_records(world, tmp_path, "InsurerMSP")
    with pytest.raises(NotKeptHere):
        run(insurer.transaction(entries(visit(2))))


def test_a_claim_is_submitted_and_verifies(hospital: Records) -> None:
    (patient,) = run(hospital.transaction(entries({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": fhir.PATIENTS[0], "request": {"method": "PUT", "url": "Patient/pat-jane"}}
    ]})))  # fmt: skip
    claim = synthetic.claim(patient.id, "InsurerMSP", [("99213", 1, "120.00")], "2026-11-01", "Coverage/c1")
    entry = fv.entry({"resource": claim, "request": {"method": "POST", "url": "Claim"}}, 0)
    (written,) = run(hospital.transaction([entry]))
    assert run(hospital.ledger.claim(hospital.store.ledger_key("Claim", written.id)))["status"] == "submitted"
    assert run(hospital.verify(hospital.read("Claim", written.id))).ok


class _CountedSyncs(PendingFiles):
    syncs = 0

    def make_durable(self) -> None:
        self.syncs += 1
        super().make_durable()


def test_claims_filed_together_are_kept_with_one_sync_and_committed_in_one_store_transaction(
    world: FakeLedger, tmp_path: Path
) -> None:
    assert _stores is not None
    store = _stores.open(b"h" * 32, name="HospitalMSP")
    pending = _CountedSyncs(tmp_path / "pending")
    ledger = Ledger(world.member("HospitalMSP"), claim_window_s=0.05)
    hospital = Records(
        store, ledger, fhir.CONSORTIUM_KEY, fhir.MPI_SYSTEM, Custodian("HospitalMSP", "provider"), pending
    )
    commits: list[list[tuple[str, str]]] = []
    commit_many = store.commit_many
    store.commit_many = lambda batches: (commits.append(list(batches)), commit_many(batches))[1]  # type: ignore[method-assign]
    patients = [
        w.id
        for seed in (11, 12, 13)
        for w in run(hospital.transaction(entries(visit(1, seed=seed))))
        if w.type == "Patient"
    ]
    syncs, commits[:] = pending.syncs, []

    def posted(patient: str) -> fv.Entry:
        claim = synthetic.claim(patient, "InsurerMSP", [("99213", 1, "120.00")], "2026-11-01", "Coverage/c1")
        return fv.entry({"resource": claim, "request": {"method": "POST", "url": "Claim"}}, 0)

    async def file_together() -> list[Any]:
        return list(await asyncio.gather(*(hospital.transaction([posted(p)]) for p in patients)))

    written = [w for (w,) in run(file_together())]
    calls = [call for _, call, _, _ in world.prepared.values()]
    assert calls.count("Claims:SubmitBatch") == 1 and "Claims:Submit" not in calls  # the three in one transaction
    assert pending.syncs - syncs == 1  # one folder sync for the three writes it carries
    assert [len(c) for c in commits] == [3]  # their rows committed in one store transaction
    assert not store.pending_batches() and not list((tmp_path / "pending").iterdir())
    for w in written:
        assert run(hospital.ledger.claim(store.ledger_key("Claim", w.id)))["status"] == "submitted"
        assert run(hospital.verify(hospital.read("Claim", w.id))).ok
    store.close()


class _AnswerHeld:
    """A member's transport whose submits commit at once and whose answers wait until `release` is set."""

    def __init__(self, inner: FakeTransport) -> None:
        self.inner = inner
        self.committed = asyncio.Event()
        self.release = asyncio.Event()

    async def submit(self, *args: Any, **kwargs: Any) -> Any:
        sent = await self.inner.submit(*args, **kwargs)
        self.committed.set()
        await self.release.wait()
        return sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_write_cancelled_after_its_transaction_left_is_settled_by_the_chain_not_discarded(
    world: FakeLedger, tmp_path: Path
) -> None:
    assert _stores is not None
    store = _stores.open(b"h" * 32, name="HospitalMSP")
    transport = _AnswerHeld(world.member("HospitalMSP"))
    hospital = Records(
        store,
        Ledger(transport),  # type: ignore[arg-type]
        fhir.CONSORTIUM_KEY,
        fhir.MPI_SYSTEM,
        Custodian("HospitalMSP", "provider"),
        PendingFiles(tmp_path / "pending"),
    )

    async def scenario() -> dict[str, int]:
        writing = asyncio.create_task(hospital.transaction(entries(visit(2, seed=21))))
        await transport.committed.wait()  # on chain; the gateway has not heard yet
        writing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writing
        assert store.pending_batches()  # kept to be settled, not discarded
        transport.release.set()
        return await hospital.reconcile_pending()

    assert run(scenario()) == {"committed": 1, "discarded": 0, "unknown": 0}
    written = store.search(fv_query("Observation"))[1]
    assert written and all(run(hospital.verify(w)).ok for w in written)
    store.close()


def test_disclosure_follows_the_custodians_own_consent(world: FakeLedger, tmp_path: Path, hospital: Records) -> None:
    run(hospital.transaction(entries(visit(3, seed=7))))
    (patient,) = hospital.store.search(fv_query("Patient"))[1]
    sharing = Sharing(hospital, None)
    with pytest.raises(Refused):
        run(sharing.disclose(patient.patient, "ClinicMSP", "TREAT"))
    consent = synthetic.consent(patient.id, "ClinicMSP")
    run(hospital.transaction([fv.entry({"resource": consent, "request": {"method": "POST", "url": "Consent"}}, 0)]))
    released = run(sharing.disclose(patient.patient, "ClinicMSP", "TREAT"))
    assert {r["resourceType"] for r in released} >= {"Patient"}
    with pytest.raises(Refused):  # another purpose
        run(sharing.disclose(patient.patient, "ClinicMSP", "HPAYMT"))
    with pytest.raises(Refused) as unknown:  # not held: the same answer as no consent, so no existence oracle
        run(sharing.disclose("f" * 64, "ClinicMSP", "TREAT"))
    with pytest.raises(Refused) as held:
        run(sharing.disclose(patient.patient, "InsurerMSP", "TREAT"))
    assert str(unknown.value) == str(held.value).replace("InsurerMSP", "ClinicMSP")


def fv_query(rtype: str) -> Any:
    from records.store import Query

    return Query(rtype)


def test_a_remembered_request_keeps_its_answer_on_disk(tmp_path: Path) -> None:
    pending = PendingFiles(tmp_path / "pending")
    pending.remember("req3", "batch3", (("Patient", "p1", 1), ("Observation", "o1", 2)))
    assert pending.remembered("req3") == Remembered("batch3", (("Patient", "p1", 1), ("Observation", "o1", 2)))
    (tmp_path / "pending" / "req4.req").write_text("batch4")  # kept by an older gateway: the batch alone
    assert pending.remembered("req4") == Remembered("batch4")
    pending.forget("req3")
    assert pending.remembered("req3") is None
    keyed = RequestKey("req5", client_chosen=True, content="abc")
    pending.remember(keyed, "batch5")
    kept = pending.remembered("req5")
    assert kept == Remembered("batch5", None, "abc")
    assert not kept.asked_otherwise(keyed) and not kept.asked_otherwise("req5")  # a content key carries no content
    assert kept.asked_otherwise(RequestKey("req5", client_chosen=True, content="abd"))


# ----- claims inside transaction bundles (the claim outbox) --------------------------------------------------------


def visit_with_claims(seed: int = 3, insurer: str = "InsurerMSP", status: str = "active") -> dict[str, Any]:
    """A visit whose bundle also bills it: two Claims naming the bundle's Patient by its urn:uuid."""
    bundle = visit(2, seed=seed)
    patient_url = bundle["entry"][0]["fullUrl"]
    for n in (1, 2):
        claim = synthetic.claim("x", insurer, [("99213", 1, f"{100 + n}.00")], "2026-11-01", "Coverage/c1")
        claim |= {"patient": {"reference": patient_url}, "status": status}
        bundle["entry"].append({"resource": claim, "request": {"method": "POST", "url": "Claim"}})
    return bundle


def submitted_events(world: FakeLedger) -> list[Any]:
    return [p for p in world.events if p[2] in ("Claims.Submitted", "Claims.SubmittedBatch")]


def test_the_claims_of_a_transaction_bundle_are_filed_once_after_its_records(
    world: FakeLedger, hospital: Records
) -> None:
    async def scenario() -> list[Any]:
        written = await hospital.transaction(entries(visit_with_claims()))
        await hospital.claims_outbox.idle()
        return written

    written = run(scenario())
    claims = [w for w in written if w.type == "Claim"]
    assert len(claims) == 2 and all(w.created for w in claims)
    assert len([p for p in world.events if p[2] == "Records.Registered"]) == 1
    assert len(submitted_events(world)) == 2
    for w in claims:
        state = hospital.submission(w.id)
        assert (state.state, state.attempts) == ("submitted", 0) and state.tx_id
        on_chain = run(hospital.ledger.claim(hospital.store.ledger_key("Claim", w.id)))
        assert on_chain["patient"] == hospital.read("Patient", written[0].id).patient
        assert run(hospital.verify(hospital.read("Claim", w.id))).ok
    assert run(hospital.claims_outbox.submit_due(retry_after_s=0)) == {}  # nothing left to file


def test_a_refused_bundle_queues_none_of_its_claims(world: FakeLedger, hospital: Records) -> None:
    world.fail_next("Records:Register", LedgerForbidden("refused"))
    with pytest.raises(LedgerForbidden):
        run(hospital.transaction(entries(visit_with_claims())))
    assert hospital.store.claims_due(100, 0) == []
    assert hospital.store.search(fv_query("Claim"))[0] == 0
    assert not submitted_events(world)


@pytest.mark.parametrize("committed", [True, False])
def test_a_claim_whose_submission_outcome_was_unknown_is_filed_exactly_once(
    world: FakeLedger, hospital: Records, committed: bool
) -> None:
    for _ in range(2):
        world.fail_next("Claims:Submit", CommitStatusUnavailable("UNAVAILABLE", "peer gone"), committed=committed)

    async def scenario() -> list[Any]:
        written = await hospital.transaction(entries(visit_with_claims()))
        await hospital.claims_outbox.idle()
        return written

    claims = [w for w in run(scenario()) if w.type == "Claim"]
    assert {hospital.submission(w.id).state for w in claims} == {"queued"}
    assert {hospital.submission(w.id).attempts for w in claims} == {1}
    assert hospital.store.claims_queued() == 2  # the outbox's backlog, as the gateway's metrics report it
    assert run(hospital.claims_outbox.submit_due(retry_after_s=0)) == {"submitted": 2}
    assert len(submitted_events(world)) == 2  # each claim on chain once, whether the first try committed or not
    assert all(hospital.submission(w.id).state == "submitted" for w in claims)
    assert hospital.store.claims_queued() == 0


def test_a_bundle_claim_naming_no_consortium_payer_is_kept_and_held(world: FakeLedger, hospital: Records) -> None:
    bundle = visit_with_claims()
    for e in bundle["entry"][-2:]:
        e["resource"]["insurer"] = {"display": "A payer outside the consortium"}
    claims = [w for w in run(hospital.transaction(entries(bundle))) if w.type == "Claim"]
    assert {hospital.submission(w.id).state for w in claims} == {"held"}
    assert not submitted_events(world)
    with pytest.raises(NotOnChain):  # nothing on chain to compare with: not "the claim does not exist"
        run(hospital.verify(hospital.read("Claim", claims[0].id)))


def test_a_bundle_claim_r4_forbids_refuses_the_whole_bundle(world: FakeLedger, hospital: Records) -> None:
    bundle = visit_with_claims(status="draft")
    with pytest.raises(FhirInvalid) as refused:
        run(hospital.transaction(entries(bundle)))
    n = len(bundle["entry"])  # the two Claims are the last entries: each problem is named at its own entry
    assert [(i.expression, i.code) for i in refused.value.issues] == [
        (f"Bundle.entry[{n - 2}].resource.status", "value"),
        (f"Bundle.entry[{n - 1}].resource.status", "value"),
    ]
    assert hospital.store.search(fv_query("Patient"))[0] == 0
    assert not [p for p in world.events if p[2] == "Records.Registered"]


# ----- patient identity: local pseudonyms, links, $match ------------------------------------------------------------

ANN = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5", "value": "MRN-778"}],
    "name": [{"use": "official", "family": "Doe", "given": ["Ann", "Marie"]}],
    "birthDate": "1970-01-01",
    "gender": "female",
}


def put(rtype: str, rid: str, resource: dict[str, Any], index: int = 0) -> fv.Entry:
    return fv.entry({"resource": resource, "request": {"method": "PUT", "url": f"{rtype}/{rid}"}}, index)


def post(resource: dict[str, Any]) -> fv.Entry:
    return fv.entry({"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}, 0)


def observation_of(reference: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": reference,
    }


def test_a_patient_without_a_consortium_identifier_is_linked_when_one_is_added(hospital: Records) -> None:
    run(hospital.transaction([put("Patient", "ann", ANN)]))
    local = hospital.local_pseudonym("ann")
    assert hospital.pseudonym_of_local_patient("ann") == local
    run(hospital.transaction([post(observation_of({"reference": "Patient/ann"}))]))
    mpi = {"system": fhir.MPI_SYSTEM, "value": "MPI-ANN-1"}
    run(hospital.transaction([put("Patient", "ann", {**ANN, "identifier": [*ANN["identifier"], mpi]})]))
    consortium = hospital.pseudonym_of_identifier(fhir.MPI_SYSTEM, "MPI-ANN-1")
    custodians = run(hospital.ledger.custodians(consortium))
    assert [(c["custodian"], c["localPseudonym"]) for c in custodians] == [("HospitalMSP", local)]
    assert hospital.filed_under(consortium) == local and hospital.consortium_pseudonym("ann") == consortium
    # A later resource naming the patient by that identifier joins the same record, under the local pseudonym.
    by_identifier = {"reference": f"Patient?identifier={fhir.MPI_SYSTEM}|MPI-ANN-1"}
    (obs,) = run(hospital.transaction([post(observation_of(by_identifier))]))
    assert hospital.read("Observation", obs.id).patient == local
    record = run(Sharing(hospital, None).everything(consortium, "TREAT"))
    assert sorted(s.type for s in record.own) == ["Observation", "Observation", "Patient"]


def test_patient_match_finds_by_identifier_or_by_demographics(hospital: Records) -> None:
    run(hospital.transaction([put("Patient", "ann", ANN)]))
    run(hospital.transaction([put("Patient", "bob", {**ANN, "identifier": [], "name": [{"family": "Roe"}]})]))
    by_id = hospital.match({"resourceType": "Patient", "identifier": ANN["identifier"]})
    assert [(s.id, score) for s, score in by_id] == [("ann", 1.0)]
    folded = {"resourceType": "Patient", "name": [{"family": "DOE", "given": ["ann"]}], "birthDate": "1970-01-01"}
    assert [(s.id, score) for s, score in hospital.match({**folded, "gender": "female"})] == [("ann", 0.9)]
    assert hospital.match({**folded, "gender": "male"}) == []
    assert hospital.match(folded) == []  # without every element of the token, no demographic match


def test_a_batch_entry_pointing_at_another_entry_is_told_to_use_a_transaction() -> None:
    raw = {"fullUrl": "urn:uuid:1", "resource": observation_of({"reference": "urn:uuid:2"}), "request": {
        "method": "POST", "url": "Observation"}}  # fmt: skip
    with pytest.raises(FhirInvalid) as refused:
        fv.batch_entry(raw, 3)
    (issue,) = refused.value.issues
    assert issue.expression == "Bundle.entry[3].resource.subject.reference" and "transaction" in issue.diagnostics


def test_a_coverage_an_ehr_sends_a_provider_is_a_registered_record(hospital: Records) -> None:
    coverage = {**synthetic.coverage("MPI-ANN-2", "InsurerMSP", "2026-01-01", "2026-12-31"), "id": "cov1"}
    run(hospital.transaction([put("Patient", "ann", {**ANN, "identifier": [
        {"system": fhir.MPI_SYSTEM, "value": "MPI-ANN-2"}]}), put("Coverage", "cov1", coverage, 1)]))  # fmt: skip
    stored = hospital.read("Coverage", "cov1")
    assert stored.tx_id and run(hospital.verify(stored)).ok


def naming_no_payer(claim: dict[str, Any]) -> dict[str, Any]:
    """The claim as an EHR may send it: no insurer, its coverage by a display no payer of the consortium has."""
    return claim | {"insurer": {}, "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "Plan"}}]}


def test_a_claim_naming_no_payer_is_filed_with_the_insurer_of_the_patients_coverage(hospital: Records) -> None:
    (patient,) = run(hospital.transaction(entries({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": fhir.PATIENTS[0], "request": {"method": "PUT", "url": "Patient/pat-jane"}}
    ]})))  # fmt: skip
    claim = naming_no_payer(synthetic.claim(patient.id, "-", [("99213", 1, "120.00")], "2026-11-01", "-"))
    post = fv.entry({"resource": claim, "request": {"method": "POST", "url": "Claim"}}, 0)
    (kept,) = run(hospital.transaction([post]))  # no Coverage held yet: kept here, not filed
    with pytest.raises(LedgerNotFound):
        run(hospital.ledger.claim(hospital.store.ledger_key("Claim", kept.id)))
    cov = synthetic.coverage("x", "InsurerMSP", "2026-01-01", "2026-12-31")
    cov["beneficiary"] = {"reference": f"Patient/{patient.id}"}
    run(hospital.transaction([fv.entry({"resource": cov, "request": {"method": "POST", "url": "Coverage"}}, 0)]))
    again = claim | {"billablePeriod": {"start": "2026-11-02"}}
    post = fv.entry({"resource": again, "request": {"method": "POST", "url": "Claim"}}, 0)
    (filed,) = run(hospital.transaction([post]))
    on_chain = run(hospital.ledger.claim(hospital.store.ledger_key("Claim", filed.id)))
    assert (on_chain["status"], on_chain["insurer"]) == ("submitted", "InsurerMSP")


def test_a_bundle_claim_takes_its_insurer_from_the_patients_coverage_in_the_same_bundle(
    world: FakeLedger, hospital: Records
) -> None:
    bundle = visit_with_claims()
    for e in bundle["entry"][-2:]:
        e["resource"] = naming_no_payer(e["resource"])
    cov = synthetic.coverage("x", "InsurerMSP", "2026-01-01", "2026-12-31")
    cov["beneficiary"] = {"reference": bundle["entry"][0]["fullUrl"]}
    bundle["entry"].append({"resource": cov, "request": {"method": "POST", "url": "Coverage"}})  # after the claims

    async def scenario() -> list[Any]:
        written = await hospital.transaction(entries(bundle))
        await hospital.claims_outbox.idle()
        return written

    claims = [w for w in run(scenario()) if w.type == "Claim"]
    assert {hospital.submission(w.id).state for w in claims} == {"submitted"}
    for w in claims:
        assert run(hospital.ledger.claim(hospital.store.ledger_key("Claim", w.id)))["insurer"] == "InsurerMSP"


def test_a_claim_request_sent_again_is_the_same_claim_and_a_new_one_is_a_duplicate(
    world: FakeLedger, hospital: Records
) -> None:
    """The same request (same request key) sent again while its outcome was unknown gets the first one's claim: on
    chain once, no duplicate edit. The same claim in a new request (a resend after the answer, or by another
    system) is a second claim, filed as the first one's exact duplicate (CARC 18), for the insurer to deny."""
    (patient,) = run(hospital.transaction(entries({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": fhir.PATIENTS[0], "request": {"method": "PUT", "url": "Patient/pat-jane"}}
    ]})))  # fmt: skip
    claim = synthetic.claim(patient.id, "InsurerMSP", [("99213", 1, "120.00")], "2026-11-01", "Coverage/c1")
    post = fv.entry({"resource": claim, "request": {"method": "POST", "url": "Claim"}}, 0)
    world.fail_next("Claims:Submit", CommitStatusUnavailable("UNAVAILABLE", "peer gone"), committed=True)
    with pytest.raises(StillPending):
        run(hospital.transaction([post], request="first"))
    (first,) = run(hospital.transaction([post], request="first"))
    key = hospital.store.ledger_key("Claim", first.id)
    assert len(submitted_events(world)) == 1
    assert "duplicateOf" not in run(hospital.ledger.claim_lines(key))
    (second,) = run(hospital.transaction([post], request="second"))
    assert second.id != first.id and second.created
    detail = run(hospital.ledger.claim_lines(hospital.store.ledger_key("Claim", second.id)))
    assert detail["duplicateOf"] == key and {"sequence": 0, "reason": "18"} in detail["edits"]


def test_a_bundle_claims_first_try_does_not_ask_the_chain_first(world: FakeLedger, hospital: Records) -> None:
    """Never tried, a claim cannot be on chain: its first try files it without a Claims:Get round trip."""
    for _ in range(2):
        world.fail_next("Claims:Get", LedgerForbidden("a first try must not ask"))

    async def scenario() -> list[Any]:
        written = await hospital.transaction(entries(visit_with_claims()))
        await hospital.claims_outbox.idle()
        return written

    claims = [w for w in run(scenario()) if w.type == "Claim"]
    assert {hospital.submission(w.id).state for w in claims} == {"submitted"}
    assert len([f for f in world.failures if f.function == "Claims:Get"]) == 2  # never asked


def test_a_transaction_carrying_many_writes_is_kept_once_for_all_of_them(tmp_path: Path) -> None:
    folder = tmp_path / "pending"
    pending = PendingFiles(folder)
    batch_tx = Prepared("claims", "ab12" * 16, b"\x01" * 5000)  # one submission of three claims' writes
    for batch in ("w1", "w2", "w3"):
        pending.save(batch, batch_tx)
    assert sorted(p.name for p in folder.iterdir()) == [f"{batch_tx.tx_id}.signed", "w1.tx", "w2.tx", "w3.tx"]
    assert all(pending.load(b) == batch_tx for b in ("w1", "w2", "w3"))
    # w3 refused with the others, then sent on its own in a transaction of its own
    alone = Prepared("claims", "cd34" * 16, b"\x02" * 100)
    pending.save("w3", alone)
    assert pending.load("w3") == alone
    pending.remove("w1")
    assert pending.load("w2") == batch_tx and (folder / f"{batch_tx.tx_id}.signed").exists()
    pending.remove("w2")  # the last batch of the shared transaction: its bytes go too
    pending.remove("w3")
    assert list(folder.iterdir()) == []
    # a file written before transactions were kept once (channel first, no shared name) still loads and goes
    (folder / "old.tx").write_text(json.dumps({"channel": "claims", "txId": "ef56", "signed": "0102"}))
    assert pending.load("old") == Prepared("claims", "ef56", b"\x01\x02")
    pending.remove("old")
    assert list(folder.iterdir()) == []
    # one left by a process killed between a batch's removal and its own: an hour later, a prune takes it
    # (and the temporary names of one killed while it wrote or linked)
    pending.save("w4", alone)
    (folder / "w4.tx").unlink()
    os.link(folder / f"{alone.tx_id}.signed", folder / "w5.123-456.link")
    (folder / f"{alone.tx_id}.789-1.tmp").write_text("{")
    pending.prune(24 * 3600)
    assert len(list(folder.iterdir())) == 3
    hour_ago = time.time() - 3601
    for path in folder.iterdir():
        os.utime(path, (hour_ago, hour_ago))
    pending.prune(24 * 3600)
    assert list(folder.iterdir()) == []


def test_answers_to_client_keyed_requests_are_kept_a_day(tmp_path: Path) -> None:
    pending = PendingFiles(tmp_path / "pending")
    pending.remember("old", "batch1")
    pending.remember("new", "batch2")
    day_ago = time.time() - 25 * 3600
    os.utime(tmp_path / "pending" / "old.req", (day_ago, day_ago))
    pending.prune(24 * 3600)
    assert pending.remembered("old") is None and pending.remembered("new") == Remembered("batch2")
