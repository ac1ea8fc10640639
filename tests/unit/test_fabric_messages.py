"""Gateway messages, field by field as Fabric defines them, and the client's signing and error mapping."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from cryptography.hazmat.primitives.hashes import SHA256
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import chaincode_pb2, proposal_pb2

from fabric_gateway import messages as m
from fabric_gateway.checkpoint import Checkpoint, FileCheckpointer, InMemoryCheckpointer, after_block, after_event
from fabric_gateway.errors import (
    CommitError,
    EndorseError,
    ErrorDetail,
    GatewayTimeout,
    GatewayUnavailable,
    SubmitTimeout,
    from_rpc_error,
)
from fabric_gateway.identity import P256_ORDER, Identity, ecdsa_signer
from fabric_gateway.retry import is_unavailable, retry_conflicts, retry_unavailable_async
from fabric_gateway.wire import varint
from tests.unit.fake_gateway import FakeRpcError

CERT = b"-----BEGIN CERTIFICATE-----\nnot parsed by the client\n-----END CERTIFICATE-----\n"
IDENTITY = Identity("HospitalMSP", CERT)


def test_creator_is_a_serialized_identity() -> None:
    parsed = identities_pb2.SerializedIdentity.FromString(IDENTITY.creator)
    assert parsed.mspid == "HospitalMSP"
    assert parsed.id_bytes == CERT


def test_tx_id_is_sha256_of_nonce_and_creator() -> None:
    proposal = m.Target("claims", "careledger").proposal(IDENTITY, "Probe:Read", nonce=b"n" * 24)
    assert proposal.tx_id == hashlib.sha256(b"n" * 24 + IDENTITY.creator).hexdigest()
    header = common_pb2.Header.FromString(proposal_pb2.Proposal.FromString(proposal.proposal_bytes).header)
    assert len(common_pb2.SignatureHeader.FromString(header.signature_header).nonce) == 24
    assert m.Target("claims", "careledger").proposal(IDENTITY, "Probe:Read").tx_id != proposal.tx_id


def test_proposal_fields() -> None:
    target = m.Target("claims", "careledger", "Claims")
    args = ["a", b"\x00b", ""]
    built = target.proposal(IDENTITY, "Submit", args, {"lines": b"L", "empty": b""}, ["InsurerMSP"], b"n" * 24)
    assert (built.channel, built.endorsing_orgs, built.signature) == ("claims", ("InsurerMSP",), b"")
    proposal = proposal_pb2.Proposal.FromString(built.proposal_bytes)
    header = common_pb2.Header.FromString(proposal.header)
    ch = common_pb2.ChannelHeader.FromString(header.channel_header)
    assert ch.type == common_pb2.HeaderType.ENDORSER_TRANSACTION
    assert (ch.channel_id, ch.tx_id, ch.epoch, ch.version) == ("claims", built.tx_id, 0, 0)
    assert ch.timestamp.seconds > 1_700_000_000
    ext = proposal_pb2.ChaincodeHeaderExtension.FromString(ch.extension)
    assert ext.chaincode_id.name == "careledger"
    sig_header = common_pb2.SignatureHeader.FromString(header.signature_header)
    assert (sig_header.creator, sig_header.nonce) == (IDENTITY.creator, b"n" * 24)
    payload = proposal_pb2.ChaincodeProposalPayload.FromString(proposal.payload)
    assert dict(payload.TransientMap) == {"lines": b"L", "empty": b""}
    spec = chaincode_pb2.ChaincodeInvocationSpec.FromString(payload.input)
    assert spec.chaincode_spec.chaincode_id.name == "careledger"
    assert list(spec.chaincode_spec.input.args) == [b"Claims:Submit", b"a", b"\x00b", b""]
    # What the hand-written encoding produced is exactly what the generated classes produce for the same fields.
    assert header.SerializeToString() == proposal.header
    assert ch.SerializeToString() == header.channel_header
    assert spec.SerializeToString() == payload.input


def test_requests_parse_as_the_gateway_messages() -> None:
    proposal = m.Target("claims", "careledger").proposal(IDENTITY, "Probe:Read", endorsing_orgs=["A", "B"])
    proposal.signature = b"sig"
    endorse = gateway_pb2.EndorseRequest.FromString(proposal.request())
    assert (endorse.transaction_id, endorse.channel_id) == (proposal.tx_id, "claims")
    assert endorse.proposed_transaction.proposal_bytes == proposal.proposal_bytes
    assert (endorse.proposed_transaction.signature, list(endorse.endorsing_organizations)) == (b"sig", ["A", "B"])
    evaluate = gateway_pb2.EvaluateRequest.FromString(proposal.request())
    assert list(evaluate.target_organizations) == ["A", "B"]
    assert m.ProposalState.from_bytes(proposal.to_bytes()) == proposal
    commit = m.CommitState.new(IDENTITY, "claims", proposal.tx_id)
    commit.signature = b"s2"
    signed = gateway_pb2.SignedCommitStatusRequest.FromString(commit.request())
    request = gateway_pb2.CommitStatusRequest.FromString(signed.request)
    assert (request.transaction_id, request.channel_id, request.identity, signed.signature) == (
        proposal.tx_id,
        "claims",
        IDENTITY.creator,
        b"s2",
    )
    assert m.CommitState.from_bytes(commit.to_bytes()) == commit
    assert m.CommitState.from_bytes(commit.to_bytes(), b"other").signature == b"other"


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16_383, 16_384, 2**32, 2**63])
def test_varints(n: int) -> None:
    encoded = common_pb2.ChannelHeader(epoch=n).SerializeToString()
    assert encoded == (b"\x30" + varint(n) if n else b"")


def test_signatures_are_low_s_and_verify() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    sign = ecdsa_signer(key)
    digest = hashlib.sha256(b"payload").digest()
    for _ in range(40):  # high-S would appear about half the time without normalisation
        sig = sign(digest)
        _, s = decode_dss_signature(sig)
        assert s <= P256_ORDER // 2
        key.public_key().verify(sig, digest, ec.ECDSA(Prehashed(SHA256())))


def test_other_curves_are_refused() -> None:
    with pytest.raises(ValueError, match="P-256"):
        ecdsa_signer(ec.generate_private_key(ec.SECP384R1()))


def test_events_request_resumes_after_the_checkpointed_transaction() -> None:
    raw = m.chaincode_events_request(IDENTITY, "claims", "careledger", 7, "tx9")
    req = gateway_pb2.ChaincodeEventsRequest.FromString(raw)
    assert req.start_position.specified.number == 7
    assert req.after_transaction_id == "tx9"
    fresh = gateway_pb2.ChaincodeEventsRequest.FromString(
        m.chaincode_events_request(IDENTITY, "claims", "careledger", None)
    )
    assert fresh.start_position.WhichOneof("Type") == "next_commit"


def test_rpc_errors_keep_each_peers_details() -> None:
    detail = ("127.0.0.1:7051", "HospitalMSP", "chaincode response 500")
    err = from_rpc_error("endorse", FakeRpcError(grpc.StatusCode.ABORTED, "failed to endorse", (detail,)), "tx1")
    assert isinstance(err, EndorseError)
    assert (err.code, err.tx_id) == ("ABORTED", "tx1")
    assert err.details[0].msp_id == "HospitalMSP"
    assert "HospitalMSP 127.0.0.1:7051: chaincode response 500" in str(err)
    timeout = from_rpc_error("submit", FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert isinstance(timeout, SubmitTimeout) and isinstance(timeout, GatewayTimeout)
    assert "submit failed (DEADLINE_EXCEEDED)" in str(timeout)
    assert isinstance(from_rpc_error("endorse", FakeRpcError(grpc.StatusCode.UNAVAILABLE)), GatewayUnavailable)


def test_checkpoint_positions() -> None:
    event = m.ChaincodeEvent(12, "tx3", "careledger", "Claims.Submitted", b"{}")
    assert after_event(event) == Checkpoint(12, "tx3")
    assert after_block(12) == Checkpoint(13, "")
    assert Checkpoint().is_empty


@pytest.mark.parametrize("make", [lambda p: InMemoryCheckpointer(), lambda p: FileCheckpointer(p / "cp.json")])
def test_checkpointers_round_trip(tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    cp = make(tmp_path)
    assert cp.load() == Checkpoint()
    cp.save(Checkpoint(5, "abc"))
    assert cp.load() == Checkpoint(5, "abc")


def test_retry_conflicts_retries_only_read_conflicts() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise CommitError("tx", "MVCC_READ_CONFLICT", 4)
        return "done"

    assert retry_conflicts(flaky, base_delay=0.001) == "done"
    assert len(calls) == 3

    def policy_failure() -> str:
        raise CommitError("tx", "ENDORSEMENT_POLICY_FAILURE", 4)

    with pytest.raises(CommitError, match="ENDORSEMENT_POLICY_FAILURE"):
        retry_conflicts(policy_failure)


def test_retry_conflicts_retries_endorsers_that_disagree_but_not_chaincode_errors() -> None:
    def endorsement(message: str) -> EndorseError:
        return EndorseError("ABORTED", "failed", (ErrorDetail("p:1", "ClinicMSP", message),), "tx")

    calls: list[int] = []

    def disagreeing() -> str:
        calls.append(1)
        if len(calls) < 2:
            raise endorsement("ProposalResponsePayloads do not match")
        return "done"

    assert retry_conflicts(disagreeing, base_delay=0.001) == "done"

    def refused() -> str:
        raise endorsement("chaincode response 500, CONFLICT: taken")

    with pytest.raises(EndorseError):
        retry_conflicts(refused)


@pytest.mark.parametrize(
    ("code", "message", "unavailable"),
    [
        # discovery lags a chaincode definition that added a member, by a gossip round
        ("FAILED_PRECONDITION", "required chaincodes are not installed on sufficient peers", True),
        ("FAILED_PRECONDITION", "no peer combination can satisfy the endorsement policy", True),
        ("ABORTED", "chaincode stream terminated", True),
        # a chaincode definition committed while the peer ran the call (a member joining)
        (
            "ABORTED",
            "make sure the chaincode careledger has been successfully defined on channel claims and try again:"
            " chaincode cache at sequence 5 but current sequence is 4,"
            " chaincode definition for 'careledger' changed during invoke",
            True,
        ),
        ("ABORTED", "error validating proposal: access denied: creator is malformed", False),
        ("ABORTED", "chaincode response 500, CONFLICT: taken", False),
    ],
)
def test_endorsers_that_are_down_or_not_ready_are_tried_again_for_a_while(
    code: str, message: str, unavailable: bool
) -> None:
    err = EndorseError(code, "failed", (ErrorDetail("p:1", "ClinicMSP", message),), "tx")
    assert is_unavailable(err) is unavailable
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise err
        return "done"

    if unavailable:
        assert asyncio.run(retry_unavailable_async(flaky, within_s=5.0)) == "done"
        assert len(calls) == 3
    else:
        with pytest.raises(EndorseError):
            asyncio.run(retry_unavailable_async(flaky, within_s=5.0))
        assert len(calls) == 1


def test_endorsers_that_stay_down_fail_the_call_once_the_time_is_up() -> None:
    err = EndorseError("FAILED_PRECONDITION", "no peers", (), "tx")
    calls: list[int] = []

    async def down() -> str:
        calls.append(1)
        raise err

    with pytest.raises(EndorseError):
        asyncio.run(retry_unavailable_async(down, within_s=0.5))
    assert 1 < len(calls) <= 3
