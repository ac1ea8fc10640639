"""Faults under load: while a small load generator files claims and transaction bundles at the hospital's gateway
over HTTPS (and retries each request as a client should, with the same body and Idempotency-Key, until its answer
is definite), one part of the network is killed with SIGKILL and started again. Afterwards the chain's events and
the stores are audited:

- every 2xx answer is on chain exactly once and readable at its custodian; a request answered 503 and sent again
  resolves to exactly one write;
- every submitted claim is adjudicated exactly once, every approved claim paid exactly once (in a remittance), and
  each PaymentReconciliation, at the insurer and at the hospital, says what the chain says (claims and amounts);
- every record registered on chain has its content in the custodian's store, and every committed row of the store
  its record on chain; no row stays pending;
- no repeat on the orgs' event streams or webhooks;
- service is back (a request answered 2xx, a new claim adjudicated) within 30 s of the kill, with nobody's help.

Ledger nodes, Redis and the orgs' chaincode servers are started again by the test right after the kill, as a host's
service manager would; gateways, listeners and workers by supervisord. The table of figures is printed at the end
(`pytest -m faults` runs this module alone).
"""

from __future__ import annotations

import json
import signal
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis

from consortium.topology import Topology
from gateway import cli as gateway_cli
from gateway.settings import GatewaySettings
from network import binaries, channels, control, nodes, redis_server
from network import chaincode as cc
from records import synthetic
from records.routes import route_of
from records.settings import CustodianSettings
from records.store import Store
from tests.conftest import GatewayHttp
from tests.integration.audit import (
    ADJUDICATED,
    HOSPITAL,
    INSURER,
    KEYS,
    PAID,
    SUBMITTED,
    ChainLog,
    Findings,
    Seen,
    audit_claims,
    chain_height,
    claim_ids,
    whereabouts,
)
from tests.integration.test_workers import (  # noqa: F401 (receiver is a fixture)
    TODAY,
    Member,
    Receiver,
    _all_alive,
    enrol,
    receiver,
    running_workers,
)
from tests.waiting import wait_for
from workers import cli as worker_cli

pytestmark = [pytest.mark.network, pytest.mark.faults]

LOAD_SYSTEM = "urn:careledger:test:load"  # every resource the load writes carries its request's key under this
CLAIMS_PER_S = 4.0
BUNDLES_PER_S = 1.5
MEMBERS = 30  # a patient's claims conflict on its duplicate index, and are decided one at a time: spread the load
WARM_UP_S = 5.0  # load before the kill
LOAD_AFTER_KILL_S = 20.0  # load after it (longer if service is not back yet)
GIVE_UP_S = 150.0  # a request still not answered definitely after this long counts as lost
CLIENT_TIMEOUT_S = 90.0  # longer than the gateway's worst case (endorsement 30 s, then an unknown outcome 15 s)
SETTLE_S = 180.0  # how long the load's work may take to settle after the load stops (a killed worker's tasks
# come back once their lease, the visibility timeout of 20 s, runs out)
RECOVERY_LIMIT_S = 30.0


# ----- the load --------------------------------------------------------------------------------------------------


@dataclass
class Call:
    at: float
    status: int | None  # None: no answer (connection refused or broken, timed out)
    detail: str = ""


@dataclass
class Request:
    """One logical request of the load, sent as often as it takes to get a definite answer."""

    kind: str  # claim | bundle
    key: str  # its Idempotency-Key, also stamped on every resource it writes
    path: str
    body: dict[str, Any]
    first_at: float
    calls: list[Call] = field(default_factory=list)
    final: int | None = None
    answer: dict[str, Any] | None = None
    answered_at: float | None = None

    @property
    def ok(self) -> bool:
        return self.final is not None and 200 <= self.final < 300


