"""What the chaincode definition says beyond code: the contracts' consortium config, private data collections and the
endorsement policy, per channel. All follow membership.

- The config (each member MSP's kind, each channel's contracts and members) is given to every org's chaincode server
  as a file it reloads on SIGHUP (CARELEDGER_CHAINCODE_CONFIG_FILE), so a membership change needs no restart.
- Collections: on a channel that serves Claims, one per provider-insurer pair among its members.
- Endorsement: an explicit signature policy over the members' peers, so that a channel configuration update never
  changes what an in-flight transaction needs (an implicit MAJORITY would be re-evaluated against the new member
  count at commit). On a channel that serves Claims, any two members: every claim write is the business of one
  provider-insurer pair, whose peers alone hold its private lines, and Fabric's Gateway endorses transient data only
  on the collection's members; a majority of four or more orgs could never be two. Elsewhere, a majority of the
  members' peers, as the channel's implicit policy says.

Each channel's definition is described by a manifest (network/chaincode.py) whose digest is the definition's version,
so a membership change on a channel is a new version there, approved and committed with the next sequence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from consortium.topology import Topology

CLAIMS_CONTRACT = "Claims"
PAIR_QUORUM = 2  # claims: the provider and the insurer of a claim


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


def endorsement_policy(topology: Topology, channel: str) -> str:
    """The chaincode's endorsement policy on the channel, in Fabric's policy language."""
    members = topology.channels[channel]
    if CLAIMS_CONTRACT in topology.contracts.get(channel, []):
        quorum = min(PAIR_QUORUM, len(members))
    else:
        quorum = len(members) // 2 + 1
    principals = ", ".join(f"'{o.msp_id}.peer'" for o in members)
    return f"OutOf({quorum}, {principals})"


def write_collections(path: Path, cols: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cols, indent=2, sort_keys=True))
    return path


def collections_file(topology: Topology, channel: str) -> Path | None:
    """Write the channel's collection config into the run folder for the peer CLI; None when it has none."""
    cols = collections(topology, channel)
    if not cols:
        return None
    return write_collections(topology.generated_config_dir / f"collections-{channel}.json", cols)
