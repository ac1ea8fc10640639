"""The encrypted store on its own, on SQLite and on PostgreSQL: keys, two-phase writes, tampering, erasure, paging."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from consortium import topology as topo
from records.settings import store_url
from records.store import Cursor, OutboxClaim, PatientErased, Query, Row, Store, Tampered, VersionTaken
from tests.stores import Stores

PATIENT = "a" * 64
BASE = datetime(2026, 1, 1, tzinfo=UTC)


def at(i: int) -> str:
    return (BASE + timedelta(milliseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def row(
    rid: str,
    version: int = 1,
    identifiers: tuple[tuple[str, str], ...] = (),
    when: str | None = None,
    rtype: str = "Observation",
    patient: str = PATIENT,
) -> Row:
    return Row(rtype, rid, version, patient, when or at(version), b'{"x":1}', identifiers)


def keep(store: Store, batch: str, rows: list[Row]) -> None:
    store.stage(batch, rows)
    store.commit(batch, f"tx-{batch}")


def keys_saved(stores: Stores) -> int:
    return int(stores.sql("SELECT COUNT(*) FROM patient_keys")[0][0])


def test_a_patient_has_one_key_and_a_refused_first_write_leaves_none(stores: Stores) -> None:
    gateway, worker = stores.open(), stores.open()  # two processes of the org
    first = gateway.digest_key(PATIENT)
    assert worker.digest_key(PATIENT) == first  # saved at once, so every process uses the same key
    assert keys_saved(stores) == 1
    gateway.stage("b1", [row("o1")])
    gateway.discard("b1")  # the ledger refused the patient's first write
    assert keys_saved(stores) == 0
    second = gateway.digest_key(PATIENT)
    keep(gateway, "b2", [row("o2")])
    assert keys_saved(stores) == 1
    assert worker.digest_key(PATIENT) == second  # the saved key is the one the digests used


def test_a_write_prepared_while_another_was_refused_keeps_the_key_of_its_digests(stores: Stores) -> None:
    one, two = stores.open(), stores.open()
    used = two.digest_key(PATIENT)  # `two` prepares a write: its digests use this key
    one.digest_key(PATIENT)
    one.stage("b1", [row("o1")])
    one.discard("b1")  # `one`'s write is refused: the key without rows is dropped
    keep(two, "b2", [row("o2")])  # `two` saves the key its digests used again
    assert one.digest_key(PATIENT) == used
    assert one.read("Observation", "o2") is not None


def test_a_write_whose_key_was_replaced_meanwhile_is_prepared_again(stores: Stores) -> None:
    one, two, three = stores.open(), stores.open(), stores.open()
    two.digest_key(PATIENT)
    one.digest_key(PATIENT)
    one.stage("b1", [row("o1")])
    one.discard("b1")
    three.digest_key(PATIENT)  # a new key
    with pytest.raises(VersionTaken):
        two.stage("b2", [row("o2")])  # its digests were made with the dropped key
    assert two.digest_key(PATIENT) == three.digest_key(PATIENT)
    keep(two, "b2", [row("o2")])
    assert keys_saved(stores) == 1


def test_staged_rows_are_invisible_until_committed_and_gone_when_discarded(stores: Stores) -> None:
    store = stores.open()
    store.stage("b1", [row("o1", identifiers=(("urn:x", "1"),))])
    assert store.read("Observation", "o1") is None and store.with_identifier("Observation", "urn:x", "1") == []
    assert store.pending_batches() == ["b1"]
    store.commit("b1", "tx1")
    assert store.read("Observation", "o1") is not None
    assert store.with_identifier("Observation", "urn:x", "1") == [("o1", 1)]
    store.stage("b2", [row("o2", identifiers=(("urn:x", "2"),))])
    store.discard("b2")
    assert store.pending_batches() == [] and store.with_identifier("Observation", "urn:x", "2") == []
    total, page = store.search(Query("Observation", patient=PATIENT))
    assert total == 1 and [s.id for s in page] == ["o1"]


def test_a_version_is_taken_once_and_a_batch_is_all_or_none(stores: Stores) -> None:
    one, two = stores.open(), stores.open()
    one.stage("b1", [row("o1")])
    with pytest.raises(VersionTaken):
        two.stage("b2", [row("o1")])  # pending elsewhere
    one.commit("b1", "tx1")
    with pytest.raises(VersionTaken):
        two.stage("b3", [row("o9"), row("o1")])
    assert two.batch_rows("b3") == [] and two.read("Observation", "o9") is None
    keep(two, "b4", [row("o1", 2), row("o9")])
    assert [s.version for s in one.history("Observation", "o1")] == [2, 1]


def test_listings_show_the_newest_committed_version(stores: Stores) -> None:
    store = stores.open()
    keep(store, "b1", [row("o1", 1, (("urn:x", "1"),)), row("o2", 1)])
    keep(store, "b2", [row("o1", 2, (("urn:x", "1"),))])
    store.stage("b3", [row("o1", 3)])  # pending: not listed yet
    total, page = store.search(Query("Observation", patient=PATIENT))
    assert total == 2 and [(s.id, s.version) for s in page] == [("o2", 1), ("o1", 2)]
    assert [(s.id, s.version) for s in store.patient_resources(PATIENT)] == [("o2", 1), ("o1", 2)]
    assert store.with_identifier("Observation", "urn:x", "1") == [("o1", 2)]
    assert store.head("Observation", "o1") == (2, PATIENT)
    store.commit("b3", "tx3")
    assert [(s.id, s.version) for s in store.search(Query("Observation"))[1]] == [("o2", 1), ("o1", 3)]
    keep(store, "b4", [row("o3", 1), row("o3", 2)])  # two versions in one batch: the later one is the newest
    keep(store, "b5", [row("o2", 2, when=at(0))])  # a new version stamped earlier still replaces the old one
    assert [(s.id, s.version) for s in store.search(Query("Observation"))[1]] == [("o2", 2), ("o3", 2), ("o1", 3)]


def test_tampering_and_erasure(stores: Stores) -> None:
    store = stores.open()
    keep(store, "b1", [row("o1", identifiers=(("urn:x", "1"),))])
    (ct,) = stores.sql("SELECT ciphertext FROM resources")[0]
    ct = bytes(ct)
    stores.sql("UPDATE resources SET ciphertext = ?", (bytes([ct[0] ^ 1]) + ct[1:],))
    with pytest.raises(Tampered):
        store.read("Observation", "o1")
    assert store.erase(PATIENT, "2026-01-09T00:00:00Z")
    assert store.is_erased(PATIENT)
    with pytest.raises(PatientErased):
        store.read("Observation", "o1")
    with pytest.raises(PatientErased):
        store.digest_key(PATIENT)
    with pytest.raises(PatientErased):
        store.stage("b2", [row("o2")])
    assert store.with_identifier("Observation", "urn:x", "1") == []
    assert not store.erase(PATIENT, "2026-01-10T00:00:00Z")


def test_an_erased_patient_drops_out_of_every_listing_and_the_others_stay(stores: Stores) -> None:
    store = stores.open()
    other = "b" * 64
    keep(store, "b1", [row("o1"), row("o2", when=at(3))])
    keep(store, "b2", [row("x1", patient=other, when=at(2))])
    assert store.erase(PATIENT, "2026-01-09T00:00:00Z")
    total, found = store.search(Query("Observation"))
    assert (total, [s.id for s in found]) == (1, ["x1"])  # a page holding an erased row would not open
    assert store.search(Query("Observation", patient=PATIENT)) == (0, [])
    assert store.patient_resources(PATIENT) == [] and store.patient_page(PATIENT, 10).items == []
    with pytest.raises(PatientErased):  # a direct read still says what happened
        store.read("Observation", "o1")


def test_pending_batches_can_leave_out_those_just_staged(stores: Stores) -> None:
    store = stores.open()
    store.stage("b1", [row("o1")])
    assert store.pending_batches() == ["b1"]
    assert store.pending_batches(older_than_s=60) == []  # another process may be about to settle it
    stores.sql("UPDATE resources SET staged = staged - 120")
    assert store.pending_batches(older_than_s=60) == ["b1"]


def test_pages_hold_every_resource_once_while_resources_are_added(stores: Stores) -> None:
    store = stores.open()
    # 300 resources, ten at each instant, so the id decides within an instant.
    keep(store, "b0", [row(f"o{i:03d}", when=at(i // 10)) for i in range(300)])
    seen: list[str] = []
    added: list[str] = []
    query = Query("Observation", patient=PATIENT, count=37)
    while True:
        page = store.search_page(query)
        assert page.total == 300 + len(added)
        seen += [s.id for s in page.items]
        if page.next is None:
            break
        new = f"n{len(added):03d}"
        keep(store, new, [row(new, when=at(1000 + len(added)))])  # a resource created meanwhile
        added.append(new)
        query = Query("Observation", patient=PATIENT, count=37, after=Cursor.decode(page.next.encode()))
    assert len(seen) == len(set(seen))
    assert sorted(seen) == sorted([f"o{i:03d}" for i in range(300)] + added)
    assert seen[:300] == [f"o{i:03d}" for i in range(300)]


def test_a_patients_record_pages_across_types(stores: Stores) -> None:
    store = stores.open()
    other = "b" * 64
    rows = [row(f"x{i:03d}", when=at(i // 3), rtype=t) for i in range(120) for t in ("Observation", "Condition")]
    keep(store, "b0", [*rows, row("elsewhere", patient=other)])
    seen: list[tuple[str, str]] = []
    after = None
    while True:
        page = store.patient_page(PATIENT, 50, after)
        assert page.total == 240
        seen += [(s.type, s.id) for s in page.items]
        if page.next is None:
            break
        after = page.next
    assert len(seen) == len(set(seen)) == 240
    assert [s.id for s in store.patient_resources(other)] == ["elsewhere"]


def test_a_page_costs_the_same_at_the_start_and_deep_in_a_large_record(stores: Stores) -> None:
    """One patient with 5,000 resources, 50 a page: the 35th and the last page take about as long as the first."""
    store = stores.open()
    for b in range(10):
        keep(store, f"b{b}", [row(f"o{b}-{i:03d}", when=at(b * 500 + i)) for i in range(500)])
    cursors: list[Cursor | None] = [None]
    while (
        nxt := store.search_page(Query("Observation", patient=PATIENT, count=50, after=cursors[-1])).next
    ) is not None:
        cursors.append(nxt)
    assert len(cursors) == 100

    def page_time(after: Cursor | None) -> float:
        started = time.perf_counter()
        page = store.search_page(Query("Observation", patient=PATIENT, count=50, after=after))
        assert len(page.items) == 50 and page.total == 5000
        return time.perf_counter() - started

    # Interleaved, and the best of several tries: the machine's other load falls on every page alike.
    timings: dict[int, list[float]] = {0: [], 34: [], 99: []}
    for _ in range(9):
        for n, times in timings.items():
            times.append(page_time(cursors[n]))
    first, deep, last = (min(times) for times in timings.values())
    assert deep < 2 * first + 0.005 and last < 2 * first + 0.005, (first, deep, last)


@pytest.mark.parametrize("stores", ["sqlite"], indirect=True)
def test_a_store_made_before_cursor_paging_is_brought_up_to_date(stores: Stores) -> None:
    store = stores.open()
    keep(store, "b1", [row("o1"), row("o2")])
    keep(store, "b2", [row("o1", 2)])
    store.close()
    for index in ("newest_by_type", "newest_by_patient_type", "newest_by_patient", "resources_pending"):
        stores.sql(f"DROP INDEX {index}")
    for table, column in (("resources", "newest"), ("resources", "staged"), ("patient_keys", "created")):
        stores.sql(f"ALTER TABLE {table} DROP COLUMN {column}")
    store = stores.open()
    assert [(s.id, s.version) for s in store.search(Query("Observation"))[1]] == [("o2", 1), ("o1", 2)]
    assert keys_saved(stores) == 1


def test_the_store_url_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    t = topo.load(home=tmp_path, port_base=40000)
    hospital = t.org("HospitalOrg")
    for name in ("CARELEDGER_STORE_URL", "CARELEDGER_STORE"):
        monkeypatch.delenv(name, raising=False)
    assert store_url(t, hospital) == f"sqlite://{tmp_path}/orgs/HospitalOrg/gateway/store.sqlite"
    monkeypatch.setenv("CARELEDGER_STORE", str(tmp_path / "elsewhere.sqlite"))
    assert store_url(t, hospital) == f"sqlite://{tmp_path}/elsewhere.sqlite"
    monkeypatch.setenv("CARELEDGER_STORE_URL", t.postgres_url("{org}"))  # wins over CARELEDGER_STORE
    assert (
        store_url(t, hospital) == f"postgresql://careledger@127.0.0.1:40301/hospitalorg?passfile={t.postgres_passfile}"
    )
    with pytest.raises(ValueError):
        Store("mysql://somewhere/db", b"m" * 32)


def test_rows_kept_here_only_are_staged_and_committed_in_one_transaction(stores: Stores) -> None:
    """A write no ledger transaction stands behind commits with its staging: nothing is left pending to hold the
    version, so a process killed in between cannot block that version for good."""
    store = stores.open()
    store.stage("b1", [row("cr1")], committed=True)
    assert store.pending_batches() == []
    assert store.read("Observation", "cr1") is not None


def test_writes_of_one_process_stage_with_the_keys_their_own_digests_were_made_with(stores: Stores) -> None:
    """Two writes of one process (one store) that stage in threads: each takes the key its digests were made with
    as soon as it has made them, so a later write's key is never mistaken for an earlier one's."""
    store = stores.open()
    store.digest_key(PATIENT)  # the first write's digests use this key
    first = store.issued([PATIENT])
    store.stage("b0", [row("o0")], issued=store.issued([PATIENT]) or None)  # another write, refused: key dropped
    store.discard("b0")
    store.digest_key(PATIENT)  # a third write makes its digests with a new key
    with pytest.raises(VersionTaken):  # the first write's digests were made with the dropped key: prepared again
        store.stage("b1", [row("o1")], issued=first)
    store.stage("b3", [row("o3")])  # the third write stages with the key it was handed
    store.commit("b3", "tx")
    assert store.read("Observation", "o3") is not None


def taken(store: Store, ready: threading.Barrier) -> list[str]:
    ready.wait()
    return [c.key for c in store.claims_due(6, 60)]


def test_processes_taking_due_claims_at_the_same_moment_take_each_claim_once(stores: Stores) -> None:
    """Two gateway processes (two stores on one database) drain the claim outbox at once: each claim is taken by one
    of them (PostgreSQL's writers would otherwise both read the same due rows before either marks them taken)."""
    first = stores.open()
    second = Store(stores.location(), b"m" * 32)
    try:
        for n in range(20):
            claims = [OutboxClaim(f"k{n}-{i}", f"c{n}-{i}", PATIENT, "d" * 64) for i in range(10)]
            rows = [row(f"c{n}-{i}", rtype="Claim") for i in range(10)]
            first.stage(f"b{n}", rows, claims)
            first.commit(f"b{n}", f"tx-{n}")
            ready = threading.Barrier(2)
            with ThreadPoolExecutor(2) as pool:
                one, two = pool.map(taken, (first, second), (ready, ready))
            assert not set(one) & set(two), (n, one, two)
            assert len(one) + len(two) == 10, (n, one, two)  # 6 and 4: what one takes the other finds not due
            rest = first.claims_due(100, 60)
            assert sorted(one + two + [c.key for c in rest]) == sorted(c.key for c in claims)
            for key in one + two + [c.key for c in rest]:
                first.claim_settled(key, "submitted", "tx")
    finally:
        second.close()
        first.close()
