"""What the chaincode definition says beyond code: the contracts' consortium config and private data collections.

Both are derived from consortium.yaml. The config (each member MSP's kind, each channel's contracts and members) is
given to the chaincode server as CARELEDGER_CHAINCODE_CONFIG; the collections go into the definition with
--collections-config. Both are folded into the chaincode version, so a change to either is approved and committed
as a new sequence.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from consortium.topology import Topology

CLAIMS_CONTRACT = "Claims"


def contracts_config(topology: Topology) -> str:
    """The JSON the chaincode's contracts.ParseConfig reads."""
    config = {
        "orgKinds": {org.msp_id: org.kind for org in topology.member_orgs},
        "channels": topology.contracts,
        "members": {ch: [o.msp_id for o in orgs] for ch, orgs in topology.channels.items()},
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def lines_collection(provider_msp: str, insurer_msp: str) -> str:
    """Must match contracts.LinesCollection in the chaincode."""
    return f"lines_{provider_msp}_{insurer_msp}"


def collections(topology: Topology, channel: str) -> list[dict[str, Any]]:
    """Private data collections of a channel: for Claims, one per provider-insurer pair among its members.

    Only the pair's peers hold the lines (memberOnlyRead/Write); nothing expires by block count: the contract purges
    explicitly once the retention period it records has passed.
    """
    if CLAIMS_CONTRACT not in topology.contracts.get(channel, []):
        return []
    members = topology.channels[channel]
    providers = [o for o in members if o.kind == "provider"]
    insurers = [o for o in members if o.kind == "insurer"]
    return [
        {
            "name": lines_collection(p.msp_id, i.msp_id),
            "policy": f"OR('{p.msp_id}.member','{i.msp_id}.member')",
            "requiredPeerCount": 0,
            "maxPeerCount": 1,
            "blockToLive": 0,
            "memberOnlyRead": True,
            "memberOnlyWrite": True,
        }
        for p in providers
        for i in insurers
    ]


def collections_file(topology: Topology, channel: str) -> Path | None:
    """Write the channel's collection config into the run folder for the peer CLI; None when it has none."""
    cols = collections(topology, channel)
    if not cols:
        return None
    path = topology.generated_config_dir / f"collections-{channel}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cols, indent=2, sort_keys=True))
    return path


def digest(topology: Topology) -> bytes:
    """Everything in this module that the chaincode version must change with."""
    h = hashlib.sha256(contracts_config(topology).encode())
    for channel in topology.channels:
        h.update(json.dumps([channel, collections(topology, channel)], sort_keys=True).encode())
    return h.digest()
