"""Open a Fabric Gateway connection as one of the consortium's users, from the run folder's crypto material."""

from __future__ import annotations

from consortium.topology import Org, Topology
from fabric_gateway import DEFAULT_TIMEOUTS, AsyncGateway, Endpoint, Gateway, Timeouts, load_msp


def endpoint(topology: Topology, org: Org, user: str = "User1") -> Endpoint:
    peer = topology.peer_of(org)
    tls = topology.user_dir(org, user) / "tls"
    return Endpoint.from_files(peer.address, topology.own_tls_ca_cert(org), tls / "client.crt", tls / "client.key")


def gateway(topology: Topology, org: Org | str, user: str = "User1", timeouts: Timeouts = DEFAULT_TIMEOUTS) -> Gateway:
    """A Gateway for `user` of `org`, connected to that org's own peer."""
    org = topology.org(org) if isinstance(org, str) else org
    identity, signer = load_msp(topology.user_dir(org, user) / "msp", org.msp_id)
    return Gateway(endpoint(topology, org, user), identity, signer, timeouts)


def async_gateway(
    topology: Topology, org: Org | str, user: str = "User1", timeouts: Timeouts = DEFAULT_TIMEOUTS
) -> AsyncGateway:
    """The asyncio form of `gateway`; create it inside the event loop that will use it."""
    org = topology.org(org) if isinstance(org, str) else org
    identity, signer = load_msp(topology.user_dir(org, user) / "msp", org.msp_id)
    return AsyncGateway(endpoint(topology, org, user), identity, signer, timeouts)
