"""The Gateway clients, blocking and asyncio, against a fake Gateway stub (tests/unit/fake_gateway.py) and, for the
gRPC paths themselves, against that fake served by an in-process gRPC server."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import grpc.aio
import pytest
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2

from fabric_gateway import (
    AsyncGateway,
    BlockWaitTimeout,
    Checkpoint,
    CommitError,
    CommitStatusTimeout,
    CommitStatusUnavailable,
    CommitUnknown,
    EndorseError,
    EndorseTimeout,
    EvaluateError,
    EventsUnavailable,
    Gateway,
    GatewayTimeout,
    GatewayUnavailable,
    NotCommitted,
    SubmitRefused,
    SubmitTimeout,
    SubmitUnavailable,
    Timeouts,
)
from tests.unit.fake_gateway import AsyncFakeGateway, FakeGateway, FakeRpcError, event

PEERS = (("peer0.hospital:7051", "HospitalMSP", "chaincode response 500, NOT_FOUND: no claim c9"),)


@pytest.fixture
def fake() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def gw(fake: FakeGateway) -> Gateway:
    return Gateway(fake, fake.identity, fake.signer())


def test_evaluate_signs_and_names_the_contract(fake: FakeGateway, gw: Gateway) -> None:
    contract = gw.network("claims").contract("careledger", "Claims")
    assert contract.evaluate("Get", args=["c1", b"\x00"], endorsing_orgs=["InsurerMSP"]) == b"result of Claims:Get"
    call = fake.calls[-1]
    assert (call.args, call.channel, call.orgs) == ([b"Claims:Get", b"c1", b"\x00"], "claims", ["InsurerMSP"])
    assert len(call.tx_id) == 64


def test_submit_endorses_orders_and_waits_for_the_commit(fake: FakeGateway, gw: Gateway) -> None:
    fake.chaincode = lambda call: json.dumps({"transient": call.transient["claim"].decode()}).encode()
    submitted = (
        gw.network("claims").contract("careledger").submit("Claims:Submit", args=["{}"], transient={"claim": b"lines"})
    )
    assert json.loads(submitted.result) == {"transient": "lines"}
    assert submitted.status.successful and submitted.status.block_number == 1
    assert [s.transaction_id for s in fake.submitted] == [submitted.tx_id] == [fake.calls[-1].tx_id]
    # The envelope sent for ordering is the one the Gateway prepared, signed (the fake checks every signature).
    payload = common_pb2.Payload.FromString(fake.submitted[0].prepared_transaction.payload)
    assert common_pb2.ChannelHeader.FromString(payload.header.channel_header).tx_id == submitted.tx_id


def test_an_invalid_transaction_raises_commit_error_with_its_block(fake: FakeGateway, gw: Gateway) -> None:
    fake.validation_code = "MVCC_READ_CONFLICT"
    contract = gw.network("claims").contract("careledger")
    with pytest.raises(CommitError) as err:
        contract.submit("Probe:Increment", args=["k"])
    assert (err.value.code, err.value.block_number) == ("MVCC_READ_CONFLICT", 1)
    assert err.value.tx_id == fake.submitted[0].transaction_id
    assert isinstance(err.value, NotCommitted)
    # submit_async leaves judging the status to the caller
    commit = contract.submit_async("Probe:Increment", args=["k"])
    assert commit.result == b"result of Probe:Increment"
    status = commit.status()
    assert (status.tx_id, status.code, status.successful) == (commit.tx_id, "MVCC_READ_CONFLICT", False)


def test_offline_signing_step_by_step(fake: FakeGateway) -> None:
    sign = fake.signer()
    gw = Gateway(fake, fake.identity)  # no signer: every value is signed elsewhere
    contract = gw.network("providers").contract("careledger")
    with pytest.raises(ValueError, match="no signer"):
        contract.submit("Probe:Write", args=["k", "v"])
    unsigned = contract.new_proposal("Probe:Write", args=["k", "v"], endorsing_orgs=["HospitalMSP", "ClinicMSP"])
    assert not unsigned.signed
    proposal = gw.proposal_from_bytes(unsigned.to_bytes(), sign(unsigned.digest))
    assert (proposal.tx_id, proposal.signed) == (unsigned.tx_id, True)
    unsigned_tx = proposal.endorse()
    assert fake.calls[-1].orgs == ["HospitalMSP", "ClinicMSP"]
    transaction = gw.transaction_from_bytes(unsigned_tx.to_bytes(), sign(unsigned_tx.digest))
    assert transaction.result == b"result of Probe:Write"
    unsigned_commit = transaction.submit()
    commit = gw.commit_from_bytes(unsigned_commit.to_bytes(), sign(unsigned_commit.digest))
    assert commit.status().successful
    assert commit.tx_id == proposal.tx_id == fake.submitted[0].transaction_id


def test_serialised_values_are_the_official_clients_messages(gw: Gateway) -> None:
    proposal = gw.network("claims").contract("careledger").new_proposal("Probe:Write", endorsing_orgs=["ClinicMSP"])
    proposed = gateway_pb2.ProposedTransaction.FromString(proposal.to_bytes())
    assert (proposed.transaction_id, list(proposed.endorsing_organizations)) == (proposal.tx_id, ["ClinicMSP"])
    assert proposal.digest == hashlib.sha256(proposed.proposal.proposal_bytes).digest()
    transaction = proposal.endorse()
    prepared = gateway_pb2.PreparedTransaction.FromString(transaction.to_bytes())
    assert prepared.transaction_id == transaction.tx_id and prepared.envelope.signature == b""
    assert transaction.digest == hashlib.sha256(prepared.envelope.payload).digest()
    commit = transaction.submit()
    signed = gateway_pb2.SignedCommitStatusRequest.FromString(commit.to_bytes())
    request = gateway_pb2.CommitStatusRequest.FromString(signed.request)
    assert (request.transaction_id, request.channel_id, request.identity) == (
        commit.tx_id,
        "claims",
        gw.identity.creator,
    )


def test_a_kept_transaction_is_resubmitted_unchanged_and_commits_once(fake: FakeGateway, gw: Gateway) -> None:
    contract = gw.network("claims").contract("careledger")
    transaction = contract.new_proposal("Probe:Write", args=["k", "v"]).endorse()
    fake.fail["submit"] = FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "submit timeout expired")
    with pytest.raises(CommitUnknown):
        transaction.submit()
    kept = transaction.to_bytes()  # signed by the failed submit
    del fake.fail["submit"]
    first = gw.transaction_from_bytes(kept).submit().status()
    again = gw.transaction_from_bytes(kept).submit().status()
    assert first == again and first.successful and first.tx_id == transaction.tx_id
    assert len({s.SerializeToString() for s in fake.submitted}) == 1  # the same bytes each time
    assert gw.network("claims").commit_status(transaction.tx_id) == first


@pytest.mark.parametrize(
    ("stage", "code", "raised", "unknown"),
    [
        ("endorse", grpc.StatusCode.ABORTED, EndorseError, False),
        ("endorse", grpc.StatusCode.DEADLINE_EXCEEDED, EndorseTimeout, False),
        ("submit", grpc.StatusCode.ABORTED, SubmitRefused, False),
        ("submit", grpc.StatusCode.DEADLINE_EXCEEDED, SubmitTimeout, True),
        ("submit", grpc.StatusCode.UNAVAILABLE, SubmitUnavailable, True),
        ("submit", grpc.StatusCode.INTERNAL, SubmitUnavailable, True),
        ("commit_status", grpc.StatusCode.DEADLINE_EXCEEDED, CommitStatusTimeout, True),
        ("commit_status", grpc.StatusCode.UNAVAILABLE, CommitStatusUnavailable, True),
    ],
)
def test_each_stage_fails_with_its_error_the_tx_id_and_every_peers_details(
    fake: FakeGateway, gw: Gateway, stage: str, code: grpc.StatusCode, raised: type[Exception], unknown: bool
) -> None:
    fake.fail[stage] = FakeRpcError(code, f"{stage} went wrong", PEERS)
    with pytest.raises(raised) as err:
        gw.network("claims").contract("careledger").submit("Claims:Get", args=["c9"])
    e = err.value
    assert type(e) is raised
    assert (e.stage, e.code, e.message, e.tx_id) == (stage, code.name, f"{stage} went wrong", fake.calls[-1].tx_id)
    assert [(d.address, d.msp_id, d.message) for d in e.details] == list(PEERS)
    assert e.chaincode_messages == [PEERS[0][2]]
    assert f"HospitalMSP peer0.hospital:7051: {PEERS[0][2]}" in str(e) and e.tx_id in str(e)
    assert isinstance(e, CommitUnknown) is unknown
    assert isinstance(e, NotCommitted) is not unknown
    assert isinstance(e, GatewayTimeout) is (code == grpc.StatusCode.DEADLINE_EXCEEDED)
    assert isinstance(e, TimeoutError) is (code == grpc.StatusCode.DEADLINE_EXCEEDED)


def test_a_deadline_is_a_timeout_even_when_the_server_resets_the_stream(fake: FakeGateway, gw: Gateway) -> None:
    fake.delay = 0.02
    fake.fail["evaluate"] = FakeRpcError(grpc.StatusCode.CANCELLED, "Cancelled")
    with pytest.raises(GatewayTimeout):
        gw.network("claims").contract("careledger").evaluate("Probe:Read", timeout=0.01)
    with pytest.raises(EvaluateError) as err:  # cancelled before its deadline: not a timeout
        gw.network("claims").contract("careledger").evaluate("Probe:Read", timeout=5)
    assert not isinstance(err.value, GatewayTimeout)


def test_default_deadlines_come_from_timeouts(fake: FakeGateway) -> None:
    gw = Gateway(fake, fake.identity, fake.signer(), Timeouts(evaluate=0.01))
    fake.delay = 0.02
    with pytest.raises(GatewayTimeout):
        gw.network("claims").contract("careledger").evaluate("Probe:Read")


def test_errors_survive_pickling(fake: FakeGateway, gw: Gateway) -> None:
    import pickle

    fake.fail["submit"] = FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "late", PEERS)
    with pytest.raises(SubmitTimeout) as err:
        gw.network("claims").contract("careledger").submit("Probe:Write")
    copy = pickle.loads(pickle.dumps(err.value))
    assert (type(copy), str(copy), copy.details) == (SubmitTimeout, str(err.value), err.value.details)
    commit_error = pickle.loads(pickle.dumps(CommitError("tx", "MVCC_READ_CONFLICT", 4)))
    assert (commit_error.tx_id, commit_error.block_number) == ("tx", 4)


def test_wait_for_block_polls_each_orgs_peer_until_it_has_the_block(fake: FakeGateway, gw: Gateway) -> None:
    # The Gateway cannot reach the insurer's peer at first (gossip), then that peer has block 7 at the fourth ask.
    no_peers = FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION, "no peers available to evaluate chaincode qscc")
    fake.heights = {"HospitalMSP": [8], "InsurerMSP": [no_peers, 7, 7, 8]}
    claims = gw.network("claims")
    claims.wait_for_block(7, orgs=["HospitalMSP", "InsurerMSP"], timeout=5)
    asked = [(c.args, c.orgs) for c in fake.calls]
    assert asked[0] == ([b"GetChainInfo", b"claims"], ["HospitalMSP"])
    assert asked[1:] == [([b"GetChainInfo", b"claims"], ["InsurerMSP"])] * 4
    asked_before = len(fake.calls)
    claims.wait_for_block(7)  # this identity's own org by default: seen holding block 7 already, so not asked
    claims.wait_for_block(6, orgs=["InsurerMSP"])
    assert len(fake.calls) == asked_before
    fake.heights["HospitalMSP"] = [9]
    claims.wait_for_block(8)  # above what was seen: asked
    assert (len(fake.calls), fake.calls[-1].orgs) == (asked_before + 1, ["HospitalMSP"])
    gw.network("providers").wait_for_block(7)  # heights are per channel
    assert (len(fake.calls), fake.calls[-1].args) == (asked_before + 2, [b"GetChainInfo", b"providers"])
    with pytest.raises(BlockWaitTimeout) as err:
        claims.wait_for_block(9, orgs=["InsurerMSP"], timeout=0.05)
    assert (err.value.msp_id, err.value.block_number, err.value.height) == ("InsurerMSP", 9, 8)
    assert isinstance(err.value, TimeoutError)
    fake.heights["ClinicMSP"] = [no_peers]
    with pytest.raises(BlockWaitTimeout, match="could not reach") as unreachable:
        claims.wait_for_block(1, orgs=["ClinicMSP"], timeout=0.05)
    assert unreachable.value.height is None and isinstance(unreachable.value.__cause__, EvaluateError)
    fake.heights["ClinicMSP"] = [FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "not a member of the channel")]
    with pytest.raises(EvaluateError, match="not a member"):  # refused: no point asking again
        claims.wait_for_block(1, orgs=["ClinicMSP"], timeout=5)


def test_chaincode_events_resume_after_a_checkpoint(fake: FakeGateway, gw: Gateway) -> None:
    fake.events = [event(5, "tx1", "Claims.Submitted"), event(6, "tx2", "Claims.Paid", b'{"id": 1}')]
    claims = gw.network("claims")
    with claims.chaincode_events("careledger", checkpoint=Checkpoint(5, "tx0")) as events:
        seen = [(e.block_number, e.tx_id, e.name, e.payload, e.chaincode) for e in events]
    assert seen == [
        (5, "tx1", "Claims.Submitted", b"{}", "careledger"),
        (6, "tx2", "Claims.Paid", b'{"id": 1}', "careledger"),
    ]
    request = fake.events_requests[-1]
    assert (request.channel_id, request.chaincode_id, request.identity) == ("claims", "careledger", gw.identity.creator)
    assert (request.start_position.specified.number, request.after_transaction_id) == (5, "tx0")
    list(claims.chaincode_events("careledger", start_block=3))
    assert fake.events_requests[-1].start_position.specified.number == 3
    list(claims.chaincode_events("careledger", start_block=3, checkpoint=Checkpoint()))  # an empty checkpoint: ignored
    assert fake.events_requests[-1].start_position.specified.number == 3
    list(claims.chaincode_events("careledger"))
    assert fake.events_requests[-1].start_position.WhichOneof("Type") == "next_commit"
    fake.fail["events"] = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "peer went away")
    with pytest.raises(EventsUnavailable):
        list(claims.chaincode_events("careledger"))
    fake.fail["events"] = FakeRpcError(grpc.StatusCode.CANCELLED, "closed by the reader")
    assert len(list(claims.chaincode_events("careledger"))) == 2


# ----- commits followed on the channel's block stream -------------------------------------------------------------


def test_submit_follows_commits_on_the_block_stream(fake: FakeGateway) -> None:
    fake.deliver = True
    with Gateway(fake, fake.identity, fake.signer()) as gw:
        contract = gw.network("claims").contract("careledger")
        with ThreadPoolExecutor(max_workers=8) as pool:
            done = list(pool.map(lambda i: contract.submit("Probe:Write", args=[str(i)]), range(20)))
        assert sorted(s.status.block_number for s in done) == list(range(1, 21))
        assert all(s.status.successful and s.status.tx_id == s.tx_id for s in done)
        assert fake.commit_status_calls == 0  # one stream instead of a call per transaction
        fake.validation_code = "MVCC_READ_CONFLICT"
        with pytest.raises(CommitError) as err:
            contract.submit("Probe:Increment")
        assert (err.value.code, err.value.block_number) == ("MVCC_READ_CONFLICT", 21)
        # the stream is opened once, bound to the connection's TLS certificate (none for a stub)
        assert len(fake.seek_headers) == 1 and fake.seek_headers[0].channel_id == "claims"
        # commit.status() after submit_async asks CommitStatus, as the official clients do
        assert contract.submit_async("Probe:Write").status().code == "MVCC_READ_CONFLICT"
        assert fake.commit_status_calls == 1


def test_submit_asks_commit_status_when_the_stream_is_refused_or_breaks(fake: FakeGateway) -> None:
    fake.deliver = True
    fake.fail["deliver"] = FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "access denied")
    gw = Gateway(fake, fake.identity, fake.signer())
    contract = gw.network("claims").contract("careledger")
    assert contract.submit("Probe:Write").status.successful
    assert contract.submit("Probe:Write").status.successful
    assert (fake.commit_status_calls, len(fake.seek_headers)) == (2, 1)  # not asked again at once
    del fake.fail["deliver"]
    other = gw.network("providers").contract("careledger")
    assert other.submit("Probe:Write").status.successful and fake.commit_status_calls == 2
    fake.fail["deliver_later"] = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "peer went away")
    assert other.submit("Probe:Write").status.successful  # its block broke the stream: it asked
    assert fake.commit_status_calls == 3
    gw.close()


def test_a_commit_the_stream_never_brings_times_out_as_an_unknown_outcome(fake: FakeGateway) -> None:
    fake.deliver = True
    gw = Gateway(fake, fake.identity, fake.signer(), Timeouts(commit_status=0.05))
    contract = gw.network("claims").contract("careledger")
    contract.submit("Probe:Write")
    fake.orders = False
    with pytest.raises(CommitStatusTimeout) as err:
        contract.submit("Probe:Write")
    assert isinstance(err.value, CommitUnknown) and len(err.value.tx_id) == 64
    gw.close()


# ----- asyncio ---------------------------------------------------------------------------------------------------


def test_the_asyncio_client_drives_the_same_steps(fake: FakeGateway) -> None:
    async def scenario() -> None:
        gw = AsyncGateway(AsyncFakeGateway(fake), fake.identity, fake.signer())
        claims = gw.network("claims")
        contract = claims.contract("careledger", "Probe")
        submitted = await contract.submit("Write", args=["k", "v"])
        assert submitted.status.successful and fake.calls[-1].args == [b"Probe:Write", b"k", b"v"]
        assert await contract.evaluate("Read", args=["k"]) == b"result of Probe:Read"
        commit = await contract.submit_async("Write", args=["k2", "v"])
        assert (await commit.status()).block_number == 2
        assert await claims.commit_status(submitted.tx_id) == submitted.status
        fake.heights = {"HospitalMSP": [3]}
        await claims.wait_for_block(2)
        transaction = await contract.new_proposal("Write").endorse()
        loaded = gw.transaction_from_bytes(transaction.to_bytes())
        assert (await (await loaded.submit()).status()).successful
        fake.validation_code = "ENDORSEMENT_POLICY_FAILURE"
        with pytest.raises(CommitError, match="ENDORSEMENT_POLICY_FAILURE"):
            await contract.submit("Write")
        fake.fail["endorse"] = FakeRpcError(grpc.StatusCode.ABORTED, "failed to endorse", PEERS)
        with pytest.raises(EndorseError) as err:
            await contract.submit("Write")
        assert err.value.details[0].msp_id == "HospitalMSP"
        fake.events = [event(7, "tx7", "Probe.Written")]
        assert [e.tx_id async for e in claims.chaincode_events("careledger", start_block=7)] == ["tx7"]
        await gw.close()

        # On the block stream: no CommitStatus calls for submits.
        del fake.fail["endorse"]
        fake.deliver, fake.validation_code, asked = True, "VALID", fake.commit_status_calls
        gw = AsyncGateway(AsyncFakeGateway(fake), fake.identity, fake.signer())
        contract = gw.network("claims").contract("careledger")
        done = await asyncio.gather(*(contract.submit("Probe:Write", args=[str(i)]) for i in range(10)))
        assert all(s.status.successful for s in done) and fake.commit_status_calls == asked
        fake.validation_code = "MVCC_READ_CONFLICT"
        with pytest.raises(CommitError, match="MVCC_READ_CONFLICT"):
            await contract.submit("Probe:Write")
        await gw.close()

    asyncio.run(scenario())


# ----- real gRPC channels, to an in-process server -------------------------------------------------------------


class _Served(grpc.GenericRpcHandler):
    """Serves the fake over gRPC, failures included: their details travel in the grpc-status-details-bin trailer."""

    def __init__(self, fake: FakeGateway) -> None:
        self.fake = fake

    def deliver(self, envelopes: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            stream = self.fake.DeliverFiltered(envelopes)
        except FakeRpcError as e:
            context.abort(e.code(), e.details())
        context.add_callback(stream.cancel)
        yield from stream

    def service(self, details: Any) -> Any:
        name = details.method.rsplit("/", 1)[1]
        if name == "DeliverFiltered":
            return grpc.stream_stream_rpc_method_handler(
                self.deliver, common_pb2.Envelope.FromString, lambda m: m.SerializeToString()
            )
        request_type = {
            "Evaluate": gateway_pb2.EvaluateRequest,
            "Endorse": gateway_pb2.EndorseRequest,
            "Submit": gateway_pb2.SubmitRequest,
            "CommitStatus": gateway_pb2.SignedCommitStatusRequest,
            "ChaincodeEvents": gateway_pb2.SignedChaincodeEventsRequest,
        }[name]

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return getattr(self.fake, name)(request, context.time_remaining())
            except FakeRpcError as e:
                context.set_trailing_metadata(e.trailers)
                context.abort(e.code(), e.details())

        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from self.fake.ChaincodeEvents(request)
            except FakeRpcError as e:
                context.abort(e.code(), e.details())

        serialize = lambda m: m.SerializeToString()  # noqa: E731
        if name == "ChaincodeEvents":
            return grpc.unary_stream_rpc_method_handler(stream, request_type.FromString, serialize)
        return grpc.unary_unary_rpc_method_handler(handle, request_type.FromString, serialize)


@pytest.fixture
def served(fake: FakeGateway) -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((_Served(fake),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_the_blocking_client_over_a_grpc_channel(fake: FakeGateway, served: str) -> None:
    fake.deliver = True
    with grpc.insecure_channel(served) as channel:
        gw = Gateway(channel, fake.identity, fake.signer(), tls_cert_hash=b"")
        contract = gw.network("claims").contract("careledger")
        assert contract.submit("Probe:Write", args=["k"]).status.successful
        assert fake.commit_status_calls == 0 and len(fake.seek_headers) == 1
        assert contract.evaluate("Probe:Read") == b"result of Probe:Read"
        fake.fail["endorse"] = FakeRpcError(grpc.StatusCode.ABORTED, "failed to endorse", PEERS)
        with pytest.raises(EndorseError) as err:
            contract.submit("Probe:Write")
        assert err.value.chaincode_messages == [PEERS[0][2]]
        fake.events = [event(3, "tx3", "Probe.Written")]
        assert [e.tx_id for e in gw.network("claims").chaincode_events("careledger")] == ["tx3"]
        fake.delay = 0.2
        with pytest.raises(GatewayTimeout):
            contract.evaluate("Probe:Read", timeout=0.05)
        gw.close()


def test_the_asyncio_client_over_a_grpc_aio_channel(fake: FakeGateway, served: str) -> None:
    fake.deliver = True

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(served) as channel:
            gw = AsyncGateway(channel, fake.identity, fake.signer(), tls_cert_hash=b"")
            contract = gw.network("claims").contract("careledger")
            done = await asyncio.gather(*(contract.submit("Probe:Write", args=[str(i)]) for i in range(8)))
            assert sorted(s.status.block_number for s in done) == list(range(1, 9))
            assert fake.commit_status_calls == 0 and len(fake.seek_headers) == 1
            fake.fail["commit_status"] = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "peer restarting")
            assert (await contract.submit("Probe:Write")).status.successful  # the stream needs no CommitStatus
            with pytest.raises(CommitStatusUnavailable):
                await (await contract.submit_async("Probe:Write")).status()
            fake.events = [event(3, "tx3", "Probe.Written")]
            events = gw.network("claims").chaincode_events("careledger")
            assert [e.tx_id async for e in events] == ["tx3"]
            await gw.close()

    asyncio.run(scenario())


def test_an_unreachable_peer_is_unavailable(fake: FakeGateway) -> None:
    with grpc.insecure_channel("127.0.0.1:1") as channel:
        gw = Gateway(channel, fake.identity, fake.signer())
        with pytest.raises(GatewayUnavailable):
            gw.network("claims").contract("careledger").evaluate("Probe:Read", timeout=2)
