"""Steady traffic through the members' gateways while the consortium changes: transaction bundles and claims, each
request timed and its status kept, so a test can say whether any failed and what the load was in a time window."""

from __future__ import annotations

import datetime
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from consortium.errors import NodeUnhealthy
from consortium.topology import Topology
from gateway import cli as gateway_cli
from records import synthetic
from tests.conftest import GatewayHttp, claim_key
from workers import cli as worker_cli

TODAY = datetime.date.today().isoformat()
CLAIM_CODES = ["99213", "85025", "80053", "71046", "99214"]


@dataclass(frozen=True)
class Request:
    kind: str  # bundle | claim | coverage
    org: str
    started: float
    seconds: float
    status: int
    detail: str = ""


@dataclass
class Figures:
    seconds: float
    requests: int
    per_second: float
    p50_ms: float
    p99_ms: float
    failures: list[Request]
    by_kind: dict[str, int]

    def line(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.by_kind.items()))
        return (
            f"{self.requests} requests in {self.seconds:.1f}s ({self.per_second:.1f}/s: {kinds}),"
            f" p50 {self.p50_ms:.0f} ms, p99 {self.p99_ms:.0f} ms, {len(self.failures)} failed"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1),
            "requests": self.requests,
            "per_second": round(self.per_second, 2),
            "p50_ms": round(self.p50_ms),
            "p99_ms": round(self.p99_ms),
            "failures": len(self.failures),
            "by_kind": self.by_kind,
        }


@dataclass
class Load:
    """Bundles posted at each provider's gateway and claims filed to an insurer (each claimed patient covered there
    first), by a few threads each."""

    providers: dict[str, GatewayHttp]
    insurer: GatewayHttp
    insurer_msp: str
    bundle_threads: int = 1
    claim_threads: int = 1
    bundle_size: int = 5
    pause_s: float = 0.05
    log: list[Request] = field(default_factory=list)
    claims: dict[str, str] = field(default_factory=dict)  # claim key on chain -> (provider org) who filed it
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, r: Request) -> None:
        with self._lock:
            self.log.append(r)

    def _timed(self, kind: str, org: str, call: Any) -> Any:
        started = time.monotonic()
        try:
            resp = call()
        except Exception as e:  # a refused connection is a failed request too
            self._record(Request(kind, org, started, time.monotonic() - started, 0, repr(e)[:200]))
            return None
        self._record(Request(kind, org, started, time.monotonic() - started, resp.status_code, resp.text[:200]))
        return resp

    def _bundles(self, org: str, http: GatewayHttp, seed: int) -> None:
        gen = synthetic.Synthetic.seeded(seed)
        while not self._stop.is_set():
            self._timed("bundle", org, lambda: http.post("", gen.transaction(self.bundle_size)))
            time.sleep(self.pause_s)

    def _new_patient(self, org: str, http: GatewayHttp, gen: synthetic.Synthetic) -> str | None:
        """A patient registered at the provider, covered by the insurer this year."""
        mpi = gen.mpi_value()
        made = self._timed("bundle", org, lambda: http.post("", gen.transaction(1, mpi)))
        year = datetime.date.today().year
        body = synthetic.coverage(mpi, self.insurer_msp, f"{year}-01-01", f"{year}-12-31")
        covered = self._timed("coverage", self.insurer_msp, lambda: self.insurer.post("/Coverage", body))
        if made is None or made.status_code != 200 or covered is None or covered.status_code != 201:
            return None
        return str(made.json()["entry"][0]["response"]["location"].split("/")[1])

    def _claims(self, org: str, http: GatewayHttp, seed: int) -> None:
        """Claims of one code each; a new patient once every code was claimed, since the same patient, provider, day
        and codes again is a duplicate the ledger refuses (409), which is not what this load is about."""
        gen = synthetic.Synthetic.seeded(seed)
        patient: str | None = None
        n = 0
        while not self._stop.is_set():
            if patient is None or n % len(CLAIM_CODES) == 0:
                patient = self._new_patient(org, http, gen)
                if patient is None:
                    time.sleep(self.pause_s)
                    continue
            code = CLAIM_CODES[n % len(CLAIM_CODES)]
            n += 1
            body = synthetic.claim(patient, self.insurer_msp, [(code, 1, f"{10 + n % 50}.00")], TODAY, "Coverage/x")
            resp = self._timed("claim", org, lambda b=body: http.post("/Claim", b))
            if resp is not None and resp.status_code == 201:
                with self._lock:
                    self.claims[claim_key(resp.json())] = org
            time.sleep(self.pause_s)

    def start(self) -> None:
        seed = 1000
        for org, http in self.providers.items():
            for _ in range(self.bundle_threads):
                seed += 1
                self._threads.append(threading.Thread(target=self._bundles, args=(org, http, seed), daemon=True))
            for _ in range(self.claim_threads):
                seed += 1
                self._threads.append(threading.Thread(target=self._claims, args=(org, http, seed), daemon=True))
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=120)

    def figures(self, since: float = 0.0, until: float = float("inf")) -> Figures:
        with self._lock:
            window = [r for r in self.log if since <= r.started <= until]
        if not window:
            return Figures(0.0, 0, 0.0, 0.0, 0.0, [], {})
        span = max(r.started + r.seconds for r in window) - min(r.started for r in window)
        ms = sorted(r.seconds * 1000 for r in window)
        p99 = statistics.quantiles(ms, n=100)[98] if len(ms) >= 2 else ms[0]
        by_kind: dict[str, int] = {}
        for r in window:
            by_kind[r.kind] = by_kind.get(r.kind, 0) + 1
        failures = [r for r in window if r.status not in (200, 201)]
        return Figures(span, len(window), len(window) / span if span else 0.0, statistics.median(ms), p99, failures,
                       by_kind)  # fmt: skip


def start_services(t: Topology, org: str) -> None:
    """The org's gateway (tried again when a busy machine makes it slower than the CLI waits), and on `claims` its
    listener and worker."""
    for attempt in range(3):
        try:
            gateway_cli.start(t, org)
            break
        except NodeUnhealthy:
            if attempt == 2:
                raise
    if org in worker_cli.orgs_with_workers(t):
        worker_cli.start_worker(t, org)
        worker_cli.start_listener(t, org)
