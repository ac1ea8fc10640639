"""Channels through the channel participation API: orderers join from the genesis block, then member peers.

Both steps first ask what is joined already, so running them again changes nothing.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error

from consortium.errors import NetworkError
from consortium.topology import Node, Org, Topology
from network import nodes
from network.admin import Admin
from network.binaries import FabricBinaries
from network.configtx import genesis_block


def orderer_channels(admin: Admin, orderer: Node) -> set[str]:
    out = admin.osnadmin(orderer, ["channel", "list"], f"list channels on {orderer.name}")
    body = out[out.index("{") :] if "{" in out else "{}"
    return {c["name"] for c in (json.loads(body).get("channels") or [])}


def peer_channels(admin: Admin, org: Org) -> set[str]:
    out = admin.peer(org, ["channel", "list"], f"list channels on {org.name}'s peer")
    # Output: "Channels peers has joined: \nproviders\nclaims\n"
    lines = [ln.strip() for ln in out.splitlines()]
    return {ln for ln in lines if ln and not ln.lower().startswith("channels peers has joined")}


def block_height(admin: Admin, org: Org, channel: str, peer: Node | None = None) -> int:
    out = admin.peer(org, ["channel", "getinfo", "-c", channel], f"block height of {channel}", peer=peer)
    match = re.search(r"\{.*\}", out)
    return int(json.loads(match.group(0))["height"]) if match else 0


def ensure_joined(topology: Topology, binaries: FabricBinaries, admin: Admin) -> list[str]:
    """Join every orderer and member peer to its channels. Returns what it did, for progress output."""
    done: list[str] = []
    for channel in topology.channels:
        block = genesis_block(topology, binaries, channel)
        for orderer in topology.orderers:
            if channel not in orderer_channels(admin, orderer):
                admin.osnadmin(
                    orderer,
                    ["channel", "join", "--channelID", channel, "--config-block", str(block)],
                    f"join {orderer.name} to {channel}",
                )
                done.append(f"{orderer.name} joined {channel}")
    for org in topology.member_orgs:
        joined = peer_channels(admin, org)
        for channel in topology.channels_of(org):
            if channel not in joined:
                block = topology.channel_artifacts_dir / f"{channel}.block"
                admin.peer(org, ["channel", "join", "-b", str(block)], f"join {org.name}'s peer to {channel}")
                done.append(f"{topology.peer_of(org).name} joined {channel}")
    return done


def raft_leader(topology: Topology, channel: str) -> Node | None:
    """The orderer leading the channel's Raft cluster, read from the orderers' Prometheus metrics."""
    pattern = re.compile(rf'^consensus_etcdraft_is_leader\{{channel="{re.escape(channel)}"\}} 1(\.0)?$', re.M)
    for orderer in topology.orderers:
        try:
            if pattern.search(nodes.operations_get(topology, orderer, "/metrics").decode()):
                return orderer
        except (urllib.error.URLError, OSError):
            continue
    return None


def wait_for_leaders(topology: Topology, timeout: float = 30.0) -> None:
    """Orderers report healthy before Raft has elected a leader; transactions sent earlier are refused."""
    deadline = time.monotonic() + timeout
    for channel in topology.channels:
        while raft_leader(topology, channel) is None:
            if time.monotonic() > deadline:
                raise NetworkError(f"channel {channel} has no Raft leader after {timeout:.0f}s; see the orderer logs")
            time.sleep(0.1)
