"""Claim turnaround through the whole stack: from the POST of a FHIR Claim at HospitalOrg's gateway until the
insurer's ClaimResponse is stored at the hospital (its worker announces that on the hospital's Redis stream), at a
fixed offered rate of 10 and 50 claims/s.

    .venv/bin/python bench/claims.py [--reuse-network] [--seconds 30]

Starts its own network, gateways, listeners and workers in run/bench (ports from 37000) unless --reuse-network.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import ssl
import statistics
import threading
import time
import uuid

import httpx
import redis

from consortium import topology as topo
from consortium.processes import cpu_seconds, rss_bytes
from consortium.redis_keys import OrgKeys
from consortium.topology import Topology
from gateway import cli as gateway_cli
from gateway.serve import GatewaySettings, dev_token
from network import control
from network.control import managed_processes
from records import synthetic
from workers import cli as worker_cli

RATES = [10, 50]
MEMBERS = 60


def client(t: Topology, org: str) -> tuple[GatewaySettings, httpx.AsyncClient]:
    s = GatewaySettings.load(t, org)
    headers = {
        "Authorization": f"Bearer {dev_token(s, 'bench', 'system/*.read system/*.write', 7200)}",
        "Content-Type": "application/fhir+json",
    }
    ctx = ssl.create_default_context(cafile=str(t.tls_ca_cert(s.org)))
    return s, httpx.AsyncClient(base_url=f"{s.url}/fhir", verify=ctx, headers=headers, timeout=60)


async def enrol(hospital: httpx.AsyncClient, insurer: httpx.AsyncClient, n: int) -> list[str]:
    """n covered members; returns their Patient ids at the hospital."""
    gen = synthetic.Synthetic.seeded(None)  # new members every run, also on a reused network
    ids = []
    for _ in range(n):
        mpi = gen.mpi_value()
        r = await hospital.post("", content=json.dumps(gen.transaction(1, mpi)))
        ids.append(r.json()["entry"][0]["response"]["location"].split("/")[1])
        coverage = synthetic.coverage(mpi, "InsurerMSP", "2026-01-01", "2027-12-31")
        await insurer.post("/Coverage", content=json.dumps(coverage))
    return ids


class Arrivals:
    """Reads the hospital's claim stream in a thread: when each claim's ClaimResponse arrived."""

    def __init__(self, t: Topology) -> None:
        self.r = redis.Redis.from_url(t.redis_url_for("HospitalOrg"))  # as the hospital EHR reads it
        self.stream = OrgKeys("HospitalMSP").stream("claims")
        self.at: dict[str, float] = {}
        self.stop = threading.Event()
        self.last = "$"
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            for _, entries in self.r.xread({self.stream: self.last}, block=200) or []:
                for entry_id, fields in entries:
                    self.last = entry_id
                    if fields[b"event"] == b"Claims.Adjudicated":
                        self.at.setdefault(fields[b"claimId"].decode(), time.monotonic())


async def offered_load(hospital: httpx.AsyncClient, members: list[str], rate: int, seconds: float) -> dict[str, float]:
    """POST claims at `rate` per second for `seconds`; returns claim id -> POST start time."""
    started: dict[str, float] = {}
    today = datetime.date.today().isoformat()
    run_id = uuid.uuid4().hex[:6]
    tasks = []

    async def one(n: int) -> None:
        t0 = time.monotonic()
        code = f"B{run_id}{n:05d}"  # unique codes: no duplicates, every claim approved
        claim = synthetic.claim(members[n % len(members)], "InsurerMSP", [(code, 1, "42.00")], today, "Coverage/b")
        r = await hospital.post("/Claim", content=json.dumps(claim))
        if r.status_code == 201:
            started[r.json()["id"]] = t0

    begin = time.monotonic()
    for n in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, begin + n / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(n + rate * 100_000)))
    await asyncio.gather(*tasks)
    return started


def report(rate: int, started: dict[str, float], arrivals: Arrivals, t: Topology) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(c in arrivals.at for c in started):
        time.sleep(0.2)
    done = [arrivals.at[c] - s for c, s in started.items() if c in arrivals.at]
    if not done:
        return f"{rate:3} claims/s offered: {len(started)} submitted, none answered within 60 s"
    rss = sum(rss_bytes(p) for org in worker_cli.orgs_with_workers(t) if (p := worker_cli.worker_process(t, org).pid()))
    return (
        f"{rate:3} claims/s offered: {len(started)} submitted, {len(done)} answered;"
        f"  turnaround p50 {statistics.median(done):5.2f} s  p99 {statistics.quantiles(done, n=100)[98]:5.2f} s"
        f"  max {max(done):5.2f} s   worker rss (3 orgs) {rss / 2**20:5.0f} MiB"
    )


def cpu_by_process(t: Topology) -> dict[str, float]:
    out = {}
    for proc in managed_processes(t):
        if (pid := proc.pid()) is not None:
            out[proc.name] = cpu_seconds(pid)
    return out


def cpu_report(before: dict[str, float], after: dict[str, float], wall: float) -> str:
    """Where the CPU went: each process's share of one core over the run, largest first (2 cores = 200 %)."""
    used = sorted(((after[n] - before.get(n, 0.0), n) for n in after), reverse=True)
    total = sum(u for u, _ in used)
    parts = ", ".join(f"{n} {100 * u / wall:.0f}%" for u, n in used if u / wall >= 0.03)
    return f"      cpu {100 * total / wall:.0f}% of 200%: {parts}"


async def run(t: Topology, seconds: float, rates: list[int]) -> None:
    _, hospital = client(t, "HospitalOrg")
    _, insurer = client(t, "InsurerOrg")
    members = await enrol(hospital, insurer, MEMBERS)
    arrivals = Arrivals(t)
    for rate in rates:
        cpu_before, wall = cpu_by_process(t), time.monotonic()
        started = await offered_load(hospital, members, rate, seconds)
        print(await asyncio.to_thread(report, rate, started, arrivals, t), flush=True)
        print(cpu_report(cpu_before, cpu_by_process(t), time.monotonic() - wall), flush=True)
    arrivals.stop.set()
    await hospital.aclose()
    await insurer.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reuse-network", action="store_true", help="use the network of CARELEDGER_HOME")
    parser.add_argument("--seconds", type=float, default=30.0, help="duration of each offered rate")
    parser.add_argument("--rates", type=int, nargs="+", default=RATES, help="offered claims per second")
    args = parser.parse_args()
    t = topo.load() if args.reuse_network else topo.load(home=topo.REPO_ROOT / "run" / "bench", port_base=37000)
    if not args.reuse_network:
        control.down(t, purge=True, progress=lambda _m: None)
    control.up(t, progress=lambda _m: None)
    for org in gateway_cli.orgs_with_gateways(t):
        gateway_cli.start(t, org)
    for org in worker_cli.orgs_with_workers(t):
        worker_cli.start_worker(t, org)
        worker_cli.start_listener(t, org)
    try:
        asyncio.run(run(t, args.seconds, args.rates))
    finally:
        if not args.reuse_network:
            control.down(t, purge=True, progress=lambda _m: None)


if __name__ == "__main__":
    main()
