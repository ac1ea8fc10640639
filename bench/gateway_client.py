"""Committed transactions per second and latency of CareLedger's Python Gateway client, beside the official Go
client doing the same writes against the same network in the same run.

    .venv/bin/python bench/gateway_client.py [--reuse-network] [--port-base N] [--rounds N]

Starts its own network in run/bench (ports from --port-base, 37000 by default) unless --reuse-network. Each scenario
submits Probe:Write with unique keys (no conflicts) on `claims` and waits for every commit. Prints
`name  throughput  p50  p99  rss` per client, and the ratio of the better Python client to Go. The Python and Go
clients take turns within each concurrency, and --rounds repeats the whole list, so load from elsewhere on the machine
falls on both alike; the last lines sum up every round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from consortium import connect
from consortium import topology as topo
from fabric_gateway import AsyncGateway, load_msp
from network import control

GO_DIR = Path(__file__).with_name("gogateway")
SCENARIOS = [(1, 150), (16, 1200), (64, 2400)]  # (concurrency, transactions)
ORG = "HospitalOrg"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class Run:
    seconds: float
    latencies_ms: list[float]
    cpu_seconds: float  # the client process's own CPU (user + system, all its threads) over the run


def line(name: str, n: int, run: Run, rss_mib: float) -> str:
    """Throughput, latency, and the client's CPU per transaction: the figure that outside load on the machine
    disturbs least, since the peers and orderers share the same cores."""
    return (
        f"{name:26} {n / run.seconds:8.1f} tx/s  p50 {statistics.median(run.latencies_ms):7.1f} ms"
        f"  p99 {percentile(run.latencies_ms, 0.99):7.1f} ms  cpu {run.cpu_seconds / n * 1e6:6.0f} us/tx"
        f"  rss {rss_mib:6.1f} MiB"
    )


def self_rss_mib() -> float:
    """This process's resident-memory high-water mark."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_python_threads(t: topo.Topology, concurrency: int, count: int) -> Run:
    prefix = f"py-{uuid.uuid4().hex[:6]}"
    latencies = [0.0] * count
    with connect.gateway(t, ORG) as gw:
        contract = gw.network("claims").contract(t.chaincode_name)

        def one(i: int) -> None:
            t0 = time.perf_counter()
            contract.submit("Probe:Write", args=[f"{prefix}-{i}", "v"])
            latencies[i] = (time.perf_counter() - t0) * 1000

        started, cpu = time.perf_counter(), cpu_seconds()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(one, range(count)))
        return Run(time.perf_counter() - started, latencies, cpu_seconds() - cpu)


def run_python_asyncio(t: topo.Topology, concurrency: int, count: int) -> Run:
    org = t.org(ORG)
    identity, signer = load_msp(t.user_dir(org, "User1") / "msp", org.msp_id)
    prefix = f"pya-{uuid.uuid4().hex[:6]}"
    latencies = [0.0] * count

    async def main() -> Run:
        async with AsyncGateway(connect.endpoint(t, org), identity, signer) as gw:
            contract = gw.network("claims").contract(t.chaincode_name)
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(count):
                queue.put_nowait(i)

            async def worker() -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    t0 = time.perf_counter()
                    await contract.submit("Probe:Write", args=[f"{prefix}-{i}", "v"])
                    latencies[i] = (time.perf_counter() - t0) * 1000

            started, cpu = time.perf_counter(), cpu_seconds()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return Run(time.perf_counter() - started, latencies, cpu_seconds() - cpu)

    return asyncio.run(main())


def build_go() -> Path:
    binary = Path(os.environ.get("TMPDIR", "/tmp")) / "careledger-bench-gogateway"
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=GO_DIR, check=True)
    return binary


def run_go(binary: Path, t: topo.Topology, concurrency: int, count: int) -> tuple[Run, float]:
    org = t.org(ORG)
    tls = t.user_dir(org, "User1") / "tls"
    argv = [
        str(binary),
        "-peer", t.peer_of(org).address, "-tls-ca", str(t.tls_ca_cert(org)),
        "-client-cert", str(tls / "client.crt"), "-client-key", str(tls / "client.key"),
        "-msp", str(t.user_dir(org, "User1") / "msp"), "-msp-id", org.msp_id,
        "-channel", "claims", "-chaincode", t.chaincode_name, "-prefix", f"go-{uuid.uuid4().hex[:6]}",
        "-count", str(count), "-concurrency", str(concurrency),
    ]  # fmt: skip
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN)
    result = json.loads(subprocess.run(argv, capture_output=True, check=True).stdout)
    if result["failed"]:
        raise RuntimeError(f"Go client: {result['failed']} transactions failed")
    # The Go process's CPU includes its start and connection: a few ms, next to seconds of work.
    run = Run(result["seconds"], result["latencies_ms"], cpu_seconds(resource.RUSAGE_CHILDREN) - cpu)
    return run, result["peak_rss_kib"] / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reuse-network", action="store_true", help="use the network of CARELEDGER_HOME")
    parser.add_argument("--port-base", type=int, default=37000, help="ports of the bench's own network")
    parser.add_argument("--rounds", type=int, default=1, help="how many times to run every scenario")
    args = parser.parse_args()
    home = topo.REPO_ROOT / "run" / "bench"
    t = topo.load() if args.reuse_network else topo.load(home=home, port_base=args.port_base)
    if not args.reuse_network:
        control.down(t, purge=True, progress=lambda _m: None)
    control.up(t, progress=lambda _m: None)
    binary = build_go()
    ratios: dict[int, list[str]] = {c: [] for c, _ in SCENARIOS}
    cpu: dict[str, list[float]] = {}
    try:
        run_python_threads(t, 8, 100)  # warm up connections, chaincode and JIT-free paths alike
        for _ in range(args.rounds):
            for concurrency, count in SCENARIOS:
                threads = run_python_threads(t, concurrency, count)
                print(line(f"python-threads c={concurrency}", count, threads, self_rss_mib()), flush=True)
                aio = run_python_asyncio(t, concurrency, count)
                print(line(f"python-asyncio c={concurrency}", count, aio, self_rss_mib()), flush=True)
                go, go_rss = run_go(binary, t, concurrency, count)
                print(line(f"go-official c={concurrency}", count, go, go_rss), flush=True)
                rates = [count / r.seconds for r in (threads, aio, go)]
                ratio = max(rates[:2]) / rates[2]
                print(f"{'ratio python/go':26} {ratio:8.2f}", flush=True)
                ratios[concurrency].append(
                    f"{ratio:.2f} (threads {rates[0]:.0f}, asyncio {rates[1]:.0f}, go {rates[2]:.0f} tx/s)"
                )
                for name, r in (("threads", threads), ("asyncio", aio), ("go", go)):
                    cpu.setdefault(f"c={concurrency:<3} {name}", []).append(r.cpu_seconds / count * 1e6)
        for concurrency, measured in ratios.items():
            print(f"c={concurrency:<3} python/go per round: {'; '.join(measured)}", flush=True)
        for name, per_tx in cpu.items():
            print(f"{name:12} client cpu us/tx per round: {' '.join(f'{v:.0f}' for v in per_tx)}", flush=True)
    finally:
        if not args.reuse_network:
            control.down(t, purge=True, progress=lambda _m: None)


if __name__ == "__main__":
    main()
