"""Claim turnaround through the whole stack: from the POST of a FHIR Claim at HospitalOrg's gateway until the
insurer's ClaimResponse is stored at the hospital (its worker announces that on the hospital's Redis stream), at
fixed offered rates; and from adjudication until the claim is paid (the remittance reaches the hospital).

    .venv/bin/python bench/claims.py [--reuse-network] [--seconds 60] [--rates 10 50 100] [--preauth 0.3]
                                     [--members 600] [--keep]

Every claim offered counts: a POST that is not 201, and a claim not answered within 60 s of the end of its rate,
are failures, and they count in the percentiles as slower than anything answered (an unanswered claim is not a fast
one). A warm-up at a low rate runs first and is not reported. `--preauth 0.3`: 30 % of what is offered are prior
authorisation requests (`Claim/$submit`), timed until their decision arrives at the hospital. The backlog (offered
and not yet answered, POSTs still in flight included) is sampled every 5 s; a backlog that keeps growing means the
rate is above capacity: its trend (the least-squares slope, claims/s) is printed too. Besides POST -> answer it
reports POST -> 201, the part spent before the claim is on chain.

Starts its own network, gateways, listeners and workers in run/bench (ports from --port-base, 24000) unless
--reuse-network.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import ssl
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import redis
from cpu_use import CORES, cpu_by_process, cpu_report  # bench/cpu_use.py

from consortium import topology as topo
from consortium.redis_keys import OrgKeys
from consortium.topology import Topology
from gateway import cli as gateway_cli
from gateway.dev_issuer import dev_token
from gateway.settings import GatewaySettings
from network import control
from records import synthetic
from workers import cli as worker_cli

RATES = [10, 50, 100]
MEMBERS = 600  # a payer taking tens of claims a second has far more members; 60 put ~1 claim a second on each
ANSWER_WAIT_S = 60.0
WARM_UP = (5, 10.0)  # claims/s, seconds
SAMPLE_EVERY_S = 5.0


class Poster:
    """The offered load's POSTs, on aiohttp: httpx's connection pool scans every connection for each request, and
    at 35 claims/s that alone took half a core of this machine from the stack under test."""

    def __init__(self, t: Topology, org: str) -> None:
        s = GatewaySettings.load(t, org)
        self.base = f"{s.url}/fhir"
        self.headers = {
            "Authorization": f"Bearer {dev_token(s, 'bench', 'system/*.read system/*.write', 7200)}",
            "Content-Type": "application/fhir+json",
        }
        self.tls = ssl.create_default_context(cafile=str(t.tls_ca_cert(s.org)))
        self.session: aiohttp.ClientSession | None = None

    async def post(self, path: str, body: str) -> tuple[int, dict[str, Any]]:
        if self.session is None:
            connector = aiohttp.TCPConnector(ssl=self.tls, limit=200)
            timeout = aiohttp.ClientTimeout(total=60)
            self.session = aiohttp.ClientSession(connector=connector, headers=self.headers, timeout=timeout)
        async with self.session.post(self.base + path, data=body.encode()) as r:
            return r.status, (await r.json(content_type=None) if r.status == 201 else {})

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def client(t: Topology, org: str) -> httpx.AsyncClient:
    s = GatewaySettings.load(t, org)
    headers = {
        "Authorization": f"Bearer {dev_token(s, 'bench', 'system/*.read system/*.write', 7200)}",
        "Content-Type": "application/fhir+json",
    }
    ctx = ssl.create_default_context(cafile=str(t.tls_ca_cert(s.org)))
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    return httpx.AsyncClient(base_url=f"{s.url}/fhir", verify=ctx, headers=headers, timeout=60, limits=limits)


async def enrol(hospital: httpx.AsyncClient, insurer: httpx.AsyncClient, n: int) -> list[str]:
    """n covered members (enrolled a few at a time); returns their Patient ids at the hospital."""
    gen = synthetic.Synthetic.seeded(None)  # new members every run, also on a reused network
    gate = asyncio.Semaphore(8)

    async def one() -> str:
        mpi = gen.mpi_value()
        async with gate:
            r = await hospital.post("", content=json.dumps(gen.transaction(1, mpi)))
            r.raise_for_status()
            coverage = synthetic.coverage(mpi, "InsurerMSP", "2026-01-01", "2027-12-31")
            (await insurer.post("/Coverage", content=json.dumps(coverage))).raise_for_status()
        return str(r.json()["entry"][0]["response"]["location"].split("/")[1])

    return list(await asyncio.gather(*(one() for _ in range(n))))


class Arrivals:
    """Reads the hospital's claim stream in a thread: when each claim's answer (ClaimResponse, or prior
    authorisation decision) and its payment arrived, by the hospital's own Claim id."""

    def __init__(self, t: Topology) -> None:
        self.r = redis.Redis.from_url(t.redis_url_for("HospitalOrg"))  # as the hospital EHR reads it
        self.stream = OrgKeys("HospitalMSP").stream("claims")
        self.answered: dict[str, float] = {}
        self.adjudicated_key: dict[str, str] = {}  # chain key -> local id, for payments
        self.paid: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.last = "$"
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            found: list[tuple[bytes, list[tuple[str, dict[bytes, bytes]]]]] = self.r.xread(  # type: ignore[assignment]
                {self.stream: self.last}, block=200
            )
            for _, entries in found or []:
                for entry_id, fields in entries:
                    self.last = entry_id
                    self.note(fields[b"event"].decode(), json.loads(fields[b"claim"]), time.monotonic())

    def note(self, event: str, claim: dict[str, object], at: float) -> None:
        with self.lock:
            if event in ("Claims.Adjudicated", "Claims.PreauthDecided"):
                local = str(claim.get("claim", "")).removeprefix("Claim/")
                self.answered.setdefault(local, at)
                self.adjudicated_key[str(claim.get("claimId"))] = local
            elif event == "Claims.PaidBatch":
                for line in claim.get("lines") or []:  # type: ignore[attr-defined]
                    self.paid.setdefault(str(line["claimId"]), at)
            elif event == "Claims.Paid":
                self.paid.setdefault(str(claim.get("claimId")), at)


