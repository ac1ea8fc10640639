"""Several processes of one org (gateways, workers) writing the same store at once, on SQLite and on PostgreSQL:
a version is taken once, and a new patient gets one data key however many processes write their first rows."""

from __future__ import annotations

import multiprocessing
import queue
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from records.store import Row, Store, VersionTaken
from tests.stores import Stores

KEY = b"p" * 32
PROCESSES = 3
NEW_PATIENTS = [f"{i:064x}" for i in range(1, 13)]
SHARED_PATIENT = "f" * 64
VERSIONS_EACH = 15


def _at(i: int) -> str:
    return (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(milliseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_concurrently(location: str, name: str, barrier: Any, out: Any) -> None:
    """One process: the first rows of each new patient in step with the others (as the records service writes:
    digest key first, then stage, then commit), then next versions of one shared resource until it has won its
    share of them."""
    store = Store(location, KEY)
    digest_keys: dict[str, bytes] = {}
    for j, patient in enumerate(NEW_PATIENTS):
        barrier.wait()
        digest_keys[patient] = store.digest_key(patient)
        batch = f"{name}-{j}"
        store.stage(batch, [Row("Observation", f"{name}-{j}", 1, patient, _at(j), b'{"n":1}')])
        store.commit(batch, f"tx-{batch}")
    barrier.wait()
    won = lost = 0
    while won < VERSIONS_EACH:
        head = store.head("Observation", "shared")
        version = head[0] + 1 if head else 1
        store.digest_key(SHARED_PATIENT)
        batch = uuid.uuid4().hex
        try:
            store.stage(batch, [Row("Observation", "shared", version, SHARED_PATIENT, _at(version), b'{"v":1}')])
        except VersionTaken:
            lost += 1
            continue
        store.commit(batch, f"tx-{batch}")
        won += 1
    store.close()
    out.put((name, digest_keys, won, lost))


def test_processes_writing_at_once_take_each_version_once_and_make_one_key_per_patient(stores: Stores) -> None:
    location = stores.location()
    Store(location, KEY).close()  # the schema, made once beforehand as `careledger network up` and a first start do
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES, timeout=120)
    out = ctx.Queue()
    procs = [ctx.Process(target=write_concurrently, args=(location, f"w{i}", barrier, out)) for i in range(PROCESSES)]
    for p in procs:
        p.start()
    results = []
    for _ in procs:
        try:
            results.append(out.get(timeout=300))
        except queue.Empty:
            break
    for p in procs:
        p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0] * PROCESSES, "a writer failed (its traceback is above)"

    store = stores.open(KEY)
    # One key per patient, the one every process made its digests with.
    assert stores.sql("SELECT COUNT(*) FROM patient_keys")[0][0] == len(NEW_PATIENTS) + 1
    for _, digest_keys, _, _ in results:
        assert digest_keys == {p: store.digest_key(p) for p in NEW_PATIENTS}
    for patient in NEW_PATIENTS:
        assert len(store.patient_resources(patient)) == PROCESSES  # every row decrypts with the saved key
    # Every version exactly once, no gaps, each won by one process.
    versions = [s.version for s in store.history("Observation", "shared")]
    assert versions == list(range(PROCESSES * VERSIONS_EACH, 0, -1))
    assert sum(won for _, _, won, _ in results) == PROCESSES * VERSIONS_EACH
    assert store.pending_batches() == []
    store.close()
