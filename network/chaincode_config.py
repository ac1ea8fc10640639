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
    explicitly once the retention period it records has passed. Fabric never lets a definition drop a collection, so
    a pair with an org that left the channel keeps its collection, with the org that left taken out of its policy: it
    gets no new private data (if both left, the policy stays as it was; no member of the channel writes to it).
    """
    if CLAIMS_CONTRACT not in topology.contracts.get(channel, []):
        return []
    current = [(o.msp_id, o.kind) for o in topology.channels[channel]]
    here = {msp for msp, _ in current}
    every = current + [f for f in topology.former_members(channel) if f[0] not in here]
    providers = [msp for msp, kind in every if kind == "provider"]
    insurers = [msp for msp, kind in every if kind == "insurer"]
    out = []
    for p in providers:
        for i in insurers:
            members = [m for m in (p, i) if m in here] or [p, i]
            out.append(
                {
                    "name": lines_collection(p, i),
                    "policy": "OR({})".format(",".join(f"'{m}.member'" for m in members)),
                    "requiredPeerCount": 0,
                    "maxPeerCount": 1,
                    "blockToLive": 0,
                    "memberOnlyRead": True,
                    "memberOnlyWrite": True,
                }
            )
    return out


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