@dataclass
class Offered:
    """What one rate offered: when each POST started, by the Claim id the gateway gave it; what failed."""

    rate: int
    started: dict[str, float] = field(default_factory=dict)
    refused: int = 0  # POSTs answered with anything but 201 (or not answered at all)
    why: Counter[str] = field(default_factory=Counter)  # refusals by status code or error
    preauth: set[str] = field(default_factory=set)
    backlog: list[tuple[float, int]] = field(default_factory=list)
    posted: list[float] = field(default_factory=list)  # seconds until each 201 (the claim committed on chain)
    in_flight: int = 0  # POSTs sent and not answered yet


def _claim(member: str, code: str, today: str, preauth: bool) -> dict[str, object]:
    claim = synthetic.claim(member, "InsurerMSP", [(code, 1, "42.00")], today, "Coverage/b")
    if preauth:
        claim |= {"use": "preauthorization"}
    return claim


async def offered_load(
    hospital: Poster, members: list[str], rate: int, seconds: float, preauth: float, arrivals: Arrivals
) -> Offered:
    """POST claims at `rate` per second for `seconds` (every `1/preauth`-th one a prior authorisation request)."""
    out = Offered(rate)
    today = datetime.date.today().isoformat()
    run_id = uuid.uuid4().hex[:6]
    tasks = []

    async def one(n: int) -> None:
        t0 = time.monotonic()
        is_pa = int((n + 1) * preauth) > int(n * preauth)  # an even spread: `preauth` of all requests
        code = f"B{run_id}{n:05d}"  # unique codes: no duplicates, every claim approved
        body = json.dumps(_claim(members[n % len(members)], code, today, is_pa))
        out.in_flight += 1
        try:
            status, answer = await hospital.post("/Claim/$submit" if is_pa else "/Claim", body)
        except (aiohttp.ClientError, TimeoutError) as e:
            out.refused += 1
            out.why[type(e).__name__] += 1
            return
        finally:
            out.in_flight -= 1
        if status == 201:
            out.posted.append(time.monotonic() - t0)
        if is_pa and status == 201:  # the PAS answer: a Bundle whose ClaimResponse names the Claim
            local = _pas_claim_id(answer)
            out.started[local] = t0
            out.preauth.add(local)
        elif not is_pa and status == 201:
            out.started[answer["id"]] = t0
        else:
            out.refused += 1
            out.why[str(status)] += 1

    async def sample() -> None:
        begin = time.monotonic()
        while True:
            await asyncio.sleep(SAMPLE_EVERY_S)
            with arrivals.lock:
                waiting = out.in_flight + sum(1 for c in out.started if c not in arrivals.answered)
            out.backlog.append((time.monotonic() - begin, waiting))

    sampler = asyncio.create_task(sample())
    begin = time.monotonic()
    for n in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, begin + n / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(n + rate * 100_000)))
    await asyncio.gather(*tasks)
    sampler.cancel()
    return out


