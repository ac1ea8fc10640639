"""The Python Fabric Gateway client against the real network."""

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
    BlockWaitTimeout,
    CommitError,
    CommitUnknown,
    Contract,
    EndorseError,
    EvaluateError,
    Gateway,
    GatewayError,
    GatewayTimeout,
    SubmitRefused,
    SubmitTimeout,
    Timeouts,
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


def probe(gw: Gateway, channel: str = "claims") -> Contract:
    return gw.network(channel).contract(CC, "Probe")


def test_submit_then_evaluate_round_trip(hospital: Gateway) -> None:
    key = unique("rt")
    submitted = probe(hospital).submit("Write", args=[key, "hello"])
    assert submitted.status.code == "VALID" and submitted.status.block_number > 0
    record = json.loads(probe(hospital).evaluate("Read", args=[key]))
    assert record == {"key": key, "value": "hello", "writer": "HospitalMSP", "txId": submitted.tx_id}


def test_submit_follows_commits_on_the_channels_block_stream(network: Topology) -> None:
    """The peer accepts the filtered-block stream bound to our TLS certificate, so submits need no CommitStatus."""
    with connect.gateway(network, "ClinicOrg") as gw:
        submitted = probe(gw, "providers").submit("Write", args=[unique("stream"), "v"])
        watch = gw._driver._watches["providers"]
        assert watch.running, "the block stream was refused: submits fall back to CommitStatus"
        assert watch.wait_for(submitted.tx_id).status == submitted.status  # delivered by the stream


def test_submit_async_returns_the_tx_id_before_commit(hospital: Gateway) -> None:
    commit = probe(hospital, "providers").submit_async("Write", args=[unique("async"), "v"])
    assert len(commit.tx_id) == 64 and commit.result is not None
    status = commit.status()
    assert status.successful and status.tx_id == commit.tx_id
    assert hospital.network("providers").commit_status(commit.tx_id) == status  # looked up by id alone


def test_chaincode_errors_surface_with_peer_details(hospital: Gateway) -> None:
    with pytest.raises(EndorseError) as err:
        probe(hospital).submit("Write", args=["bad key", "v"])
    assert any('invalid probe key "bad key"' in msg for msg in err.value.chaincode_messages)
    assert {d.msp_id for d in err.value.details} <= {"HospitalMSP", "ClinicMSP", "InsurerMSP"}
    assert all(d.address.startswith("127.0.0.1:") for d in err.value.details)
    assert len(err.value.tx_id) == 64 and err.value.tx_id in str(err.value)
    with pytest.raises(EvaluateError, match="no probe record"):
        probe(hospital).evaluate("Read", args=[unique("missing")])


def test_endorsement_policy_failure_has_its_validation_code(hospital: Gateway) -> None:
    # claims needs a majority (2 of 3 orgs); endorsing by HospitalMSP alone is ordered but invalid.
    with pytest.raises(CommitError) as err:
        probe(hospital).submit("Write", args=[unique("policy"), "v"], endorsing_orgs=["HospitalMSP"])
    assert err.value.code == "ENDORSEMENT_POLICY_FAILURE" and err.value.block_number > 0


def test_mvcc_conflict_has_its_validation_code_and_retry_resolves_it(hospital: Gateway) -> None:
    key = unique("mvcc")
    first = probe(hospital).new_proposal("Increment", args=[key]).endorse()
    second = probe(hospital).new_proposal("Increment", args=[key]).endorse()
    assert first.submit().status().successful
    assert second.submit().status().code == "MVCC_READ_CONFLICT"

    counter = unique("counter")

    def increment() -> bytes:
        return retry_conflicts(lambda: probe(hospital).submit("Increment", args=[counter]).result, attempts=10)

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = sorted(int(r) for r in pool.map(lambda _i: increment(), range(6)))
    assert results == [1, 2, 3, 4, 5, 6]


def test_expired_deadline_raises_timeout(hospital: Gateway) -> None:
    with pytest.raises(GatewayTimeout) as err:
        probe(hospital).evaluate("Read", args=["x"], timeout=0.0001)
    assert isinstance(err.value, TimeoutError)
    commit = probe(hospital).submit_async("Write", args=[unique("deadline"), "v"])
    with pytest.raises(GatewayTimeout) as late:
        commit.status(timeout=0.0001)
    assert isinstance(late.value, CommitUnknown)
    assert commit.status().successful  # it committed anyway


def test_a_transaction_kept_after_an_unknown_outcome_is_resubmitted_unchanged(network: Topology) -> None:
    """A submit whose deadline passes leaves the outcome open. The signed transaction, kept as bytes, is sent again
    as it is: same transaction id, and it commits once whichever send reached the orderer."""
    org = network.org("ClinicOrg")
    identity, signer = load_msp(network.user_dir(org, "User1") / "msp", org.msp_id)
    impatient = Timeouts(submit=0.0001)
    key = unique("resend")
    with Gateway(connect.endpoint(network, org), identity, signer, impatient) as gw:
        transaction = probe(gw, "providers").new_proposal("Write", args=[key, "once"]).endorse()
        with pytest.raises(SubmitTimeout) as err:
            transaction.submit()
        assert isinstance(err.value, CommitUnknown) and err.value.tx_id == transaction.tx_id
        kept = transaction.to_bytes()
    with connect.gateway(network, org) as gw:
        again = gw.transaction_from_bytes(kept)
        assert again.tx_id == transaction.tx_id and again.signed
        status = again.submit().status()
        assert status.successful and status.tx_id == transaction.tx_id
        # Once more, after the commit: the orderer takes it, the peers mark the copy a duplicate, and the status of
        # the transaction id is still that of its first, valid, commit.
        assert gw.transaction_from_bytes(kept).submit().status() == status
        assert gw.network("providers").commit_status(transaction.tx_id) == status
        record = json.loads(probe(gw, "providers").evaluate("Read", args=[key]))
        assert record["txId"] == transaction.tx_id


