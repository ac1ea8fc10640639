"""End-to-end smoke check of a running network: write a probe on every channel, read it back from every member.

Uses Fabric's own peer CLI as an org admin, so it proves the network independently of CareLedger's gateway client.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from consortium.topology import Org, Topology
from network.admin import Admin


@dataclass(frozen=True)
class ProbeResult:
    channel: str
    key: str
    writer: str
    readers: dict[str, bool]  # peer name -> read back the value written
    commit_seconds: float


def write(admin: Admin, channel: str, org: Org, key: str, value: str) -> None:
    """Submit Probe:Write endorsed by every member peer and wait for it to commit."""
    t: Topology = admin.topology
    peers: list[str] = []
    for member in t.channels[channel]:
        peers += ["--peerAddresses", t.peer_of(member).address, "--tlsRootCertFiles", str(t.tls_ca_cert(member))]
    call = json.dumps({"function": "Probe:Write", "Args": [key, value]})
    args = ["chaincode", "invoke", "-C", channel, "-n", t.chaincode_name, "-c", call, "--waitForEvent"]
    admin.peer(org, [*args, *peers, *admin.orderer_flags(org)], f"probe write on {channel}")


def read(admin: Admin, channel: str, org: Org, key: str) -> dict[str, str]:
    """Evaluate Probe:Read on the org's own peer."""
    call = json.dumps({"function": "Probe:Read", "Args": [key]})
    args = ["chaincode", "query", "-C", channel, "-n", admin.topology.chaincode_name, "-c", call]
    out = admin.peer(org, args, f"probe read on {channel}")
    return dict(json.loads(out[out.index("{") :]))


def check(admin: Admin) -> list[ProbeResult]:
    t = admin.topology
    results = []
    stamp = str(time.time_ns())
    for channel, members in t.channels.items():
        key = f"check-{channel}-{stamp}"
        started = time.monotonic()
        write(admin, channel, members[0], key, stamp)
        elapsed = time.monotonic() - started
        readers = {t.peer_of(m).name: read(admin, channel, m, key).get("value") == stamp for m in members}
        results.append(ProbeResult(channel, key, members[0].name, readers, elapsed))
    return results