def _pas_claim_id(bundle: dict[str, object]) -> str:
    for entry in bundle.get("entry") or []:  # type: ignore[attr-defined]
        resource = entry.get("resource") or {}
        if resource.get("resourceType") == "ClaimResponse":
            return str(resource.get("request", {}).get("reference", "")).removeprefix("Claim/")
    return ""


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank); inf counts as slower than everything."""
    ranked = sorted(values)
    return ranked[max(0, math.ceil(p / 100 * len(ranked)) - 1)]


def fmt(seconds: float) -> str:
    return "  >60 s" if math.isinf(seconds) else f"{seconds:5.2f} s"


def _settled(offered: Offered, arrivals: Arrivals) -> bool:
    """Every claim offered is answered, and every answered claim (not a prior authorisation) is paid."""
    with arrivals.lock:
        if not all(c in arrivals.answered for c in offered.started):
            return False
        paid_local = {arrivals.adjudicated_key.get(k) for k in arrivals.paid}
        return all(c in paid_local for c in offered.started if c not in offered.preauth)


def report(offered: Offered, arrivals: Arrivals) -> list[str]:
    deadline = time.monotonic() + ANSWER_WAIT_S
    while time.monotonic() < deadline and not _settled(offered, arrivals):
        time.sleep(0.2)
    with arrivals.lock:
        answered = dict(arrivals.answered)
        paid_by_key = dict(arrivals.paid)
        local_of = dict(arrivals.adjudicated_key)
    total = len(offered.started) + offered.refused
    times = [answered[c] - s if c in answered else math.inf for c, s in offered.started.items()]
    times += [math.inf] * offered.refused
    unanswered = sum(1 for c in offered.started if c not in answered)
    lines = [
        f"{offered.rate:3} claims/s offered: {total} offered, {offered.refused} refused (not 201), "
        f"{unanswered} unanswered within {ANSWER_WAIT_S:.0f} s, {len(offered.preauth)} prior authorisations",
    ]
    if offered.why:
        lines.append("      refused: " + ", ".join(f"{n} x {why}" for why, n in offered.why.most_common()))
    if times:
        lines.append(
            f"      POST -> answer at the provider: p50 {fmt(percentile(times, 50))}  p99 {fmt(percentile(times, 99))}"
            f"  (failures count as > 60 s)"
        )
    if offered.posted:
        posted = fmt(percentile(offered.posted, 50)), fmt(percentile(offered.posted, 99))
        lines.append(f"      of which POST -> 201 (claim on chain): p50 {posted[0]}  p99 {posted[1]}")
    paid = [
        paid_by_key[key] - answered[local]
        for key, local in local_of.items()
        if local in offered.started and local not in offered.preauth and key in paid_by_key and local in answered
    ]
    claims = len([c for c in offered.started if c not in offered.preauth])
    if claims:
        p99 = fmt(percentile(paid + [math.inf] * (claims - len(paid)), 99))
        lines.append(f"      answer -> paid at the provider: {len(paid)} of {claims} paid; p99 {p99}")
    if offered.backlog:
        trail = ", ".join(f"{t:.0f}s:{n}" for t, n in offered.backlog)
        lines.append(f"      backlog (offered, not yet answered) every {SAMPLE_EVERY_S:.0f} s: {trail}")
        lines.append(f"      backlog trend: {trend(offered.backlog):+.1f} claims/s (least squares over the samples)")
    return lines


def trend(samples: list[tuple[float, int]]) -> float:
    """How fast the backlog grew, in claims a second: the slope of the least-squares line through the samples. A
    rate the stack keeps up with has a trend near 0 however much its backlog wobbles; above capacity it is the
    shortfall (offered minus answered per second)."""
    if len(samples) < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / len(samples)
    mean_n = sum(n for _, n in samples) / len(samples)
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    return sum((t - mean_t) * (n - mean_n) for t, n in samples) / spread if spread else 0.0


async def run(t: Topology, seconds: float, rates: list[int], preauth: float, n_members: int = MEMBERS) -> None:
    hospital, insurer = client(t, "HospitalOrg"), client(t, "InsurerOrg")
    members = await enrol(hospital, insurer, n_members)
    arrivals = Arrivals(t)
    poster = Poster(t, "HospitalOrg")
    await offered_load(poster, members, WARM_UP[0], WARM_UP[1], preauth, arrivals)  # warm-up, not reported
    for rate in rates:
        cpu_before, wall = cpu_by_process(t), time.monotonic()
        offered = await offered_load(poster, members, rate, seconds, preauth, arrivals)
        for line in await asyncio.to_thread(report, offered, arrivals):
            print(line, flush=True)
        print(cpu_report(cpu_before, cpu_by_process(t), time.monotonic() - wall), flush=True)
    arrivals.stop.set()
    await poster.close()
    await hospital.aclose()
    await insurer.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reuse-network", action="store_true", help="use the network of CARELEDGER_HOME")
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of each offered rate")
    parser.add_argument("--rates", type=int, nargs="+", default=RATES, help="offered claims per second")
    parser.add_argument("--preauth", type=float, default=0.0, help="share of prior authorisation requests (0-1)")
    parser.add_argument("--port-base", type=int, default=24000, help="first port of the bench's own network")
    parser.add_argument("--members", type=int, default=MEMBERS, help="covered members the claims are spread over")
    parser.add_argument("--keep", action="store_true", help="leave run/bench (its logs) when done; remove it after")
    args = parser.parse_args()
    t = (
        topo.load()
        if args.reuse_network
        else topo.load(home=topo.REPO_ROOT / "run" / "bench", port_base=args.port_base)
    )
    if not args.reuse_network:
        control.down(t, purge=True, progress=lambda _m: None)
    control.up(t, progress=lambda _m: None)
    for org in gateway_cli.orgs_with_gateways(t):
        gateway_cli.start(t, org)
    for org in worker_cli.orgs_with_workers(t):
        worker_cli.start_worker(t, org)
        worker_cli.start_listener(t, org)
    print(
        f"{CORES} cores; {args.seconds:.0f} s per rate; {args.members} members;"
        f" prior authorisation share {args.preauth:.0%}",
        flush=True,
    )
    try:
        asyncio.run(run(t, args.seconds, args.rates, args.preauth, args.members))
    finally:
        if not args.reuse_network:
            control.down(t, purge=not args.keep, progress=lambda _m: None)


if __name__ == "__main__":
    main()
