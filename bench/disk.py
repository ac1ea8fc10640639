"""Disk per resource per node after a long ingest, and the orderers' Raft write-ahead log over time.

    .venv/bin/python bench/disk.py [--reuse-network] [--minutes 15] [--bundle 1000] [--clients 3] [--target-mb 120]
        [--port-base N]

Posts transaction bundles to HospitalOrg's gateway (HTTPS, every entry validated, encrypted, registered on
`providers` in one transaction per bundle) until the channel's blocks reach --target-mb or --minutes pass, sampling
every node's folders as it goes. Prints, per node, what each resource takes on disk (a peer's blocks, state, history,
private data, transient store, ...; an orderer's blocks, WAL and snapshots), the services' and gateways' stores,
and the WAL of every orderer over the run: Raft snapshots every 16 MB (network/configtx.py), so the WAL must stop
growing with the ledger.

Starts its own network in run/bench-disk (ports from --port-base, else a free base at 38000 or above) unless
--reuse-network.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
import time
from pathlib import Path

import httpx

from consortium import readiness
from consortium import topology as topo
from consortium.topology import Node, Topology
from gateway.cli import start
from gateway.dev_issuer import dev_token
from gateway.settings import GatewaySettings
from network import control
from records.synthetic import Synthetic

ORG = "HospitalOrg"
CHANNEL = "providers"
MiB = 2**20


def size(path: Path) -> int:
    """Bytes on disk (allocated blocks, so preallocated WAL segments count as what they take)."""
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_blocks * 512
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # a file rotated away meanwhile
                total += (Path(folder) / name).stat().st_blocks * 512
    return total


def peer_resources(t: Topology, node: Node) -> dict[str, int]:
    data = t.node_data_dir(node)
    ledger = data / "ledger" / "ledgersData"
    out = {
        "blocks": size(ledger / "chains"),
        "state (LevelDB)": size(ledger / "stateLeveldb"),
        "history": size(ledger / "historyLeveldb"),
        "private data": size(ledger / "pvtdataStore"),
        "transient store": size(data / "ledger" / "transientstore"),
        "config history": size(ledger / "configHistory"),
        "bookkeeping": size(ledger / "bookkeeper") + size(ledger / "ledgerProvider"),
        "chaincode packages": size(data / "ledger" / "lifecycle") + size(data / "ledger" / "chaincodes"),
        "snapshots": size(data / "snapshots"),
    }
    out["other"] = size(data) - sum(out.values())
    return out


def orderer_resources(t: Topology, node: Node) -> dict[str, int]:
    data = t.node_data_dir(node)
    out = {
        "blocks": size(data / "ledger" / "chains"),
        "block index": size(data / "ledger" / "index"),
        "raft WAL": size(data / "etcdraft" / "wal"),
        "raft snapshots": size(data / "etcdraft" / "snapshot"),
    }
    out["other"] = size(data) - sum(out.values())
    return out


def wal_per_channel(t: Topology, node: Node) -> dict[str, int]:
    wal = t.node_data_dir(node) / "etcdraft" / "wal"
    return {ch.name: size(ch) for ch in sorted(wal.iterdir())} if wal.exists() else {}


def channel_blocks(t: Topology, node: Node, channel: str) -> int:
    return size(t.node_data_dir(node) / "ledger" / "chains" / channel)


async def ingest(settings: GatewaySettings, bundle: int, clients: int, until: float, stop: asyncio.Event) -> int:
    ctx = ssl.create_default_context(cafile=str(settings.topology.tls_ca_cert(settings.org)))
    headers = {
        "Authorization": f"Bearer {dev_token(settings, 'bench-disk', 'system/*.write', 7200)}",
        "Content-Type": "application/fhir+json",
    }
    done = 0
    async with httpx.AsyncClient(verify=ctx, timeout=120) as http:

        async def client(k: int) -> None:
            nonlocal done
            gen = Synthetic.seeded(k)
            while time.monotonic() < until and not stop.is_set():
                body = json.dumps(gen.transaction(bundle)).encode()
                r = await http.post(f"{settings.url}/fhir", content=body, headers=headers)
                if r.status_code == 200:
                    done += bundle

        await asyncio.gather(*(client(k) for k in range(clients)))
    return done


def free_base(start: int) -> int:
    return next(b for b in range(start, 60000, 1000) if not readiness.answers("127.0.0.1", b + 300))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reuse-network", action="store_true", help="use the network of CARELEDGER_HOME")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--bundle", type=int, default=1000, help="entries per transaction bundle")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--target-mb", type=float, default=120.0, help="stop once providers' blocks reach this")
    parser.add_argument("--port-base", type=int, default=None, help="ports of its own network (default: a free base)")
    args = parser.parse_args()
    if args.reuse_network:
        t = topo.load()
    else:
        t = topo.load(home=topo.REPO_ROOT / "run" / "bench-disk", port_base=args.port_base or free_base(38000))
        control.down(t, purge=True, progress=lambda _m: None)
    control.up(t, progress=lambda _m: None)
    start(t, ORG)
    settings = GatewaySettings.load(t, ORG)
    o1 = t.orderers[0]
    started = time.monotonic()
    until = started + args.minutes * 60
    samples: list[tuple[float, int, dict[str, int]]] = []
    stop = asyncio.Event()

    async def run() -> int:
        task = asyncio.create_task(ingest(settings, args.bundle, args.clients, until, stop))
        while not task.done():
            blocks = channel_blocks(t, o1, CHANNEL)
            samples.append((time.monotonic() - started, blocks, wal_per_channel(t, o1)))
            print(
                f"  {samples[-1][0]:6.0f}s  {CHANNEL} blocks {blocks / MiB:7.1f} MiB  WAL {samples[-1][2]}",
                flush=True,
            )
            if blocks >= args.target_mb * MiB:
                stop.set()
            await asyncio.sleep(15)
        return await task

    try:
        entries = asyncio.run(run())
        elapsed = time.monotonic() - started
        time.sleep(5)
        print(f"\ningested {entries} resources in {elapsed / 60:.1f} min ({entries / elapsed:.0f}/s)")
        reached = channel_blocks(t, o1, CHANNEL) / MiB
        print(f"\ndisk per node (MiB) and per resource (KB), after {CHANNEL} reached {reached:.1f} MiB")
        for node in t.nodes:
            parts = peer_resources(t, node) if node.kind == "peer" else orderer_resources(t, node)
            line = "  ".join(f"{k} {v / MiB:.1f}" for k, v in parts.items() if v)
            total = sum(parts.values())
            per = total / 1000 / entries if entries else 0.0
            print(f"  {node.name:16} total {total / MiB:7.1f}  ({per:.2f} KB/resource)  {line}")
        for name in ("redis", "postgres"):
            print(f"  {name:16} total {size(t.data_dir(name)) / MiB:7.1f}")
        for org in t.member_orgs:
            print(f"  gateway {org.name:8} store {size(t.gateway_home(org)) / MiB:7.1f}")
        print("\norderer WAL per channel over the run (o1, MiB): largest seen, and at the end")
        channels = sorted({ch for _, _, w in samples for ch in w})
        for ch in channels:
            biggest = max(w.get(ch, 0) for _, _, w in samples)
            print(f"  {ch:10} max {biggest / MiB:6.1f}  end {samples[-1][2].get(ch, 0) / MiB:6.1f}")
        snaps = o1.name, sorted(p.name for p in (t.node_data_dir(o1) / "etcdraft" / "snapshot" / CHANNEL).glob("*"))
        print(f"  snapshots of {CHANNEL} on {snaps[0]}: {len(snaps[1])} files {snaps[1][-4:]}")
    finally:
        if not args.reuse_network:
            control.down(t, progress=lambda _m: None)


if __name__ == "__main__":
    main()
