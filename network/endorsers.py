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


def can_reach(topology: Topology, org: Org, channel: str, endorsers: list[Org]) -> str | None:
    """None when the org's Gateway had each of `endorsers`' peers endorse a probe on the channel (one org at a time,
    named as the endorsing org, so discovery must know that org's peer with the chaincode in force), else the first
    reason it could not."""
    try:
        with connect.gateway(topology, org, timeouts=PROBE_TIMEOUTS) as gw:
            contract = gw.network(channel).contract(topology.chaincode_name)
            for endorser in endorsers:
                contract.new_proposal(
                    "Probe:Write", args=["endorsers-ready", "-"], endorsing_orgs=[endorser.msp_id]
                ).endorse()
        return None
    except GatewayError as e:
        return str(e)


def wait_until_reaches_all(
    topology: Topology, channel: str, gateways: list[Org] | None = None, timeout: float = 90.0
) -> None:
    """Until each of `gateways` (default: every member of the channel) reaches every member's peer on the channel.
    After a chaincode definition changes (a member joins or leaves), each peer learns through gossip, a few seconds
    apart, which other peers run the chaincode in force; until then a Gateway cannot plan an endorsement that needs a
    peer it has not heard from yet (a claim its new insurer must endorse), though a probe that any majority may
    endorse already passes."""
    members = topology.channels[channel]
    deadline = time.monotonic() + timeout
    for org in gateways if gateways is not None else members:
        while (reason := can_reach(topology, org, channel, members)) is not None:
            if time.monotonic() > deadline:
                raise NetworkError(
                    f"{org.name}'s Gateway cannot reach every member's peer on {channel} after {timeout:.0f}s: {reason}"
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
