"""Identities for every org, node and admin, generated once per run folder with cryptogen.

NodeOUs are on, so a certificate's OU says its role (admin, peer, client, orderer) and policies can name roles.
Every TLS certificate carries the IP SAN of the node's host, so clients can dial 127.0.0.1 without overrides.
"""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from network.binaries import FabricBinaries
from network.errors import CommandFailed
from network.topology import Org, Topology


def _sans(topology: Topology) -> list[str]:
    return [topology.host, "localhost"]


def cryptogen_config(topology: Topology) -> dict[str, Any]:
    sans = _sans(topology)

    def org_entry(org: Org, hosts: list[str], users: int) -> dict[str, Any]:
        return {
            "Name": org.name,
            "Domain": org.domain,
            "EnableNodeOUs": True,
            "Specs": [{"Hostname": h, "SANS": sans} for h in hosts],
            "Users": {"Count": users},
        }

    orderer_hosts = [n.short for n in topology.orderers]
    # Each member org gets User1 (its applications: gateway, workers) and User2 (in tests, a patient's own identity).
    peer_orgs = [org_entry(org, ["peer0"], 2) for org in topology.member_orgs]
    # The chaincode server's TLS identity: server cert for the chaincode process, Admin's TLS cert as the client
    # certificate peers present when they dial it.
    peer_orgs.append(org_entry(topology.chaincode_tls_org, ["server"], 0))
    return {
        "OrdererOrgs": [org_entry(topology.orderer_org, orderer_hosts, 0)],
        "PeerOrgs": peer_orgs,
    }


def ensure(topology: Topology, binaries: FabricBinaries) -> bool:
    """Generate crypto material unless the run folder has it already. Returns True when it generated."""
    marker = topology.crypto_dir / ".complete"
    if marker.exists():
        return False
    topology.crypto_dir.mkdir(parents=True, exist_ok=True)
    config = topology.generated_config_dir / "crypto-config.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(cryptogen_config(topology), sort_keys=False))
    argv = [binaries.tool("cryptogen"), "generate", f"--config={config}", f"--output={topology.crypto_dir}"]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CommandFailed("cryptogen", argv, proc.stdout + proc.stderr)
    marker.write_text("ok\n")
    return True
