"""FHIR ingest through the full stack: committed resources per second and bundle latency, for transaction bundles of
1, 10 and 100 entries POSTed to HospitalOrg's running gateway (HTTPS, bearer token) on a real network; then where
the time of one 100-entry bundle goes, stage by stage, measured in this process on the same code.

    .venv/bin/python bench/ingest.py [--reuse-network] [--seconds 20]

Starts its own network and gateway in run/bench (ports from 37000) unless --reuse-network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx

from consortium import topology as topo
from consortium.processes import rss_bytes
from gateway.cli import process, start
from gateway.dev_issuer import dev_token
from gateway.settings import GatewaySettings
from network import control
from records import digests
from records import validation as fv
from records.store import Row, Store
from records.synthetic import Synthetic

ORG = "HospitalOrg"
SCENARIOS = [(1, 32), (10, 16), (100, 8)]  # (entries per bundle, concurrent clients)


async def scenario(settings: GatewaySettings, size: int, concurrency: int, seconds: float) -> str:
    ctx = ssl.create_default_context(cafile=str(settings.topology.tls_ca_cert(settings.org)))
    headers = {
        "Authorization": f"Bearer {dev_token(settings, 'bench', 'system/*.write', 3600)}",
        "Content-Type": "application/fhir+json",
    }
    gen = Synthetic.seeded(size)
    bodies = [json.dumps(gen.transaction(size)).encode() for _ in range(64)]
    latencies: list[float] = []
    failures = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(verify=ctx, timeout=60, limits=limits) as http:

        async def client(k: int) -> None:
            nonlocal failures
            i = k
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                r = await http.post(f"{settings.url}/fhir", content=bodies[i % len(bodies)], headers=headers)
                if r.status_code == 200:
                    latencies.append((time.perf_counter() - t0) * 1000)
                else:
                    failures += 1
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - started
    pid = process(settings.topology, ORG).pid()
    rss = rss_bytes(pid) / 2**20 if pid else 0.0
    committed = len(latencies) * size
    return (
        f"bundle {size:3} x c={concurrency:2}: {committed / elapsed:7.1f} resources/s"
        f"  {len(latencies) / elapsed:6.1f} bundles/s  p50 {statistics.median(latencies):7.1f} ms"
        f"  p99 {statistics.quantiles(latencies, n=100)[98]:7.1f} ms  failures {failures}  gateway rss {rss:5.1f} MiB"
    )


def ledger_seconds(settings: GatewaySettings) -> tuple[float, float]:
    """(sum, count) of the gateway's ledger round-trip histogram."""
    ctx = ssl.create_default_context(cafile=str(settings.topology.tls_ca_cert(settings.org)))
    with urllib.request.urlopen(f"{settings.url}/metrics", context=ctx) as r:
        text = r.read().decode()
    values = {
        line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("ledger_register_")
    }
    return values.get("ledger_register_seconds_sum", 0.0), values.get("ledger_register_seconds_count", 0.0)


def stage_breakdown(rounds: int = 20) -> list[str]:
    """Per 100-entry bundle: parse + validate, canonical JSON + keyed digests, encrypt + stage in SQLite."""
    gen = Synthetic.seeded(1)
    bodies = [json.dumps(gen.transaction(100)).encode() for _ in range(rounds)]
    timings: dict[str, list[float]] = {"parse+validate": [], "canonical+digest": [], "encrypt+store": []}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "s.sqlite", b"k" * 32)
        for n, body in enumerate(bodies):
            t0 = time.perf_counter()
            entries = fv.transaction_entries(fv.envelope(body))
            t1 = time.perf_counter()
            key = store.digest_key("p" * 64)
            contents = []
            for e in entries:
                contents.append(digests.canonical_json(e.resource))
                digests.resource_digest(key, e.resource)
            t2 = time.perf_counter()
            rows = [
                Row("Observation", f"{n}-{i}", 1, "p" * 64, "2026-01-01T00:00:00Z", c) for i, c in enumerate(contents)
            ]
            store.stage(f"b{n}", rows)
            store.commit(f"b{n}", "tx")
            t3 = time.perf_counter()
            timings["parse+validate"].append((t1 - t0) * 1000)
            timings["canonical+digest"].append((t2 - t1) * 1000)
            timings["encrypt+store"].append((t3 - t2) * 1000)
        store.close()
    return [f"  {name:18} {statistics.median(ms):7.1f} ms per 100-entry bundle" for name, ms in timings.items()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reuse-network", action="store_true", help="use the network of CARELEDGER_HOME")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each scenario")
    args = parser.parse_args()
    t = topo.load() if args.reuse_network else topo.load(home=topo.REPO_ROOT / "run" / "bench", port_base=37000)
    if not args.reuse_network:
        control.down(t, purge=True, progress=lambda _m: None)
    control.up(t, progress=lambda _m: None)
    start(t, ORG)
    settings = GatewaySettings.load(t, ORG)
    try:
        asyncio.run(scenario(settings, 10, 4, 3))  # warm up
        for size, concurrency in SCENARIOS:
            before = ledger_seconds(settings)
            print(asyncio.run(scenario(settings, size, concurrency, args.seconds)), flush=True)
            after = ledger_seconds(settings)
            calls = after[1] - before[1]
            if calls:
                mean_ms = 1000 * (after[0] - before[0]) / calls
                print(f"  ledger round trip inside the gateway (store + Records:Register): {mean_ms:.1f} ms mean")
        print("where the time of one 100-entry bundle goes, outside the ledger (median of 20):")
        for line in stage_breakdown():
            print(line, flush=True)
    finally:
        if not args.reuse_network:
            control.down(t, purge=True, progress=lambda _m: None)


if __name__ == "__main__":
    main()