class Load:
    """Claims and transaction bundles at steady rates against the hospital's gateway, from a pool of client
    threads; every request and every answer is recorded."""

    def __init__(self, hospital: GatewayHttp, members: list[Member], tag: str, codes_from: int) -> None:
        self.hospital = hospital
        self.members = members
        self.tag = tag
        self.codes_from = codes_from
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(48, thread_name_prefix=f"load-{tag}")
        self.http = httpx.Client(
            base_url=hospital.base,
            verify=ssl.create_default_context(cafile=hospital.ca),
            timeout=httpx.Timeout(CLIENT_TIMEOUT_S, connect=3.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        self.token = hospital.token()
        self.token_at = time.monotonic()
        self.thread = threading.Thread(target=self._run, name=f"load-{tag}", daemon=True)
        self.gen = synthetic.Synthetic.seeded(None)

    def start(self) -> Load:
        self.thread.start()
        return self

    def stop(self, drain_s: float = GIVE_UP_S + 30) -> None:
        """Stop sending new requests and wait for every request's definite answer (or its giving up)."""
        self.stopping.set()
        self.thread.join()
        self.pool.shutdown(wait=True, cancel_futures=False)
        self.http.close()

    def _run(self) -> None:
        n_claims = n_bundles = 0
        start = time.monotonic()
        while not self.stopping.is_set():
            now = time.monotonic()
            due_claim = start + n_claims / CLAIMS_PER_S
            due_bundle = start + n_bundles / BUNDLES_PER_S
            if now >= due_claim:
                self._submit(self._claim(n_claims))
                n_claims += 1
            if now >= due_bundle:
                self._submit(self._bundle(n_bundles))
                n_bundles += 1
            self.stopping.wait(max(0.0, min(due_claim, due_bundle) - time.monotonic()))

    def _claim(self, n: int) -> Request:
        key = f"{self.tag}-claim-{n}"
        member = self.members[n % len(self.members)]
        code = f"{self.codes_from + n}"  # a code of its own: no claim is a duplicate of another
        body = synthetic.claim(member.patient_id, INSURER, [(code, 1, f"{10 + n % 90}.25")], TODAY, "Coverage/test")
        body["identifier"] = [{"system": LOAD_SYSTEM, "value": key}]
        return Request("claim", key, "/Claim", body, time.monotonic())

    def _bundle(self, n: int) -> Request:
        key = f"{self.tag}-bundle-{n}"
        body = self.gen.transaction(3)
        for entry in body["entry"]:
            resource = entry["resource"]
            resource["identifier"] = [*(resource.get("identifier") or []), {"system": LOAD_SYSTEM, "value": key}]
        return Request("bundle", key, "", body, time.monotonic())

    def _submit(self, request: Request) -> None:
        with self.lock:
            self.requests.append(request)
        self.pool.submit(self._send, request)

    def _headers(self, request: Request) -> dict[str, str]:
        if time.monotonic() - self.token_at > 120:
            self.token, self.token_at = self.hospital.token(), time.monotonic()
        return {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/fhir+json",
            "Idempotency-Key": request.key,
        }

    def _send(self, request: Request) -> None:
        """Send until the answer is definite: 2xx, or 4xx other than 408 and 429. A 503 or 504 is sent again after
        its Retry-After; no answer at all (the gateway away) after a pause that doubles up to 2 s."""
        content = json.dumps(request.body)
        unanswered = 0
        while True:
            at = time.monotonic()
            try:
                r = self.http.post(request.path, content=content, headers=self._headers(request))
            except httpx.HTTPError as e:
                request.calls.append(Call(at, None, f"{type(e).__name__}: {e}"[:300]))
                unanswered += 1
                pause = min(0.25 * 2**unanswered, 2.0)
            else:
                definite = r.status_code < 500 and r.status_code not in (408, 429)
                request.calls.append(Call(at, r.status_code, "" if r.is_success else r.text[:300]))
                if definite:
                    request.final, request.answered_at = r.status_code, time.monotonic()
                    request.answer = r.json() if r.headers.get("content-type", "").endswith("json") else None
                    return
                if r.status_code in (503, 504) and "retry-after" not in r.headers:
                    request.calls[-1].detail = "NO RETRY-AFTER " + request.calls[-1].detail
                pause = min(float(r.headers.get("retry-after") or 0.5), 2.0)
            if time.monotonic() - request.first_at > GIVE_UP_S:
                return
            time.sleep(pause)


# ----- the audit of the hospital's store -----------------------------------------------------------------------


def store_rows(store: Store, since: float) -> list[tuple[str, str, int, str, str, str]]:
    """(type, id, version, state, batch, tx id) of every row staged since `since` (epoch seconds). The store has no
    listing of this kind, so the test reads its table directly."""
    with store._db.read() as sql:
        rows = sql.rows(
            "SELECT type, id, version, state, batch, COALESCE(tx_id, '') FROM resources WHERE staged >= ?", (since,)
        )
    return [(str(a), str(b), int(c), str(d), str(e), str(f)) for a, b, c, d, e, f in rows]


def load_rows(store: Store, key: str, rtype: str) -> set[tuple[str, int]]:
    """The committed (id, version) of a type that carry the load request's key."""
    return set(store.with_identifier(rtype, LOAD_SYSTEM, key))


def load_claims(load: Load, store: Store) -> dict[str, tuple[str, str]]:
    """Claim key on chain -> (the load's request key, the hospital's Claim id), for every claim the load got stored
    at the hospital."""
    return {
        store.ledger_key("Claim", rid): (r.key, rid)
        for r in list(load.requests)
        if r.kind == "claim"
        for rid, _ in load_rows(store, r.key, "Claim")
    }


def audit_requests(load: Load, store: Store, hospital: GatewayHttp, found: Findings) -> None:
    """Every request answered definitely; each 2xx written once and readable; each refused one written nowhere."""
    for r in load.requests:
        answers = [c.status for c in r.calls]
        if r.final is None:
            found.lost.append(f"{r.key}: no definite answer after {GIVE_UP_S:.0f}s: {r.calls[-3:]}")
            continue
        writes = len(load_rows(store, r.key, "Claim" if r.kind == "claim" else "Patient"))
        if not r.ok:
            if writes:
                found.lost.append(f"{r.key}: answered {answers} ({r.calls[-1].detail[:120]}) yet written {writes}x")
            continue
        if writes == 0:
            found.lost.append(f"{r.key}: answered {answers} but nothing of it is stored")
        elif writes > 1:
            found.duplicated.append(f"{r.key}: one request ({answers}) written {writes} times")
        assert r.answer is not None
        location = f"Claim/{r.answer['id']}" if r.kind == "claim" else r.answer["entry"][0]["response"]["location"]
        if hospital.get("/" + "/".join(location.split("/")[:2])).status_code != 200:
            found.lost.append(f"{r.key}: {location}, answered {r.final}, is not readable at the hospital")


def audit_store_and_chain(
    store: Store, since: float, records: list[Seen], claim_events: list[Seen], found: Findings
) -> None:
    """Records.Registered entries and submitted claims against the hospital's rows staged since the start. The
    events are read from the chain's height when the test started, which a write staged just before `since` may
    still reach: an entry registered is looked up among the rows of the minute before too."""
    rows = store_rows(store, since)
    for rtype, rid, version, state, batch, _ in rows:
        if state != "committed":
            found.lost.append(f"{rtype}/{rid}/{version}: still pending (batch {batch})")
    committed = {(store.ledger_key(t, i), v): (t, i, v, tx) for t, i, v, s, _, tx in rows if s == "committed"}
    earlier = {(store.ledger_key(t, i), v): (t, i, v, tx) for t, i, v, s, _, tx in store_rows(store, since - 60)
               if s == "committed"}  # fmt: skip
    registered: Counter[tuple[str, int]] = Counter()
    for e in records:
        if e.name == "Records.Registered" and e.payload.get("custodian") == HOSPITAL:
            for entry in e.payload.get("entries") or []:
                key = (str(entry["resourceKey"]), int(entry["version"]))
                registered[key] += 1
                row = earlier.get(key)
                if row is None:
                    if not entry.get("directory"):
                        found.lost.append(f"registered {key[0][:12]}/{key[1]} (tx {e.tx_id[:12]}) has no content")
                elif row[3] != e.tx_id:
                    found.lost.append(
                        f"{row[0]}/{row[1]}/{row[2]} is stored under tx {row[3][:12]}, not {e.tx_id[:12]}"
                    )
    submitted: Counter[str] = Counter(c for e in claim_events if e.name in SUBMITTED for c in claim_ids(e))
    for (key, version), (rtype, rid, _, _) in committed.items():
        name = route_of(rtype).name
        if name == "records" and registered[(key, version)] == 0:
            found.lost.append(f"{rtype}/{rid}/{version} is stored but not registered on chain")
        if name == "claim" and version == 1 and submitted[key] == 0:
            found.lost.append(f"Claim/{rid} is stored but was not submitted on chain")
    for key, n in registered.items():
        if n > 1:
            found.duplicated.append(f"{key[0][:12]}/{key[1]} registered {n} times")
    for cid, n in submitted.items():
        if n > 1:
            found.duplicated.append(f"claim {cid[:12]} submitted {n} times")
        if (cid, 1) not in earlier:
            found.lost.append(f"claim {cid[:12]} is on chain but its Claim is not stored at the hospital")


# ----- scenarios -------------------------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    requests: int
    client_errors: int
    recovery_s: float | None
    slowest_s: float  # the longest a request took from its first call to its definite answer
    lost: int
    duplicated: int


TABLE: list[Row] = []


@pytest.fixture(scope="module")
def fault_table(request: pytest.FixtureRequest) -> Iterator[list[Row]]:
    yield TABLE
    if not TABLE:
        return
    lines = [
        "",
        f"faults under load (claims {CLAIMS_PER_S:.0f}/s, bundles {BUNDLES_PER_S:.1f}/s)",
        f"{'scenario':18} {'requests':>8} {'client errors':>13} {'recovery s':>10} {'slowest s':>9} {'lost':>5}"
        f" {'duplicated':>10}",
    ]
    for r in TABLE:
        recovery = f"{r.recovery_s:10.1f}" if r.recovery_s is not None else f"{'-':>10}"
        lines.append(
            f"{r.scenario:18} {r.requests:8} {r.client_errors:13} {recovery} {r.slowest_s:9.0f} {r.lost:5}"
            f" {r.duplicated:10}"
        )
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    for line in lines:
        if reporter is not None:
            reporter.write_line(line)
        else:
            print(line)


def _kill_node(t: Topology, name: str) -> Callable[[], None]:
    node = next(n for n in t.nodes if n.name == name)
    nodes.process(t, node).stop(timeout=0, sig=signal.SIGKILL)

    def restart() -> None:
        fabric = binaries.cached()
        assert fabric is not None
        nodes.start(t, fabric, node)
        nodes.wait_healthy(t, node)

    return restart


def kill_raft_leader(t: Topology) -> Callable[[], None]:
    leader = channels.raft_leader(t, "claims")
    assert leader is not None, "the claims channel has no Raft leader"
    nodes.process(t, leader).stop(timeout=0, sig=signal.SIGKILL)

    def resume() -> None:  # `careledger network up` resumes the killed orderer
        lines: list[str] = []
        control.up(t, progress=lines.append)
        assert any(f"starting orderer {leader.name}" in line for line in lines), lines

    return resume


def kill_insurer_peer(t: Topology) -> Callable[[], None]:
    return _kill_node(t, t.peer_of(t.org("InsurerOrg")).name)


def kill_hospital_peer(t: Topology) -> Callable[[], None]:
    return _kill_node(t, t.peer_of(t.org("HospitalOrg")).name)


def kill_hospital_gateway(t: Topology) -> None:
    gateway_cli.process(t, "HospitalOrg").kill(signal.SIGKILL)  # supervisord starts it again


def kill_redis(t: Topology) -> Callable[[], None]:
    redis_server.process(t).stop(timeout=0, sig=signal.SIGKILL)

    def restart() -> None:
        redis_server.start(t)
        redis_server.wait_ready(t)

    return restart


def kill_chaincode_server(t: Topology) -> Callable[[], None]:
    """Every org runs its own chaincode server for its own peer: all of them die at once, so no peer can endorse."""
    for org in t.member_orgs:
        cc.server_process(t, org).stop(timeout=0, sig=signal.SIGKILL)

    def restart() -> None:
        for org in t.member_orgs:
            cc.ensure_server(t, org, cc.package(t, org))

    return restart


def kill_insurer_worker(t: Topology) -> None:
    worker_cli.worker_process(t, "InsurerOrg").kill(signal.SIGKILL)


def kill_insurer_listener(t: Topology) -> None:
    worker_cli.listener_process(t, "InsurerOrg").kill(signal.SIGKILL)


SCENARIOS: dict[str, Callable[[Topology], Callable[[], None] | None]] = {
    "raft leader": kill_raft_leader,
    "insurer peer": kill_insurer_peer,
    "hospital peer": kill_hospital_peer,
    "hospital gateway": kill_hospital_gateway,
    "redis": kill_redis,
    "chaincode server": kill_chaincode_server,
    "insurer worker": kill_insurer_worker,
    "insurer listener": kill_insurer_listener,
}


def _everything_up(t: Topology) -> bool:
    return (
        all(nodes.ready(t, n) for n in t.nodes)
        and redis_server.ping(t)
        and all(cc.server_process(t, o).running() for o in t.member_orgs)
        and _all_alive(t)
        and all(gateway_cli.healthy(GatewaySettings.load(t, o)) for o in gateway_cli.orgs_with_gateways(t))
    )


def _settled(t: Topology, store: Store, since: float, ours: Callable[[], set[str]], events: ChainLog) -> bool:
    """Nothing pending at the hospital; every claim of the load adjudicated, every approved one paid, and the
    hospital told of each (its stream has the adjudication and the remittance: it kept the ClaimResponse and the
    PaymentReconciliation first)."""
    time.sleep(1)
    if any(s == "pending" for _, _, _, s, _, _ in store_rows(store, since)):
        return False
    return not _unsettled(t, ours(), events)


def _unsettled(t: Topology, claims: set[str], events: ChainLog) -> set[str]:
    """The claims of `claims` not yet adjudicated, paid (if approved) and told to the hospital."""
    seen = events.snapshot()
    approved = {c["claimId"]: int(c.get("approvedCents") or 0) for e in seen if e.name in ADJUDICATED
                for c in (e.payload.get("claims") or [e.payload])}  # fmt: skip
    paid = {e.payload.get("paymentRef"): set(claim_ids(e)) for e in seen if e.name in PAID}
    paid_claims: set[str] = set().union(*paid.values())
    out = {c for c in claims if c not in approved or (approved[c] and c not in paid_claims)}
    stream = redis.Redis.from_url(t.redis_admin_url).xrange(KEYS[HOSPITAL].stream("claims"))
    told = {f[b"claimId"].decode() for _, f in stream if f[b"event"] == b"Claims.Adjudicated"}
    told_paid = {json.loads(f[b"claim"]).get("paymentRef") for _, f in stream if f[b"event"] == b"Claims.PaidBatch"}
    out |= claims - told
    for ref, paid_here in paid.items():
        if ref not in told_paid:
            out |= paid_here & claims
    return out


@pytest.fixture(scope="module")
def workers(
    network: Topology,
    gateway_clients: dict[str, GatewayHttp],
    receiver: tuple[Receiver, str],  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Topology]:
    """Listeners and workers as a deployment runs them: the shipped adjudication and remittance settings, the
    default visibility timeout and outbox re-send delay (only the webhooks point at the test's receiver)."""
    env: dict[str, str | None] = {"CARELEDGER_VISIBILITY_TIMEOUT": None, "CARELEDGER_REDELIVER_AFTER": None}
    config = tmp_path_factory.mktemp("fault-worker-config")
    with running_workers(network, gateway_clients, receiver[1], config, {}, {}, env) as t:
        yield t


@pytest.fixture(scope="module")
def members(workers: Topology, gateway_clients: dict[str, GatewayHttp]) -> list[Member]:
    """Patients of the hospital covered by the insurer, whose claims the load files."""
    with ThreadPoolExecutor(6) as pool:
        return list(
            pool.map(lambda _: enrol(gateway_clients["HospitalOrg"], gateway_clients["InsurerOrg"]), range(MEMBERS))
        )


def new_failures(admin: redis.Redis, before: dict[str, int]) -> list[str]:
    """Tasks each org put in its failed list since `before` (the newest are first)."""
    out = []
    for msp, n in before.items():
        added = admin.llen(KEYS[msp].failed) - n
        if added > 0:
            out += [
                f"{msp}: a task failed for good: {raw.decode()[:300]}"
                for raw in admin.lrange(KEYS[msp].failed, 0, added - 1)
            ]
    return out


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_fault_under_load_loses_and_duplicates_nothing(
    scenario: str,
    workers: Topology,
    gateways: dict[str, GatewayHttp],
    members: list[Member],
    receiver: tuple[Receiver, str],  # noqa: F811
    fault_table: list[Row],
) -> None:
    t = workers
    state, _ = receiver
    hospital, insurer = gateways["HospitalOrg"], gateways["InsurerOrg"]
    wait_for(lambda: _everything_up(t), 120, "every node and process up before the fault")
    store = CustodianSettings.load(t, "HospitalOrg").open_store()
    admin = redis.Redis.from_url(t.redis_admin_url)
    failed_before = {msp: admin.llen(KEYS[msp].failed) for msp in KEYS}
    logs = {ch: ChainLog(t, ch, chain_height(t, "ClinicOrg", ch)) for ch in ("providers", "claims")}
    since = time.time()  # rows staged from here on commit in blocks from those heights on
    codes_from = 40000 + 2000 * list(SCENARIOS).index(scenario)  # no claim a duplicate of another, in any scenario
    load = Load(hospital, members, f"{scenario.replace(' ', '-')}-{time.time_ns() % 10**8}", codes_from).start()
    try:
        time.sleep(WARM_UP_S)
        killed_at = time.monotonic()
        restart = SCENARIOS[scenario](t)
        if restart is not None:
            time.sleep(1.0)  # a service manager restarts a dead service after a short pause
            restart()
        # Keep the load on for a while, and until service is back (a request sent after the kill answered 2xx).
        while time.monotonic() < killed_at + LOAD_AFTER_KILL_S or (
            not any(r.ok and r.first_at > killed_at for r in list(load.requests)) and time.monotonic() < killed_at + 90
        ):
            time.sleep(0.5)
    finally:
        load.stop()
    stopped_at = time.monotonic()
    found = Findings()
    try:
        wait_for(
            lambda: _settled(t, store, since, lambda: set(load_claims(load, store)), logs["claims"]),
            SETTLE_S,
            "the load's work settled",
        )
    except AssertionError as e:
        found.lost.append(str(e))
        found.lost += whereabouts(t, _unsettled(t, set(load_claims(load, store)), logs["claims"]))
    settled_at = time.monotonic()
    time.sleep(3)  # anything repeated late shows up too
    for log in logs.values():
        log.close()
    audit_requests(load, store, hospital, found)
    claims_of_load = load_claims(load, store)
    records, claim_events = logs["providers"].snapshot(), logs["claims"].snapshot()
    audit_store_and_chain(store, since, records, claim_events, found)
    audit_claims(t, {c: rid for c, (_, rid) in claims_of_load.items()}, claim_events, hospital, insurer, state, found)
    found.lost += new_failures(admin, failed_before)

    # Recovery: from the kill until the last call answered with an error (or not at all), and until a claim filed
    # after the kill was adjudicated.
    failing = [c.at - killed_at for r in load.requests for c in r.calls
               if c.at >= killed_at and (c.status is None or c.status >= 500)]  # fmt: skip
    answered = [r.answered_at - killed_at for r in load.requests if r.ok and r.first_at > killed_at and r.answered_at]
    adjudicated_at = {c: e.at for e in claim_events if e.name in ADJUDICATED for c in claim_ids(e)}
    by_key = {r.key: r for r in load.requests}
    new_claims = [
        adjudicated_at[c] - killed_at
        for c, (key, _) in claims_of_load.items()
        if by_key[key].first_at > killed_at and c in adjudicated_at
    ]
    recovery = max(max(failing, default=0.0), min(new_claims)) if answered and new_claims else None
    errors_seen = Counter(
        (round(c.at - killed_at), c.status, c.detail[:160]) for r in load.requests for c in r.calls
        if c.status is None or c.status >= 300
    )  # fmt: skip
    for (at, status, detail), n in sorted(errors_seen.items(), key=lambda x: (x[0][0], str(x[0][1:])))[-8:]:
        print(f"  {at:+4d}s {status} x{n}: {detail}")
    slowest = sorted((r for r in load.requests if r.answered_at), key=lambda r: r.first_at - (r.answered_at or 0))
    for r in slowest[:3]:
        print(f"  slowest: {r.key} sent {r.first_at - killed_at:+.0f}s, answered {r.final} after"
              f" {(r.answered_at or 0) - r.first_at:.0f}s: {[c.status for c in r.calls]}")  # fmt: skip
    print(f"\n{scenario}: load stopped {stopped_at - killed_at:.0f}s after the kill, settled after"
          f" {settled_at - stopped_at:.0f}s, audited in {time.monotonic() - settled_at:.0f}s")  # fmt: skip
    errors = sum(1 for r in load.requests for c in r.calls if c.status is None or c.status >= 300)
    slowest_s = max(((r.answered_at or 0) - r.first_at for r in load.requests if r.answered_at), default=0.0)
    TABLE.append(Row(scenario, len(load.requests), errors, recovery, slowest_s, len(found.lost), len(found.duplicated)))
    no_retry_after = [c.detail for r in load.requests for c in r.calls if c.detail.startswith("NO RETRY-AFTER")]
    bad_gateway = [c.detail for r in load.requests for c in r.calls if c.status == 502]
    store.close()
    assert not found.lost, f"{scenario}: lost {len(found.lost)}:\n" + "\n".join(found.lost[:30])
    assert not found.duplicated, f"{scenario}: duplicated {len(found.duplicated)}:\n" + "\n".join(found.duplicated[:30])
    assert recovery is not None and recovery < RECOVERY_LIMIT_S, f"{scenario}: recovery {recovery}"
    assert not bad_gateway, f"{scenario}: answered 502 rather than 503: {bad_gateway[:5]}"
    assert not no_retry_after, f"{scenario}: 503 without Retry-After: {no_retry_after[:5]}"


# ----- a write kept pending while its gateway dies ---------------------------------------------------------------


def _bundle_for(key: str) -> dict[str, Any]:
    body = synthetic.Synthetic.seeded(None).transaction(2)
    for entry in body["entry"]:
        resource = entry["resource"]
        resource["identifier"] = [*(resource.get("identifier") or []), {"system": LOAD_SYSTEM, "value": key}]
    return body


def _post(hospital: GatewayHttp, key: str, body: dict[str, Any], timeout: float = 60) -> httpx.Response | Exception:
    try:
        return hospital.http.post(
            "", content=json.dumps(body), headers={**hospital.headers(), "Content-Type": "application/fhir+json",
                                                   "Idempotency-Key": key}, timeout=timeout,
        )  # fmt: skip
    except httpx.HTTPError as e:
        return e


def _in_flight_when_peer_dies(t: Topology, hospital: GatewayHttp, key: str, body: dict[str, Any]) -> Any:
    """Send the write and kill the hospital's peer the moment the gateway has kept its signed transaction: the
    write's outcome is then unknown to the gateway. Returns the thread's result holder and the thread."""
    pending = CustodianSettings.load(t, "HospitalOrg").pending_dir
    kept_before = {p.name for p in pending.glob("*.tx")}
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(r=_post(hospital, key, body)), daemon=True)
    thread.start()
    peer = next(n for n in t.peers if n.org.name == "HospitalOrg")
    while thread.is_alive():
        if {p.name for p in pending.glob("*.tx")} - kept_before:
            nodes.process(t, peer).stop(timeout=0, sig=signal.SIGKILL)
            return result, thread
        time.sleep(0.001)
    return result, thread


def _restart_peer(t: Topology, org: str) -> None:
    peer = next(n for n in t.peers if n.org.name == org)
    fabric = binaries.cached()
    assert fabric is not None
    nodes.start(t, fabric, peer)
    nodes.wait_healthy(t, peer)


def _written_once(t: Topology, store: Store, key: str, start: int) -> list[tuple[str, int]]:
    """The request's rows: stored once, committed, and registered on chain once, by the transaction they name."""
    patients = load_rows(store, key, "Patient")
    assert len(patients) == 1, f"the request was written {len(patients)} times"
    rows = [(rtype, rid, v) for rtype in ("Patient", "Observation") for rid, v in load_rows(store, key, rtype)]
    keys = {store.ledger_key(rtype, rid): rid for rtype, rid, _ in rows}
    log = ChainLog(t, "providers", start)

    def registered() -> Counter[str]:
        return Counter(e["resourceKey"] for s in log.snapshot() for e in s.payload.get("entries") or [])

    try:
        wait_for(lambda: set(keys) <= set(registered()), 30, "the write's Records.Registered event")
        time.sleep(2)  # a second registration would show up too
        counts = registered()
    finally:
        log.close()
    assert all(counts[k] == 1 for k in keys), {k[:12]: counts[k] for k in keys}
    return sorted(patients)


def test_a_write_pending_when_its_gateway_dies_settles_once_at_start_up(
    workers: Topology,
    gateways: dict[str, GatewayHttp],
) -> None:
    """The hospital's peer dies between "signed transaction kept" and "commit", then the gateway itself dies with
    the write in flight. Started again (peer, then the gateway by supervisord), the gateway settles the kept
    transaction at start-up; the client's retry with the same Idempotency-Key gets that one write."""
    t, hospital = workers, gateways["HospitalOrg"]
    store = CustodianSettings.load(t, "HospitalOrg").open_store()
    start = chain_height(t, "ClinicOrg", "providers")
    key, body = f"kept-{time.time_ns()}", {}
    for _attempt in range(3):
        key = f"kept-{time.time_ns()}"
        body = _bundle_for(key)
        result, thread = _in_flight_when_peer_dies(t, hospital, key, body)
        if thread.is_alive():
            break
        thread.join()
        _restart_peer(t, "HospitalOrg")  # answered before the peer died: try again
    else:
        pytest.fail("every write committed before its gateway's peer could be killed")
    time.sleep(1.0)
    gateway_cli.process(t, "HospitalOrg").kill(signal.SIGKILL)  # the write still in flight; supervisord restarts it
    thread.join()
    assert not isinstance(result.get("r"), httpx.Response), result
    _restart_peer(t, "HospitalOrg")
    wait_for(lambda: gateway_cli.healthy(GatewaySettings.load(t, "HospitalOrg")), 90, "the gateway back")
    # Settled by the gateway at start-up, before anyone asked again.
    wait_for(lambda: load_rows(store, key, "Patient"), 60, "the kept write committed by the restarted gateway")
    again = _post(hospital, key, body)
    assert isinstance(again, httpx.Response) and again.status_code == 200, again
    patients = _written_once(t, store, key, start)
    assert again.json()["entry"][0]["response"]["location"].split("/")[1] == patients[0][0]
    assert not [b for b in store.pending_batches() if any(r[1] == patients[0][0] for r in store.batch_rows(b))]
    store.close()


def test_a_write_pending_after_its_deadline_is_settled_by_the_running_gateway(
    workers: Topology,
    gateways: dict[str, GatewayHttp],
) -> None:
    """The hospital's peer dies with a write in flight: after its deadline the gateway answers 503 (pending) with
    Retry-After. Once the peer is back, the gateway's reconciler commits the write without being asked; the same
    request sent again gets that write."""
    t, hospital = workers, gateways["HospitalOrg"]
    store = CustodianSettings.load(t, "HospitalOrg").open_store()
    start = chain_height(t, "ClinicOrg", "providers")
    for _attempt in range(3):
        key = f"pending-{time.time_ns()}"
        body = _bundle_for(key)
        result, thread = _in_flight_when_peer_dies(t, hospital, key, body)
        thread.join()
        answer = result["r"]
        if isinstance(answer, httpx.Response) and answer.status_code == 503:
            break
        _restart_peer(t, "HospitalOrg")
    else:
        pytest.fail("every write committed before its gateway's peer could be killed")
    assert answer.headers.get("retry-after"), answer.headers
    assert answer.json()["issue"][0]["code"] == "transient"
    _restart_peer(t, "HospitalOrg")
    wait_for(lambda: load_rows(store, key, "Patient"), 60, "the pending write committed by the gateway's reconciler")
    again = _post(hospital, key, body)
    assert isinstance(again, httpx.Response) and again.status_code == 200, again
    patients = _written_once(t, store, key, start)
    assert again.json()["entry"][0]["response"]["location"].split("/")[1] == patients[0][0]
    store.close()
