"""The records service over the in-memory ledger: the write path, unknown outcomes, conditional writes, held
resources, verification, and consent-checked disclosure."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fabric_gateway import CommitStatusFailed
from ledger.contracts import Ledger
from ledger.errors import LedgerForbidden
from ledger.fake import FakeLedger
from records import synthetic
from records import validation as fv
from records.errors import NotHeld, NotKeptHere, OutcomeUnknown, PreconditionFailed, Refused
from records.service import Custodian, Records
from records.sharing import Sharing
from tests import fhir_samples as fhir
from tests.unit.conftest import Stores

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


def test_an_unknown_outcome_that_committed_is_kept(world: FakeLedger, hospital: Records) -> None:
    world.fail_next("Records:Register", CommitStatusFailed("commit_status", "UNAVAILABLE", "peer gone"), committed=True)
    written = run(hospital.transaction(entries(visit(3))))
    assert all(hospital.read(w.type, w.id).tx_id for w in written)
    assert not hospital.store.pending_batches()


def test_an_unknown_outcome_that_did_not_commit_stores_nothing_and_says_so(
    world: FakeLedger, hospital: Records
) -> None:
    world.fail_next("Records:Register", CommitStatusFailed("commit_status", "UNAVAILABLE", "peer gone"))
    with pytest.raises(OutcomeUnknown):
        run(hospital.transaction(entries(visit(3))))
    assert hospital.store.search(fv_query("Patient"))[0] == 0
    assert not hospital.store.pending_batches()


def test_keep_writes_a_new_version_only_when_the_content_changes(hospital: Records) -> None:
    resource = {"resourceType": "ClaimResponse", "id": "cr-1", "status": "active", "outcome": "queued"}
    assert run(hospital.keep(resource, "a" * 64))
    assert not run(hospital.keep(resource, "a" * 64))
    assert run(hospital.keep({**resource, "outcome": "complete"}, "a" * 64))
    assert [s.version for s in hospital.history("ClaimResponse", "cr-1")] == [2, 1]


def test_conditional_create_finds_the_existing_resource(hospital: Records) -> None:
    patient = fhir.PATIENTS[0]
    entry = fv.entry({"resource": patient, "request": {"method": "POST", "url": "Patient"}}, 0)
    first = run(hospital.create_unless_exists(entry, fhir.MPI_SYSTEM, "MPI-70931-QX"))
    second = run(hospital.create_unless_exists(entry, fhir.MPI_SYSTEM, "MPI-70931-QX"))
    assert first.created and not second.created
    assert (second.id, second.version) == (first.id, 1)


def test_an_update_with_a_stale_if_match_is_refused(hospital: Records) -> None:
    patient = fhir.PATIENTS[0]
    put = fv.entry({"resource": patient, "request": {"method": "PUT", "url": "Patient/pat-jane"}}, 0)
    run(hospital.update(put, None))
    run(hospital.update(put, 'W/"1"'))
    with pytest.raises(PreconditionFailed):
        run(hospital.update(put, 'W/"1"'))
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
    assert run(hospital.ledger.claim(written.id))["status"] == "submitted"
    assert run(hospital.verify(hospital.read("Claim", written.id))).ok


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
    with pytest.raises(NotHeld):
        run(sharing.disclose("f" * 64, "ClinicMSP", "TREAT"))


def fv_query(rtype: str) -> Any:
    from records.store import Query

    return Query(rtype)
