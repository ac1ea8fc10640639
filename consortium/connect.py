"""Open a Fabric Gateway connection as one of the consortium's users, from the run folder's crypto material."""

from __future__ import annotations

from consortium.topology import Org, Topology
from fabric_gateway import DEFAULT_TIMEOUTS, AsyncGateway, Endpoint, Gateway, Identity, Signer, Timeouts, load_msp


def endpoint(topology: Topology, org: Org, user: str = "User1") -> Endpoint:
    peer = topology.peer_of(org)
    tls = topology.user_dir(org, user) / "tls"
    return Endpoint.from_files(peer.address, topology.own_tls_ca_cert(org), tls / "client.crt", tls / "client.key")


def identity(topology: Topology, org: Org, user: str = "User1") -> tuple[Identity, Signer]:
    """The user's identity and signer, from its MSP folder in the org's home."""
    return load_msp(topology.user_dir(org, user) / "msp", org.msp_id)


def gateway(topology: Topology, org: Org | str, user: str = "User1", timeouts: Timeouts = DEFAULT_TIMEOUTS) -> Gateway:
    """A Gateway for `user` of `org`, connected to that org's own peer."""
    org = topology.org(org) if isinstance(org, str) else org
    return Gateway(endpoint(topology, org, user), *identity(topology, org, user), timeouts)


def async_gateway(
    topology: Topology, org: Org | str, user: str = "User1", timeouts: Timeouts = DEFAULT_TIMEOUTS
) -> AsyncGateway:
    """The asyncio form of `gateway`; create it inside the event loop that will use it."""
    org = topology.org(org) if isinstance(org, str) else org
    return AsyncGateway(endpoint(topology, org, user), *identity(topology, org, user), timeouts)
