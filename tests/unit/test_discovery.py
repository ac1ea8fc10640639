"""The discovery client: the signed peers query as a peer reads it, and the peers read from its answer."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fabric_protos.discovery import protocol_pb2
from fabric_protos.gossip import message_pb2
from fabric_protos.msp import identities_pb2

from fabric_gateway import DiscoveryError, Identity, ecdsa_signer
from fabric_gateway.discovery import parse_peers, peers_request


def _peer(msp_id: str, endpoint: str, height: int, chaincodes: dict[str, str]) -> protocol_pb2.Peer:
    alive = message_pb2.GossipMessage(
        alive_msg=message_pb2.AliveMessage(membership=message_pb2.Member(endpoint=endpoint))
    )
    state = message_pb2.GossipMessage(
        state_info=message_pb2.StateInfo(
            properties=message_pb2.Properties(
                ledger_height=height,
                chaincodes=[message_pb2.Chaincode(name=n, version=v) for n, v in chaincodes.items()],
            )
        )
    )
    return protocol_pb2.Peer(
        state_info=message_pb2.Envelope(payload=state.SerializeToString()),
        membership_info=message_pb2.Envelope(payload=alive.SerializeToString()),
        identity=identities_pb2.SerializedIdentity(mspid=msp_id, id_bytes=b"cert").SerializeToString(),
    )


def test_the_request_is_signed_and_asks_for_the_channel_s_peers() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    identity = Identity("HospitalMSP", b"-----BEGIN CERTIFICATE-----")
    signed = protocol_pb2.SignedRequest.FromString(peers_request(identity, ecdsa_signer(key), "claims", b"h" * 32))
    key.public_key().verify(signed.signature, signed.payload, ec.ECDSA(hashes.SHA256()))
    request = protocol_pb2.Request.FromString(signed.payload)
    assert request.authentication.client_identity == identity.creator
    assert request.authentication.client_tls_cert_hash == b"h" * 32
    (query,) = request.queries
    assert query.channel == "claims" and query.WhichOneof("query") == "peer_query"


def test_the_peers_of_an_answer_carry_their_org_endpoint_height_and_chaincodes() -> None:
    result = protocol_pb2.PeerMembershipResult()
    result.peers_by_org["HospitalMSP"].peers.append(_peer("HospitalMSP", "127.0.0.1:7100", 12, {"careledger": "3"}))
    result.peers_by_org["Insurer2MSP"].peers.append(_peer("Insurer2MSP", "127.0.0.1:7150", 11, {"careledger": "2"}))
    answer = protocol_pb2.Response(results=[protocol_pb2.QueryResult(members=result)])
    peers = {p.msp_id: p for p in parse_peers(answer.SerializeToString())}
    assert peers["HospitalMSP"].endpoint == "127.0.0.1:7100" and peers["HospitalMSP"].ledger_height == 12
    assert peers["Insurer2MSP"].chaincodes == {"careledger": "2"}  # not yet heard at sequence 3


def test_a_refusal_in_the_answer_is_an_error() -> None:
    answer = protocol_pb2.Response(
        results=[protocol_pb2.QueryResult(error=protocol_pb2.Error(content="access denied"))]
    )
    with pytest.raises(DiscoveryError, match="access denied"):
        parse_peers(answer.SerializeToString())
