"""A new patient's data key through the records service, on SQLite and on PostgreSQL: saved before the first
digests, gone again when the ledger refuses the patient's first write or does not have it after an unknown outcome."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from fabric_gateway import CommitStatusUnavailable
from ledger.contracts import Ledger
from ledger.errors import LedgerForbidden
from ledger.fake import FakeLedger
from records import synthetic
from records import validation as fv
from records.errors import StillPending
from records.service import Custodian, Records
from tests import fhir_samples as fhir
from tests.stores import Stores


@pytest.fixture
def hospital(stores: Stores) -> Iterator[tuple[FakeLedger, Records]]:
    world = FakeLedger({"HospitalMSP": "provider"})
    records = Records(
        stores.open(b"h" * 32),
        Ledger(world.member("HospitalMSP")),
        fhir.CONSORTIUM_KEY,
        fhir.MPI_SYSTEM,
        Custodian("HospitalMSP", "provider"),
    )
    yield world, records
    records.store.close()


def visit(seed: int) -> list[fv.Entry]:
    bundle = synthetic.Synthetic.seeded(seed).transaction(3)
    return fv.transaction_entries(fv.envelope(json.dumps(bundle).encode()))


def keys(stores: Stores) -> int:
    return int(stores.sql("SELECT COUNT(*) FROM patient_keys")[0][0])


def test_a_refused_or_unregistered_first_write_leaves_no_key(
    stores: Stores, hospital: tuple[FakeLedger, Records]
) -> None:
    world, records = hospital
    world.fail_next("Records:Register", LedgerForbidden("refused"))
    with pytest.raises(LedgerForbidden):
        asyncio.run(records.transaction(visit(1)))
    assert keys(stores) == 0
    world.fail_next("Records:Register", CommitStatusUnavailable("UNAVAILABLE", "peer gone"))
    with pytest.raises(StillPending):
        asyncio.run(records.transaction(visit(2)))
    assert keys(stores) == 1  # the write may still commit: its patient's key stays while it is pending
    world.invalidate_pending()
    assert asyncio.run(records.reconcile_pending()) == {"committed": 0, "discarded": 1, "unknown": 0}
    assert keys(stores) == 0  # it did not commit: nothing of it is left
    written = asyncio.run(records.transaction(visit(3)))
    assert keys(stores) == 1
    assert all(asyncio.run(records.verify(records.read(w.type, w.id))).ok for w in written)
