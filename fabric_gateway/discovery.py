"""The peer's discovery service: which peers a peer knows on a channel, with what each told it through gossip.

The Gateway plans endorsements from this same view. A peer counts as an endorser of a chaincode only if the state it
last gossiped lists that chaincode at the version of the definition in force; after a definition changes (a member
joins or leaves), each peer republishes its state and the others hear it seconds apart. Until then a Gateway refuses
a write that needs that peer ("no combination of peers can be derived which satisfy the endorsement policy"). Asking
discovery for the channel's peers shows, peer by peer, what that Gateway knows.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from fabric_protos.discovery import protocol_pb2
from fabric_protos.gossip import message_pb2
from fabric_protos.msp import identities_pb2

from fabric_gateway.errors import DiscoveryError
from fabric_gateway.identity import Identity, Signer, digest

DISCOVER = "/discovery.Discovery/Discover"


@dataclass(frozen=True)
class DiscoveredPeer:
    """A peer as another peer knows it on a channel."""

    msp_id: str
    endpoint: str  # its gossip endpoint, as it announced it ("" when it announced none)
    ledger_height: int
    chaincodes: dict[str, str]  # name -> version of the definition it runs, as it last gossiped


def peers_request(identity: Identity, sign: Signer, channel: str, tls_cert_hash: bytes) -> bytes:
    """The signed request for the peers of a channel. `tls_cert_hash`: the SHA-256 of the client's TLS certificate
    (DER), which a peer requiring mutual TLS checks against the connection."""
    request = protocol_pb2.Request(
        authentication=protocol_pb2.AuthInfo(client_identity=identity.creator, client_tls_cert_hash=tls_cert_hash),
        queries=[protocol_pb2.Query(channel=channel, peer_query=protocol_pb2.PeerMembershipQuery())],
    ).SerializeToString()
    return bytes(protocol_pb2.SignedRequest(payload=request, signature=sign(digest(request))).SerializeToString())


def parse_peers(response: bytes) -> list[DiscoveredPeer]:
    """The peers of a discovery Response to `peers_request`."""
    message = protocol_pb2.Response.FromString(response)
    if len(message.results) != 1:
        raise DiscoveryError("UNKNOWN", f"discovery answered {len(message.results)} results to one query")
    result = message.results[0]
    if result.WhichOneof("result") != "members":
        raise DiscoveryError("UNKNOWN", f"discovery refused the query: {result.error.content or 'no members'}")
    found = []
    for peers in result.members.peers_by_org.values():
        for peer in peers.peers:
            found.append(_peer(peer))
    return found


def _peer(peer: protocol_pb2.Peer) -> DiscoveredPeer:
    msp_id = identities_pb2.SerializedIdentity.FromString(peer.identity).mspid
    alive = message_pb2.GossipMessage.FromString(peer.membership_info.payload).alive_msg
    state = message_pb2.GossipMessage.FromString(peer.state_info.payload).state_info
    return DiscoveredPeer(
        msp_id=msp_id,
        endpoint=alive.membership.endpoint,
        ledger_height=state.properties.ledger_height,
        chaincodes={cc.name: cc.version for cc in state.properties.chaincodes},
    )


def discover_peers(
    channel: grpc.Channel, identity: Identity, sign: Signer, name: str, tls_cert_hash: bytes, timeout: float = 5.0
) -> list[DiscoveredPeer]:
    """Ask the peer at the other end of `channel` for the peers it knows on channel `name` (itself included)."""
    call = channel.unary_unary(DISCOVER, _registered_method=True)
    try:
        response = call(peers_request(identity, sign, name, tls_cert_hash), timeout=timeout)
    except grpc.RpcError as e:
        raise DiscoveryError(e.code().name, str(e.details())) from None
    return parse_peers(response)
