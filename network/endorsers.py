"""Wait until every member org's Gateway can plan endorsements on each of its channels.

A peer learns the other orgs' peers, and which chaincodes they have installed, through gossip after it joins a
channel (anchor peers, then state info every few seconds). Until then its Gateway refuses submits with "no combination
of peers can be derived which satisfy the endorsement policy". So `up` returns only once an endorsement of a
probe write succeeds through every org's own peer on every channel; the endorsed transaction is never sent for ordering.
"""

from __future__ import annotations

import time

from consortium import connect
from consortium.errors import NetworkError
from consortium.topology import Org, Topology
from fabric_gateway import DiscoveryError, GatewayError, Timeouts, discover_peers

PROBE_TIMEOUTS = Timeouts(evaluate=5.0, endorse=5.0, submit=5.0, commit_status=5.0)


def can_endorse(topology: Topology, org: Org, channel: str) -> str | None:
    """None when the org's Gateway endorsed a probe on the channel, else the Gateway's reason."""
    try:
        with connect.gateway(topology, org, timeouts=PROBE_TIMEOUTS) as gw:
            contract = gw.network(channel).contract(topology.chaincode_name)
            contract.new_proposal("Probe:Write", args=["endorsers-ready", "-"]).endorse()
        return None
    except GatewayError as e:
        return str(e)


def unheard(topology: Topology, org: Org, channel: str, sequence: int) -> list[str]:
    """The members whose peer the org's peer has not yet heard announce the chaincode at the definition in force
    (peers gossip a _lifecycle chaincode's sequence as its version); the org's discovery service tells. A Gateway
    plans endorsements from this view, so a write that needs such a peer is refused until it is heard."""
    endpoint = connect.endpoint(topology, org)
    identity, signer = connect.identity(topology, org)
    with endpoint.channel() as grpc_channel:
        try:
            peers = discover_peers(grpc_channel, identity, signer, channel, endpoint.tls_cert_hash)
        except DiscoveryError as e:
            return [f"(discovery: {e})"]
    heard = {p.msp_id for p in peers if p.chaincodes.get(topology.chaincode_name) == str(sequence)}
    return [m.name for m in topology.channels[channel] if m.msp_id not in heard]


def wait_until_heard(topology: Topology, channel: str, sequence: int, timeout: float = 90.0) -> None:
    """Until every member's peer has heard every member's peer announce the definition in force (`sequence`).
    After a definition changes (a member joins or leaves), peers republish their chaincodes through gossip and hear
    each other seconds apart; until then a claim between a provider and a new insurer, which only those two may
    endorse (their collection), is refused with "no combination of peers can be derived"."""
    deadline = time.monotonic() + timeout
    for org in topology.channels[channel]:
        while lacking := unheard(topology, org, channel, sequence):
            if time.monotonic() > deadline:
                raise NetworkError(
                    f"{org.name}'s peer has not heard {', '.join(lacking)} run sequence {sequence} of the chaincode"
                    f" on {channel} after {timeout:.0f}s (gossip: see the peer logs)"
                )
            time.sleep(0.25)


def wait_until_endorses(topology: Topology, org: Org, channel: str, timeout: float = 90.0) -> None:
    """Until the org's own Gateway endorses a probe on the channel (a joining org's first endorsement)."""
    deadline = time.monotonic() + timeout
    while (reason := can_endorse(topology, org, channel)) is not None:
        if time.monotonic() > deadline:
            raise NetworkError(f"{org.name}'s Gateway cannot endorse on {channel} after {timeout:.0f}s: {reason}")
        time.sleep(0.25)


def wait_until_ready(topology: Topology, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    for channel, members in topology.channels.items():
        for org in members:
            while (reason := can_endorse(topology, org, channel)) is not None:
                if time.monotonic() > deadline:
                    raise NetworkError(
                        f"{org.name}'s Gateway cannot endorse on {channel} after {timeout:.0f}s: {reason}\n"
                        "Peers learn each other through gossip; see the peer logs for connection errors."
                    )
                time.sleep(0.5)
