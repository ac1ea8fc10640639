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
from fabric_gateway import GatewayError, Timeouts

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