def test_peers_verify_signatures(hospital: Gateway) -> None:
    assert hospital.signer is not None
    proposal = probe(hospital).new_proposal("Write", args=[unique("tamper"), "v"])
    good = bytearray(hospital.signer(proposal.digest))
    good[-1] ^= 0x01
    with pytest.raises(GatewayError):
        hospital.proposal_from_bytes(proposal.to_bytes(), bytes(good)).endorse()
    stranger = ecdsa_signer(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(GatewayError):
        hospital.proposal_from_bytes(proposal.to_bytes(), stranger(proposal.digest)).endorse()
    # A transaction endorsed properly but signed for ordering by another key is refused too.
    tx = probe(hospital).new_proposal("Write", args=[unique("tamper"), "v"]).endorse()
    with pytest.raises(SubmitRefused):
        hospital.transaction_from_bytes(tx.to_bytes(), stranger(tx.digest)).submit()


def test_offline_signing(network: Topology) -> None:
    org = network.org("ClinicOrg")
    identity, signer = load_msp(network.user_dir(org, "User1") / "msp", org.msp_id)
    with Gateway(connect.endpoint(network, org), identity, signer=None) as gw:
        contract = probe(gw, "providers")
        with pytest.raises(ValueError, match="no signer"):
            contract.submit("Write", args=["k", "v"])
        key = unique("offline")
        unsigned = contract.new_proposal("Write", args=[key, "signed elsewhere"])
        transaction = gw.proposal_from_bytes(unsigned.to_bytes(), signer(unsigned.digest)).endorse()
        commit = gw.transaction_from_bytes(transaction.to_bytes(), signer(transaction.digest)).submit()
        status = gw.commit_from_bytes(commit.to_bytes(), signer(commit.digest)).status()
        assert status.successful and status.tx_id == unsigned.tx_id
    with connect.gateway(network, "HospitalOrg") as reader:
        assert json.loads(probe(reader, "providers").evaluate("Read", args=[key]))["writer"] == "ClinicMSP"


def test_wait_for_block_reads_each_orgs_peer_height(network: Topology, admin: Admin, hospital: Gateway) -> None:
    """What one org committed can be read through another org's own peer once that peer holds the block."""
    key = unique("ryw")
    submitted = probe(hospital).submit("Write", args=[key, "seen"])
    block = submitted.status.block_number
    with connect.gateway(network, "InsurerOrg") as insurer:
        claims = insurer.network("claims")
        claims.wait_for_block(block, orgs=["InsurerMSP", "ClinicMSP", "HospitalMSP"], timeout=10)
        assert channels.block_height(admin, network.org("InsurerOrg"), "claims") > block
        assert json.loads(probe(insurer).evaluate("Read", args=[key], endorsing_orgs=["InsurerMSP"]))["value"] == "seen"
        started = time.monotonic()
        with pytest.raises(BlockWaitTimeout) as err:
            claims.wait_for_block(block + 10_000, timeout=0.5)  # this identity's own org by default
        assert time.monotonic() - started < 3
        assert (err.value.msp_id, err.value.block_number) == ("InsurerMSP", block + 10_000)
        assert block < err.value.height < block + 10_000


def _next_block(network: Topology, admin: Admin) -> int:
    return channels.block_height(admin, network.org("InsurerOrg"), "claims")


def test_200_concurrent_submits_commit_and_each_event_arrives_once(
    network: Topology, admin: Admin, hospital: Gateway
) -> None:
    prefix = unique("burst")
    seen: collections.Counter[str] = collections.Counter()
    with connect.gateway(network, "InsurerOrg") as listener:
        stream = listener.network("claims").chaincode_events(CC, start_block=_next_block(network, admin))

        def collect() -> None:
            for event in stream:
                if event.name == "Probe.Written" and json.loads(event.payload)["key"].startswith(prefix):
                    seen[event.tx_id] += 1

        thread = threading.Thread(target=collect, daemon=True)
        thread.start()
        with ThreadPoolExecutor(max_workers=32) as pool:
            submitted = list(
                pool.map(lambda i: probe(hospital).submit("Write", args=[f"{prefix}-{i}", "v"]), range(200))
            )
        tx_ids = {s.tx_id for s in submitted}
        assert len(tx_ids) == 200
        assert all(s.status.successful for s in submitted)
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
            tx_ids.append(probe(hospital).submit("Write", args=[f"{prefix}-{i}", str(i)]).tx_id)

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
