"""FHIR ingest through the full stack: committed resources per second and bundle latency, for transaction bundles of
1, 10 and 100 entries POSTed to HospitalOrg's running gateway (HTTPS, bearer token) on a real network; then where
the time of one 100-entry bundle goes, stage by stage, measured in this process on the same code.

    .venv/bin/python bench/ingest.py [--reuse-network] [--seconds 20] [--port-base N]
    .venv/bin/python bench/ingest.py --real [--processes 1,2] [--stores sqlite,postgresql] [--clients 1,4]
        [--patients N]

--real: the published Synthea bundles of tests/data/synthea (and of the folders CARELEDGER_EXTRA_BUNDLES names),
POSTed as published, by 1 and by 4 clients (--clients), for each gateway process count and each store (the gateway is
restarted for each); a resource counts once its bundle is answered 200. Each scenario then waits until the bundles'
Claims are on chain (the claim outbox submits them after their bundle) and says how long that took. --patients N
adds copies of the bundles with their Patient's identifiers changed, so that N patients are written.

Starts its own network and gateway in run/bench (ports from CARELEDGER_TEST_PORT_BASE, else 37000) unless
--reuse-network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import httpx
from cpu_use import cpu_by_process, cpu_report  # bench/cpu_use.py

from consortium import topology as topo
from consortium.processes import rss_bytes
from gateway.cli import process, start
from gateway.dev_issuer import dev_token
from gateway.settings import GatewaySettings
from network import control
from records import digests, json_form
from records import validation as fv
from records.store import Row, Store
from records.synthetic import Synthetic

ORG = "HospitalOrg"
SCENARIOS = [(1, 32), (10, 16), (100, 8)]  # (entries per bundle, concurrent clients)
FIXTURES = topo.REPO_ROOT / "tests" / "data" / "synthea"


def real_bundles(patients: int = 1) -> list[bytes]:
    """The published bundles, byte for byte as published; with `patients` > 1, also copies of each whose Patient
    identifiers carry a suffix per copy, so that the bundles write that many different patients (the fixtures hold
    one patient's record, and bundles of one patient queue behind each other, as an EHR feed of many does not)."""
    folders = [FIXTURES] + [Path(p) for p in os.environ.get("CARELEDGER_EXTRA_BUNDLES", "").split(os.pathsep) if p]
    published = [f.read_bytes() for folder in folders for f in sorted(folder.glob("*.json"))]
    copies = []
    for n in range(1, patients):
        for body in published:
            bundle = json.loads(body)
            for entry in bundle["entry"]:
                if entry["resource"]["resourceType"] == "Patient":
                    for identifier in entry["resource"].get("identifier", []):
                        identifier["value"] = f"{identifier['value']}-{n}"
            copies.append(json.dumps(bundle).encode())
    return published + copies


async def post_for(
    settings: GatewaySettings, bodies: list[tuple[bytes, int]], concurrency: int, seconds: float
) -> tuple[int, list[float], int, float]:
    """POST the bodies round robin from `concurrency` clients for `seconds`: (resources committed, latencies in ms,
    failures, elapsed seconds)."""
    ctx = ssl.create_default_context(cafile=str(settings.topology.tls_ca_cert(settings.org)))
    headers = {
        "Authorization": f"Bearer {dev_token(settings, 'bench', 'system/*.write', 3600)}",
        "Content-Type": "application/fhir+json",
    }
    latencies: list[float] = []
    committed = 0
    failures = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(verify=ctx, timeout=600, limits=limits) as http:

        async def client(k: int) -> None:
            nonlocal failures, committed
            i = k
            while time.monotonic() < deadline:
                body, entries = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                # A key of its own: two clients posting the same bundle at once are two writes, not one request
                # sent twice (which the gateway answers with the first one's result, writing nothing).
                own = {**headers, "Idempotency-Key": uuid.uuid4().hex}
                r = await http.post(f"{settings.url}/fhir", content=body, headers=own)
                if r.status_code == 200:
                    latencies.append((time.perf_counter() - t0) * 1000)
                    committed += entries
                else:
                    failures += 1
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - started
    return committed, latencies, failures, elapsed


def real_scenarios(
    t: topo.Topology,
    processes: list[int],
    stores: list[str],
    clients_counts: list[int],
    seconds: float,
    patients: int = 1,
) -> None:
    """The published bundles by each count of clients, for each store and gateway process count."""
    bodies = [(b, len(json.loads(b)["entry"])) for b in real_bundles(patients)]
    copies = " and copies" if patients > 1 else ""
    entries = sum(n for _, n in bodies)
    print(f"real bundles: {len(bodies)} (published{copies}), {patients} patient(s), {entries} entries", flush=True)
    for store in stores:
        for count in processes:
            os.environ["CARELEDGER_GATEWAY_PROCESSES"] = str(count)
            if store == "postgresql":
                os.environ["CARELEDGER_STORE_URL"] = t.postgres_url("{org}")
            else:
                os.environ.pop("CARELEDGER_STORE_URL", None)
            process(t, ORG).stop()
            start(t, ORG)
            settings = GatewaySettings.load(t, ORG)
            asyncio.run(post_for(settings, bodies[:1], 1, 1))  # warm up: one bundle
            outbox_drained(settings)
            for clients in clients_counts:
                cpu_before = cpu_by_process(t)
                n, latencies, failures, elapsed = asyncio.run(post_for(settings, bodies, clients, seconds))
                cpu = cpu_report(cpu_before, cpu_by_process(t), elapsed)
                queued, drain = outbox_drained(settings)  # each scenario starts with the outbox empty
                p50 = statistics.median(latencies) if latencies else 0.0
                print(
                    f"real {store:10} processes={count} c={clients}: {n / elapsed:7.1f} resources/s"
                    f"  {len(latencies) / elapsed:5.2f} bundles/s  p50 {p50:7.0f} ms  failures {failures}\n"
                    f"      claims queued at the end {queued}, all on chain {drain:.0f} s later:"
                    f" {n / (elapsed + drain):7.1f} resources/s with every claim submitted\n{cpu}",
                    flush=True,
                )
    os.environ.pop("CARELEDGER_STORE_URL", None)
    os.environ["CARELEDGER_GATEWAY_PROCESSES"] = "1"
    print("where the time of one published bundle goes, outside the ledger, in one process (median of 5):")
    for line in stage_breakdown(5, [b for b, _ in bodies]):
        print(line, flush=True)


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


def metric(settings: GatewaySettings, name: str) -> float:
    """One unlabelled sample of the gateway's /metrics (0 when absent)."""
    ctx = ssl.create_default_context(cafile=str(settings.topology.tls_ca_cert(settings.org)))
    with urllib.request.urlopen(f"{settings.url}/metrics", context=ctx) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.split(" ", 1)[0] == name:
            return float(line.split()[1])
    return 0.0


def outbox_drained(settings: GatewaySettings, limit_s: float = 900.0) -> tuple[int, float]:
    """(claims still queued when the last bundle was answered, seconds until the outbox had submitted them all): the
    bundles' Claims go on chain after their bundle commits, and what is still queued is load not yet carried."""
    started = time.monotonic()
    queued = first = int(metric(settings, "claim_outbox_queued"))
    while queued and time.monotonic() - started < limit_s:
        time.sleep(0.5)
        queued = int(metric(settings, "claim_outbox_queued"))
    return first, time.monotonic() - started


def stage_breakdown(rounds: int = 20, bodies: list[bytes] | None = None) -> list[str]:
    """Per bundle (by default 100-entry synthetic ones): parse + validate, canonical JSON + keyed digests, encrypt +
    stage in SQLite; all in this one process."""
    if bodies is None:
        gen = Synthetic.seeded(1)
        bodies = [json.dumps(gen.transaction(100)).encode() for _ in range(rounds)]
    else:
        bodies = [bodies[n % len(bodies)] for n in range(rounds)]
    timings: dict[str, list[float]] = {"parse+validate": [], "canonical+digest": [], "encrypt+store": []}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "s.sqlite", b"k" * 32)
        for n, body in enumerate(bodies):
            t0 = time.perf_counter()
            entries = fv.transaction_entries(fv.envelope(body))
            t1 = time.perf_counter()
            key = store.digest_key("p" * 64)
            contents = []
            for i, e in enumerate(entries):  # as the write path does for a record: its v2 (element) digest
                contents.append(json_form.stored(e.resource))
                digests.digest(digests.V2, key, e.resource, f"{e.resource['resourceType']}/{n}-{i}", 1)
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
    return [f"  {name:18} {statistics.median(ms):7.1f} ms per bundle" for name, ms in timings.items()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reuse-network", action="store_true", help="use the network of CARELEDGER_HOME")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each scenario")
    parser.add_argument("--port-base", type=int, default=int(os.environ.get("CARELEDGER_TEST_PORT_BASE") or 37000))
    parser.add_argument("--real", action="store_true", help="the published Synthea bundles instead")
    parser.add_argument("--processes", default="1,2", help="gateway process counts of --real")
    parser.add_argument("--stores", default="sqlite,postgresql", help="stores of --real")
    parser.add_argument("--clients", default="1,4", help="concurrent clients of --real")
    parser.add_argument("--patients", type=int, default=1, help="patients --real writes (copies of the bundles)")
    args = parser.parse_args()
    home = topo.REPO_ROOT / "run" / "bench"
    t = topo.load() if args.reuse_network else topo.load(home=home, port_base=args.port_base)
    if not args.reuse_network:
        control.down(t, purge=True, progress=lambda _m: None)
    control.up(t, progress=lambda _m: None)
    if args.real:
        try:
            processes = [int(p) for p in args.processes.split(",")]
            clients = [int(c) for c in args.clients.split(",")]
            real_scenarios(t, processes, args.stores.split(","), clients, args.seconds, args.patients)
        finally:
            if not args.reuse_network:
                control.down(t, purge=True, progress=lambda _m: None)
        return
    start(t, ORG)
    settings = GatewaySettings.load(t, ORG)
    try:
        asyncio.run(scenario(settings, 10, 4, 3))  # warm up
        for size, concurrency in SCENARIOS:
            print(asyncio.run(scenario(settings, size, concurrency, args.seconds)), flush=True)
        print("where the time of one 100-entry bundle goes, outside the ledger (median of 20):")
        for line in stage_breakdown():
            print(line, flush=True)
    finally:
        if not args.reuse_network:
            control.down(t, purge=True, progress=lambda _m: None)


if __name__ == "__main__":
    main()
