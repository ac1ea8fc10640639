"""Gateway messages, field by field as Fabric defines them, and the client's signing and error mapping."""

from __future__ import annotations

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
from google.protobuf import any_pb2
from google.rpc import status_pb2

from fabric_gateway import messages as m
from fabric_gateway.checkpoint import Checkpoint, FileCheckpointer, InMemoryCheckpointer, after_block, after_event
from fabric_gateway.errors import EndorsementFailed, GatewayTimeout, PeerUnavailable, from_rpc_error
from fabric_gateway.identity import P256_ORDER, Identity, ecdsa_signer
from fabric_gateway.retry import retry_conflicts

CERT = b"-----BEGIN CERTIFICATE-----\nnot parsed by the client\n-----END CERTIFICATE-----\n"
IDENTITY = Identity("HospitalMSP", CERT)


def test_creator_is_a_serialized_identity() -> None:
    parsed = identities_pb2.SerializedIdentity.FromString(IDENTITY.creator)
    assert parsed.mspid == "HospitalMSP"
    assert parsed.id_bytes == CERT


def test_tx_id_is_sha256_of_nonce_and_creator() -> None:
    ctx = m.new_context(IDENTITY)
    assert len(ctx.nonce) == 24
    assert ctx.tx_id == hashlib.sha256(ctx.nonce + IDENTITY.creator).hexdigest()
    assert m.new_context(IDENTITY).nonce != ctx.nonce


def test_proposal_fields() -> None:
    ctx = m.new_context(IDENTITY, nonce=b"n" * 24)
    raw = m.proposal_bytes(IDENTITY, ctx, "claims", "careledger", "Claims:Submit", ["a", b"\x00b"], {"lines": b"L"})
    proposal = proposal_pb2.Proposal.FromString(raw)
    header = common_pb2.Header.FromString(proposal.header)
    ch = common_pb2.ChannelHeader.FromString(header.channel_header)
    assert ch.type == common_pb2.HeaderType.ENDORSER_TRANSACTION
    assert (ch.channel_id, ch.tx_id, ch.epoch) == ("claims", ctx.tx_id, 0)
    assert ch.timestamp.seconds > 1_700_000_000
    ext = proposal_pb2.ChaincodeHeaderExtension.FromString(ch.extension)
    assert ext.chaincode_id.name == "careledger"
    sig_header = common_pb2.SignatureHeader.FromString(header.signature_header)
    assert (sig_header.creator, sig_header.nonce) == (IDENTITY.creator, b"n" * 24)
    payload = proposal_pb2.ChaincodeProposalPayload.FromString(proposal.payload)
    assert dict(payload.TransientMap) == {"lines": b"L"}
    spec = chaincode_pb2.ChaincodeInvocationSpec.FromString(payload.input)
    assert spec.chaincode_spec.chaincode_id.name == "careledger"
    assert list(spec.chaincode_spec.input.args) == [b"Claims:Submit", b"a", b"\x00b"]


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
    raw = m.chaincode_events_request_bytes(IDENTITY, "claims", "careledger", 7, "tx9")
    req = gateway_pb2.ChaincodeEventsRequest.FromString(raw)
    assert req.start_position.specified.number == 7
    assert req.after_transaction_id == "tx9"
    fresh = gateway_pb2.ChaincodeEventsRequest.FromString(
        m.chaincode_events_request_bytes(IDENTITY, "claims", "careledger", None)
    )
    assert fresh.start_position.WhichOneof("Type") == "next_commit"


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, message: str, details: list[gateway_pb2.ErrorDetail]) -> None:
        status = status_pb2.Status(code=code.value[0], message=message)
        for d in details:
            packed = any_pb2.Any()
            packed.Pack(d)
            status.details.append(packed)
        self._code, self._message = code, message
        self._trailers = (("grpc-status-details-bin", status.SerializeToString()),)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._trailers


def test_rpc_errors_keep_each_peers_details() -> None:
    detail = gateway_pb2.ErrorDetail(address="127.0.0.1:7051", msp_id="HospitalMSP", message="chaincode response 500")
    err = from_rpc_error("endorse", FakeRpcError(grpc.StatusCode.ABORTED, "failed to endorse", [detail]))
    assert isinstance(err, EndorsementFailed)
    assert err.code == "ABORTED"
    assert err.details[0].msp_id == "HospitalMSP"
    assert "HospitalMSP peer 127.0.0.1:7051: chaincode response 500" in str(err)
    assert isinstance(from_rpc_error("submit", FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "", [])), GatewayTimeout)
    assert isinstance(from_rpc_error("endorse", FakeRpcError(grpc.StatusCode.UNAVAILABLE, "", [])), PeerUnavailable)


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
    from fabric_gateway.errors import CommitFailed

    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise CommitFailed("tx", "MVCC_READ_CONFLICT", 4)
        return "done"

    assert retry_conflicts(flaky, base_delay=0.001) == "done"
    assert len(calls) == 3

    def policy_failure() -> str:
        raise CommitFailed("tx", "ENDORSEMENT_POLICY_FAILURE", 4)

    with pytest.raises(CommitFailed, match="ENDORSEMENT_POLICY_FAILURE"):
        retry_conflicts(policy_failure)


def test_retry_conflicts_retries_endorsers_that_disagree_but_not_chaincode_errors() -> None:
    from fabric_gateway.errors import EndorsementFailed, PeerDetail

    def endorsement(message: str) -> EndorsementFailed:
        return EndorsementFailed("endorse", "ABORTED", "failed", (PeerDetail("p:1", "ClinicMSP", message),))

    calls: list[int] = []

    def disagreeing() -> str:
        calls.append(1)
        if len(calls) < 2:
            raise endorsement("ProposalResponsePayloads do not match")
        return "done"

    assert retry_conflicts(disagreeing, base_delay=0.001) == "done"

    def refused() -> str:
        raise endorsement("chaincode response 500, CONFLICT: taken")

    with pytest.raises(EndorsementFailed):
        retry_conflicts(refused)
