"""The consortium's channel configuration: our configtx.yaml, rendered into the run folder from the topology.

configtxgen reads only what the orgs published (`<run>/consortium/orgs/<Org>/`: public MSP folders, the orderers'
consenter certificates), never an org's home.

Policies (the same on every channel):
- an org's Readers: its admins, peers and clients; Writers: its admins and clients; Admins: its admins;
  Endorsement: its peers;
- channel and application Admins: a MAJORITY of member orgs' Admins;
- LifecycleEndorsement and the default chaincode Endorsement: a MAJORITY of member orgs' peers.
Capabilities: channel V3_0 (so orderer endpoints are per org, no global list), orderer V2_0, application V2_5
(needed for private data purge).

Raft log: each orderer snapshots a channel's Raft state every SNAPSHOT_INTERVAL_SIZE of block data. After a snapshot
Fabric keeps the newest four snapshots (etcdraft.MaxSnapshotFiles) and deletes the WAL segments older than the
oldest of them, so a channel's WAL holds at most about 4 x 16 MB of entries, in etcd's WAL segments of 64 MB each,
which are preallocated: a channel's WAL folder is 128 MB on disk from its first block (a segment and the next one
made ready), and settles at a few segments under load, instead of growing with the ledger. A smaller interval would
not shrink the folder below those preallocated segments, only snapshot more often. Lagging or new orderers catch up
from a snapshot (block replication) instead of the log.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from consortium.errors import CommandFailed
from consortium.topology import Org, Topology
from network.binaries import FabricBinaries

SNAPSHOT_INTERVAL_SIZE = "16 MB"  # configtxgen reads byte sizes in this form (16 MiB)


def _signature(rule: str) -> dict[str, str]:
    return {"Type": "Signature", "Rule": rule}


def _implicit(rule: str) -> dict[str, str]:
    return {"Type": "ImplicitMeta", "Rule": rule}


def _roles(org: Org, *roles: str) -> str:
    return "OR(" + ", ".join(f"'{org.msp_id}.{r}'" for r in roles) + ")"


def organization(topology: Topology, org: Org) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "Name": org.name,
        "ID": org.msp_id,
        "MSPDir": str(topology.public_msp_dir(org)),  # the org's published certificates, never its home
        "Policies": {
            "Readers": _signature(_roles(org, "admin", "peer", "client")),
            "Writers": _signature(_roles(org, "admin", "client")),
            "Admins": _signature(_roles(org, "admin")),
        },
    }
    if org.is_orderer:
        entry["Policies"]["Readers"] = _signature(_roles(org, "member"))
        entry["Policies"]["Writers"] = _signature(_roles(org, "member"))
        entry["OrdererEndpoints"] = [n.address for n in topology.orderers]
    else:
        entry["Policies"]["Endorsement"] = _signature(_roles(org, "peer"))
        peer = topology.peer_of(org)
        entry["AnchorPeers"] = [{"Host": peer.host, "Port": peer.port}]
    return entry


def orderer_section(topology: Topology) -> dict[str, Any]:
    o = topology.ordering
    consenters = []
    for node in topology.orderers:
        tls = topology.public_tls_cert(node)
        consenters.append({"Host": node.host, "Port": node.port, "ClientTLSCert": str(tls), "ServerTLSCert": str(tls)})
    return {
        "OrdererType": "etcdraft",
        "BatchTimeout": o.batch_timeout,
        "BatchSize": {
            "MaxMessageCount": o.max_message_count,
            "AbsoluteMaxBytes": o.absolute_max_bytes,
            "PreferredMaxBytes": o.preferred_max_bytes,
        },
        "EtcdRaft": {
            "Consenters": consenters,
            "Options": {
                "TickInterval": o.tick_interval,
                "ElectionTick": o.election_tick,
                "HeartbeatTick": o.heartbeat_tick,
                "MaxInflightBlocks": 5,
                "SnapshotIntervalSize": SNAPSHOT_INTERVAL_SIZE,
            },
        },
        "Organizations": [organization(topology, topology.orderer_org)],
        "Policies": {
            "Readers": _implicit("ANY Readers"),
            "Writers": _implicit("ANY Writers"),
            "Admins": _implicit("MAJORITY Admins"),
            "BlockValidation": _implicit("ANY Writers"),
        },
        "Capabilities": {"V2_0": True},
    }


def channel_profile(topology: Topology, channel: str) -> dict[str, Any]:
    members = topology.channels[channel]
    return {
        "Policies": {
            "Readers": _implicit("ANY Readers"),
            "Writers": _implicit("ANY Writers"),
            "Admins": _implicit("MAJORITY Admins"),
        },
        "Capabilities": {"V3_0": True},
        "Orderer": orderer_section(topology),
        "Application": {
            "Organizations": [organization(topology, org) for org in members],
            "Policies": {
                "Readers": _implicit("ANY Readers"),
                "Writers": _implicit("ANY Writers"),
                "Admins": _implicit("MAJORITY Admins"),
                "LifecycleEndorsement": _implicit("MAJORITY Endorsement"),
                "Endorsement": _implicit("MAJORITY Endorsement"),
            },
            "Capabilities": {"V2_5": True},
        },
    }


def render(topology: Topology) -> Path:
    """Write configtx.yaml (one profile per channel) into the run folder; return its folder."""
    out = topology.generated_config_dir
    out.mkdir(parents=True, exist_ok=True)
    doc = {"Profiles": {ch: channel_profile(topology, ch) for ch in topology.channels}}
    (out / "configtx.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def genesis_block(topology: Topology, binaries: FabricBinaries, channel: str) -> Path:
    """The channel's genesis block, created once; orderers and peers join the channel with it."""
    block = topology.channel_artifacts_dir / f"{channel}.block"
    if block.exists():
        return block
    block.parent.mkdir(parents=True, exist_ok=True)
    config_dir = render(topology)
    argv = [
        binaries.tool("configtxgen"),
        "-configPath", str(config_dir),
        "-profile", channel,
        "-channelID", channel,
        "-outputBlock", str(block),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        block.unlink(missing_ok=True)
        raise CommandFailed(f"configtxgen for channel {channel}", argv, proc.stdout + proc.stderr)
    return block
