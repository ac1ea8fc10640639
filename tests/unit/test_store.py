"""The encrypted store on its own: keys, two-phase writes, tampering, erasure."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from records.store import PatientErased, Query, Row, Store, Tampered

PATIENT = "a" * 64


def row(rid: str, version: int = 1, identifiers: tuple[tuple[str, str], ...] = ()) -> Row:
    return Row("Observation", rid, version, PATIENT, f"2026-01-0{version}T00:00:00.000000Z", b'{"x":1}', identifiers)


def keys_saved(path: Path) -> int:
    return int(sqlite3.connect(path).execute("SELECT COUNT(*) FROM patient_keys").fetchone()[0])


def test_a_new_patients_key_is_saved_only_with_their_first_rows(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite", b"m" * 32)
    first = store.digest_key(PATIENT)
    assert store.digest_key(PATIENT) == first  # stable before it is saved
    assert keys_saved(tmp_path / "s.sqlite") == 0  # a refused request leaves nothing behind
    store.stage("b1", [row("o1")])
    assert keys_saved(tmp_path / "s.sqlite") == 1
    assert store.digest_key(PATIENT) == first  # the saved key is the one the digests used


def test_staged_rows_are_invisible_until_committed_and_gone_when_discarded(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite", b"m" * 32)
    store.stage("b1", [row("o1", identifiers=(("urn:x", "1"),))])
    assert store.read("Observation", "o1") is None and store.with_identifier("Observation", "urn:x", "1") == []
    store.commit("b1", "tx1")
    assert store.read("Observation", "o1") is not None
    assert store.with_identifier("Observation", "urn:x", "1") == [("o1", 1)]
    store.stage("b2", [row("o2", identifiers=(("urn:x", "2"),))])
    store.discard("b2")
    assert store.pending_batches() == [] and store.with_identifier("Observation", "urn:x", "2") == []
    total, page = store.search(Query("Observation", patient=PATIENT))
    assert total == 1 and [s.id for s in page] == ["o1"]


def test_tampering_and_erasure(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = Store(path, b"m" * 32)
    store.stage("b1", [row("o1")])
    store.commit("b1", "tx1")
    db = sqlite3.connect(path)
    (ct,) = db.execute("SELECT ciphertext FROM resources").fetchone()
    db.execute("UPDATE resources SET ciphertext = ?", (bytes([ct[0] ^ 1]) + ct[1:],))
    db.commit()
    with pytest.raises(Tampered):
        store.read("Observation", "o1")
    assert store.erase(PATIENT, "2026-01-09T00:00:00Z")
    with pytest.raises(PatientErased):
        store.read("Observation", "o1")
    with pytest.raises(PatientErased):
        store.digest_key(PATIENT)
