"""The Python Fabric Gateway client against the real network (issue #3)."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from cryptography.hazmat.primitives.asymmetric import ec

from consortium import connect
from consortium.topology import REPO_ROOT, Topology
from fabric_gateway import (
    CommitFailed,
    EndorsementFailed,
    EvaluateFailed,
    Gateway,
    GatewayError,
    GatewayTimeout,
    SubmitFailed,
    ecdsa_signer,
    load_msp,
    retry_conflicts,
)
from network import channels
from network.admin import Admin

pytestmark = pytest.mark.network
CC = "careledger"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_submit_then_evaluate_round_trip(hospital: Gateway) -> None:
    key = unique("rt")
    submitted = hospital.submit("claims", CC, "Probe:Write", [key, "hello"])
    assert submitted.status is not None and submitted.status.code == "VALID"
    assert submitted.status.block_number > 0
    record = json.loads(hospital.evaluate("claims", CC, "Probe:Read", [key]))
    assert record == {"key": key, "value": "hello", "writer": "HospitalMSP", "txId": submitted.tx_id}


def test_submit_async_returns_the_tx_id_before_commit(hospital: Gateway) -> None:
    pending = hospital.submit_async("providers", CC, "Probe:Write", [unique("async"), "v"])
    assert len(pending.tx_id) == 64
    status = pending.status()
    assert status.successful and status.tx_id == pending.tx_id


def test_chaincode_errors_surface_with_peer_details(hospital: Gateway) -> None:
    with pytest.raises(EndorsementFailed) as err:
        hospital.submit("claims", CC, "Probe:Write", ["bad key", "v"])
    assert any('invalid probe key "bad key"' in msg for msg in err.value.chaincode_messages)
    assert {d.msp_id for d in err.value.details} <= {"HospitalMSP", "ClinicMSP", "InsurerMSP"}
    assert all(d.address.startswith("127.0.0.1:") for d in err.value.details)
    with pytest.raises(EvaluateFailed, match="no probe record"):
        hospital.evaluate("claims", CC, "Probe:Read", [unique("missing")])


def test_endorsement_policy_failure_has_its_validation_code(hospital: Gateway) -> None:
    # claims needs a majority (2 of 3 orgs); endorsing by HospitalMSP alone is ordered but invalid.
    with pytest.raises(CommitFailed) as err:
        hospital.submit("claims", CC, "Probe:Write", [unique("policy"), "v"], endorsing_orgs=["HospitalMSP"])
    assert err.value.code == "ENDORSEMENT_POLICY_FAILURE"


def test_mvcc_conflict_has_its_validation_code_and_retry_resolves_it(hospital: Gateway) -> None:
    key = unique("mvcc")
    first = hospital.endorse(hospital.proposal("claims", CC, "Probe:Increment", [key]))
    second = hospital.endorse(hospital.proposal("claims", CC, "Probe:Increment", [key]))
    assert hospital.commit_status(hospital.send(first)).successful
    status = hospital.commit_status(hospital.send(second))
    assert status.code == "MVCC_READ_CONFLICT"

    counter = unique("counter")

    def increment() -> bytes:
        return retry_conflicts(lambda: hospital.submit("claims", CC, "Probe:Increment", [counter]).result, attempts=10)

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = sorted(int(r) for r in pool.map(lambda _i: increment(), range(6)))
    assert results == [1, 2, 3, 4, 5, 6]


def test_expired_deadline_raises_timeout(hospital: Gateway) -> None:
    with pytest.raises(GatewayTimeout) as err:
        hospital.evaluate("claims", CC, "Probe:Read", ["x"], timeout=0.0001)
    assert isinstance(err.value, TimeoutError)
    pending = hospital.submit_async("claims", CC, "Probe:Write", [unique("deadline"), "v"])
    with pytest.raises(GatewayTimeout):
        pending.status(timeout=0.0001)
    assert pending.status().successful  # it committed anyway


def test_peers_verify_signatures(hospital: Gateway) -> None:
    proposal = hospital.proposal("claims", CC, "Probe:Write", [unique("tamper"), "v"])
    assert hospital.signer is not None
    good = bytearray(hospital.signer(proposal.digest))
    good[-1] ^= 0x01
    with pytest.raises(GatewayError):
        hospital.endorse(proposal, signature=bytes(good))
    stranger = ecdsa_signer(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(GatewayError):
        hospital.endorse(proposal, signature=stranger(proposal.digest))
    # A transaction endorsed properly but signed for ordering by another key is refused too.
    tx = hospital.endorse(hospital.proposal("claims", CC, "Probe:Write", [unique("tamper"), "v"]))
    with pytest.raises(SubmitFailed):
        hospital.send(tx, signature=stranger(tx.digest))


def test_offline_signing(network: Topology) -> None:
    org = network.org("ClinicOrg")
    identity, signer = load_msp(network.user_dir(org, "User1") / "msp", org.msp_id)
    with Gateway(connect.endpoint(network, org), identity, signer=None) as gw:
        with pytest.raises(ValueError, match="no signer"):
            gw.submit("providers", CC, "Probe:Write", ["k", "v"])
        key = unique("offline")
        proposal = gw.proposal("providers", CC, "Probe:Write", [key, "signed elsewhere"])
        tx = gw.endorse(proposal, signature=signer(proposal.digest))
        request = gw.send(tx, signature=signer(tx.digest))
        status = gw.commit_status(request, signature=signer(request.digest))
        assert status.successful
    with connect.gateway(network, "HospitalOrg") as reader:
        assert json.loads(reader.evaluate("providers", CC, "Probe:Read", [key]))["writer"] == "ClinicMSP"


def _next_block(network: Topology, admin: Admin) -> int:
    return channels.block_height(admin, network.org("InsurerOrg"), "claims")


def test_200_concurrent_submits_commit_and_each_event_arrives_once(
    network: Topology, admin: Admin, hospital: Gateway
) -> None:
    prefix = unique("burst")
    seen: collections.Counter[str] = collections.Counter()
    with connect.gateway(network, "InsurerOrg") as listener:
        stream = listener.chaincode_events("claims", CC, start_block=_next_block(network, admin))

        def collect() -> None:
            for event in stream:
                if event.name == "Probe.Written" and json.loads(event.payload)["key"].startswith(prefix):
                    seen[event.tx_id] += 1

        thread = threading.Thread(target=collect, daemon=True)
        thread.start()
        with ThreadPoolExecutor(max_workers=32) as pool:
            submitted = list(
                pool.map(lambda i: hospital.submit("claims", CC, "Probe:Write", [f"{prefix}-{i}", "v"]), range(200))
            )
        tx_ids = {s.tx_id for s in submitted}
        assert len(tx_ids) == 200
        assert all(s.status is not None and s.status.successful for s in submitted)
        deadline = time.monotonic() + 30
        while set(seen) != tx_ids and time.monotonic() < deadline:
            time.sleep(0.1)
        stream.close()
        thread.join(5)
    assert set(seen) == tx_ids
    assert max(seen.values()) == 1


def test_listener_killed_half_way_resumes_from_its_checkpoint(
    network: Topology, admin: Admin, hospital: Gateway, redis_client: redis.Redis
) -> None:
    name, prefix = unique("listener"), unique("crash")
    from fabric_gateway.checkpoint import Checkpoint, RedisCheckpointer

    RedisCheckpointer(redis_client, name).save(Checkpoint(_next_block(network, admin), ""))
    handled_key = f"test:handled:{name}"
    argv = [
        sys.executable, "-m", "tests.integration.event_listener",
        "--home", str(network.home), "--port-base", str(network.port_base), "--name", name, "--prefix", prefix,
    ]  # fmt: skip

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})

    listener = start()
    tx_ids: list[str] = []

    def produce() -> None:
        for i in range(80):
            tx_ids.append(hospital.submit("claims", CC, "Probe:Write", [f"{prefix}-{i}", str(i)]).tx_id)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        deadline = time.monotonic() + 60
        while redis_client.llen(handled_key) < 20:
            assert time.monotonic() < deadline, "listener handled nothing"
            assert listener.poll() is None, "listener died"
            time.sleep(0.05)
        listener.send_signal(signal.SIGKILL)
        listener.wait()
        killed_at = redis_client.llen(handled_key)
        time.sleep(1)  # events keep committing while no listener runs
        listener = start()
        producer.join(120)
        deadline = time.monotonic() + 60
        while redis_client.llen(handled_key) < len(tx_ids) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        listener.kill()
        listener.wait()
    handled = [h.decode() for h in redis_client.lrange(handled_key, 0, -1)]
    assert 20 <= killed_at < 80
    assert len(handled) == len(set(handled)), "an event was handled twice"
    assert set(handled) == set(tx_ids), "an event was missed"
