"""Claims end to end with real processes: gateways, chain-event listeners and Celery workers (`careledger worker
start`), Redis, Fabric. A webhook receiver in this process plays the insurer's and the hospital's back offices; it
fails the first attempts of every delivery on purpose."""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from consortium.redis_keys import OrgKeys
from consortium.topology import Topology
from fabric_gateway import Gateway
from gateway import cli as gateway_cli
from records import synthetic
from tests.conftest import GatewayHttp, claim_key
from tests.integration.audit import PAID, ChainLog, Findings, audit_claims, chain_height, claim_ids
from tests.waiting import wait_for
from workers import cli as worker_cli
from workers.settings import CONFIG_DIR

pytestmark = pytest.mark.network

FAILURES_BEFORE_SUCCESS = 2
ALWAYS_FAILING_TOTAL = "999.17"  # the receiver refuses every delivery about a claim of this total
SECRETS = {"InsurerOrg": b"insurer-test-secret", "HospitalOrg": b"hospital-test-secret"}

INSURER_KEYS = OrgKeys("InsurerMSP")


@dataclass
class Receiver:
    """Webhook deliveries by path (/InsurerOrg, /HospitalOrg): every attempt, and the accepted ones."""

    attempts: Counter[str] = field(default_factory=Counter)
    accepted: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    bad_signatures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted_for(self, org: str, event: str) -> Counter[str]:
        with self.lock:
            return Counter(b["claim"].get("claimId") for o, b in self.accepted if o == org and b["event"] == event)


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            org = self.path.strip("/")
            delivery = self.headers["X-CareLedger-Delivery"]
            expected = "sha256=" + hmac.new(SECRETS[org], body, hashlib.sha256).hexdigest()
            always_down = b'"totalCents": 99917' in body
            with state.lock:
                state.attempts[delivery] += 1
                fail = always_down or state.attempts[delivery] <= FAILURES_BEFORE_SUCCESS
                if self.headers["X-CareLedger-Signature"] != expected:
                    state.bad_signatures += 1
                elif not fail:
                    state.accepted.append((org, json.loads(body)))
            self.send_response(503 if fail else 204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@contextlib.contextmanager
def running_workers(
    network: Topology,
    gateway_clients: dict[str, GatewayHttp],
    hook_url: str,
    config_dir: Path,
    adjudication: dict[str, Any],
    remittance: dict[str, Any],
    env: dict[str, str | None],
) -> Iterator[Topology]:
    """Listeners and workers of every org on `claims`, configured to post to the receiver at `hook_url`, with these
    adjudication and remittance settings over the org's own, and these environment variables (None: unset)."""
    for org in gateway_clients:
        gateway_cli.start(network, org)
    for org in worker_cli.orgs_with_workers(network):
        cfg = yaml.safe_load((CONFIG_DIR / f"{org}.yaml").read_text())
        secret = SECRETS.get(org, b"unused").decode()
        cfg["webhook"] = {"url": f"{hook_url}/{org}" if org in SECRETS else "", "secret": secret,
                          "max_attempts": 6, "backoff_seconds": 0.2}  # fmt: skip
        if "adjudication" in cfg:
            cfg["adjudication"] |= adjudication
            cfg["remittance"] = {**cfg.get("remittance", {}), **remittance}
        (config_dir / f"{org}.yaml").write_text(yaml.safe_dump(cfg))
    settings = {"CARELEDGER_WORKER_CONFIG_DIR": str(config_dir), **env}
    saved = {k: os.environ.get(k) for k in settings}
    for k, v in settings.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    for org in worker_cli.orgs_with_workers(network):
        worker_cli.start_worker(network, org)
        worker_cli.start_listener(network, org)
    # Ready when each has started beating (a worker once it consumes, a listener once it runs).
    wait_for(lambda: _all_alive(network), 180, "every listener and worker alive")
    try:
        yield network
    finally:
        for org in worker_cli.orgs_with_workers(network):
            worker_cli.listener_process(network, org).stop()
            worker_cli.worker_process(network, org).stop(timeout=30)
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


@pytest.fixture(scope="module")
def workers(
    network: Topology, gateway_clients: dict[str, GatewayHttp], receiver: tuple[Receiver, str], tmp_path_factory: Any
) -> Iterator[Topology]:
    """Listeners and workers of every org on `claims`, configured to post to the receiver; claim lines purgeable
    seconds after adjudication and purged every 2 s; a killed worker's tasks back soon."""
    env: dict[str, str | None] = {
        "CARELEDGER_VISIBILITY_TIMEOUT": "12",  # a killed worker's tasks come back within this lease
        "CARELEDGER_REDELIVER_AFTER": "20",  # unfinished tasks are re-sent from the outbox after 20 s
    }
    with running_workers(
        network,
        gateway_clients,
        receiver[1],
        tmp_path_factory.mktemp("worker-config"),
        adjudication={"retention_seconds": RETENTION_S},
        remittance={"purge_every_seconds": 2},
        env=env,
    ) as t:
        yield t


@dataclass
class Member:
    patient_id: str
    mpi: str


def enrol(hospital: GatewayHttp, insurer: GatewayHttp, covered: bool = True) -> Member:
    gen = synthetic.Synthetic.seeded(None)
    mpi = gen.mpi_value()
    r = hospital.post("", gen.transaction(2, mpi))
    assert r.status_code == 200, r.text
    member = Member(r.json()["entry"][0]["response"]["location"].split("/")[1], mpi)
    if covered:
        coverage = synthetic.coverage(mpi, "InsurerMSP", "2026-01-01", "2027-12-31")
        assert insurer.post("/Coverage", coverage).status_code == 201
    return member


TODAY = datetime.date.today().isoformat()
RETENTION_S = 20  # how long the insurer keeps claim lines after adjudication, in these tests


LOCAL_IDS: dict[str, str] = {}  # claim key on chain -> the hospital's own Claim id


def submit(hospital: GatewayHttp, member: Member, lines: list[tuple[str, int, str]]) -> str:
    """File a claim at the hospital; returns its key on chain (what events and the insurer know it by)."""
    r = hospital.post("/Claim", synthetic.claim(member.patient_id, "InsurerMSP", lines, TODAY, "Coverage/test"))
    assert r.status_code == 201, r.text
    key = claim_key(r.json())
    LOCAL_IDS[key] = str(r.json()["id"])
    return key


def fetched(gateway: GatewayHttp, path: str) -> dict[str, Any] | None:
    r = gateway.get(path)
    return r.json() if r.status_code == 200 else None


def claim_response(hospital: GatewayHttp, key: str) -> dict[str, Any] | None:
    """The ClaimResponse the hospital keeps under its own Claim id."""
    r = hospital.get(f"/ClaimResponse/{LOCAL_IDS[key]}")
    return r.json() if r.status_code == 200 else None


def reasons(response: dict[str, Any]) -> list[list[str]]:
    out = []
    for item in response["item"]:
        benefit = item["adjudication"][1]
        out.append([c["code"] for c in (benefit.get("reason") or {}).get("coding", [])])
    return out


def test_claims_are_adjudicated_in_seconds_by_the_rules(
    workers: Topology, gateways: dict[str, GatewayHttp], gateway_as: Callable[..., Gateway]
) -> None:
    hospital, insurer = gateways["HospitalOrg"], gateways["InsurerOrg"]
    member, stranger = enrol(hospital, insurer), enrol(hospital, insurer, covered=False)

    started = time.monotonic()
    overbilled = submit(hospital, member, [("99213", 1, "125.00"), ("85025", 2, "20.00")])
    response = wait_for(lambda: claim_response(hospital, overbilled), 5, "the ClaimResponse at the hospital")
    turnaround = time.monotonic() - started
    assert turnaround < 5
    assert response["outcome"] == "complete" and response["disposition"].startswith("partial: 150.00 of 165.00")
    assert reasons(response) == [["45"], []]

    uncovered = submit(hospital, stranger, [("85025", 1, "20.00")])
    assert reasons(wait_for(lambda: claim_response(hospital, uncovered), 10, "uncovered"))[0] == ["31"]

    # The same code for the member on the same day in another claim: that line is a duplicate.
    again = submit(hospital, member, [("85025", 2, "20.00"), ("80053", 1, "30.00")])
    dup = wait_for(lambda: claim_response(hospital, again), 10, "duplicate")
    assert reasons(dup) == [["18"], []] and dup["disposition"].startswith("partial")

    needs_auth = submit(hospital, member, [("27447", 1, "9000.00")])
    auth = wait_for(lambda: claim_response(hospital, needs_auth), 10, "prior auth")
    assert reasons(auth) == [["197"]] and auth["disposition"].startswith("denied")

    # A code that needs a records review is paid only if the provider lets the insurer read the record, which
    # depends on the patient's consent for payment purposes, checked and logged on chain by the provider.
    consenting = enrol(hospital, insurer)
    granted = hospital.post("/Consent", synthetic.consent(consenting.patient_id, "InsurerMSP", "HPAYMT"))
    assert granted.status_code == 201, granted.text
    for who, expected in ((member, [["252"]]), (consenting, [[]])):
        review = submit(hospital, who, [("97110", 1, "60.00")])
        assert reasons(wait_for(lambda c=review: claim_response(hospital, c), 10, "records review")) == expected
    log = hospital.get("/AuditEvent", params={"patient": consenting.patient_id}).json()["entry"]
    assert [(e["resource"]["outcome"], e["resource"]["agent"][0]["who"]["identifier"]["value"]) for e in log] == [
        ("0", "InsurerMSP")
    ]

    # Approved money is paid once, with a PaymentReconciliation at the insurer; denied claims are not paid.
    ins = gateway_as("InsurerOrg")

    wait_for(lambda: claim_status(ins, overbilled) == "paid", 10, "payment")
    assert claim_status(ins, needs_auth) == "adjudicated"
    ref = json.loads(ins.network("claims").contract("careledger").evaluate("Claims:Get", args=[overbilled]))[
        "paymentRef"
    ]
    payment = wait_for(lambda: (r := insurer.get(f"/PaymentReconciliation/{ref}")).status_code == 200 and r.json(), 10,
                       "the remittance's PaymentReconciliation")  # fmt: skip
    detail = next(d for d in payment["detail"] if d["identifier"]["value"] == overbilled)
    assert detail["amount"] == {"value": 150.0, "currency": "USD"}
    print(f"turnaround POST Claim -> ClaimResponse at the hospital: {turnaround:.2f} s")


def test_webhooks_get_every_claim_once_despite_failures(
    workers: Topology, gateways: dict[str, GatewayHttp], receiver: tuple[Receiver, str]
) -> None:
    state, _ = receiver
    hospital, insurer = gateways["HospitalOrg"], gateways["InsurerOrg"]
    member = enrol(hospital, insurer)
    claims = [submit(hospital, member, [(code, 1, "10.00")]) for code in ("86900", "86901", "87070")]
    wait_for(lambda: all(state.accepted_for("InsurerOrg", "Claims.Submitted")[c] for c in claims), 30, "insurer hooks")
    wait_for(lambda: all(state.accepted_for("HospitalOrg", "Claims.Adjudicated")[c] for c in claims), 30, "EHR hooks")
    time.sleep(1.5)  # would a repeat arrive?
    assert [state.accepted_for("InsurerOrg", "Claims.Submitted")[c] for c in claims] == [1, 1, 1]
    assert [state.accepted_for("HospitalOrg", "Claims.Adjudicated")[c] for c in claims] == [1, 1, 1]
    assert state.bad_signatures == 0
    # Each was accepted on the third attempt: the receiver refused the first two, and the worker retried.
    with state.lock:
        ours = [b["delivery"] for _, b in state.accepted if b["claim"].get("claimId") in claims]
        assert [state.attempts[d] for d in ours] == [FAILURES_BEFORE_SUCCESS + 1] * len(ours)
    r = redis.Redis.from_url(workers.redis_admin_url)
    stream = [json.loads(f[b"claim"]) for _, f in r.xrange(INSURER_KEYS.stream("claims"))]
    assert Counter(c["claimId"] for c in stream if c["claimId"] in claims) == Counter(claims)


def test_a_webhook_that_keeps_failing_ends_in_the_dead_letter_list(
    workers: Topology, gateways: dict[str, GatewayHttp], receiver: tuple[Receiver, str]
) -> None:
    state, _ = receiver
    hospital, insurer = gateways["HospitalOrg"], gateways["InsurerOrg"]
    r = redis.Redis.from_url(workers.redis_admin_url)
    claim_id = submit(hospital, enrol(hospital, insurer), [("86999", 1, ALWAYS_FAILING_TOTAL)])

    def dead_letter() -> dict[str, Any] | None:
        entries = [json.loads(e) for e in r.lrange(INSURER_KEYS.dead_letters, 0, -1)]
        return next((e for e in entries if e["claim"].get("claimId") == claim_id), None)

    dead = wait_for(dead_letter, 30, "the dead letter")  # 6 attempts, 0.2 s backoff doubling: about 6 s
    assert dead["attempts"] == 6 and dead["event"] == "Claims.Submitted" and "503" in dead["error"]
    assert state.attempts[dead["delivery"]] == 6
    assert state.accepted_for("InsurerOrg", "Claims.Submitted")[claim_id] == 0


def claim_status(gw: Gateway, claim_id: str) -> str:
    return str(
        json.loads(gw.network("claims").contract("careledger").evaluate("Claims:Get", args=[claim_id]))["status"]
    )


def adjudicated_in(event: str, payload: dict[str, Any]) -> list[str]:
    """The claims an event adjudicated: one (Claims.Adjudicated) or many (Claims.AdjudicatedBatch)."""
    if event == "Claims.Adjudicated":
        return [payload["claimId"]]
    if event == "Claims.AdjudicatedBatch":
        return [c["claimId"] for c in payload["claims"]]
    return []


def chain_events(gw: Gateway, wanted: Callable[[str, dict[str, Any]], bool], timeout: float) -> list[Any]:
    """Claims events from block 0 on until one is wanted (event name, payload); returns the (name, payload) pairs
    read up to and including it."""
    found: list[Any] = []
    stream = gw.network("claims").chaincode_events("careledger", start_block=0)
    timer = threading.Timer(timeout, stream.close)
    timer.start()
    try:
        for e in stream:
            found.append((e.name, json.loads(e.payload)))
            if wanted(e.name, found[-1][1]):
                return found
    except Exception:
        pass
    finally:
        timer.cancel()
        stream.close()
    raise AssertionError(f"no wanted event within {timeout}s")


def _settle(t: Topology, claims: dict[str, str], log: ChainLog, hospital: GatewayHttp, timeout: float = 120) -> None:
    """Wait until every claim is adjudicated and paid, the hospital keeps each payment's PaymentReconciliation and
    each claim's ClaimResponse. (A payment can come before the answer: a worker killed while it held a member's lock
    delays the answers to that member's claims until the lock expires, by which time the claim may be paid.)"""

    def settled() -> bool:
        events = log.snapshot()
        paid = [e for e in events if e.name in PAID and set(claim_ids(e)) & set(claims)]
        return (
            set(claims) <= {c for e in paid for c in claim_ids(e)}
            and all(
                hospital.get(f"/PaymentReconciliation/{e.payload['paymentRef']}").status_code == 200
                for e in paid
                if e.name == "Claims.PaidBatch"
            )
            and all(hospital.get(f"/ClaimResponse/{local}").status_code == 200 for local in claims.values())
        )

    wait_for(settled, timeout, "every claim adjudicated, answered, paid and its remittance at the hospital")
    time.sleep(3)  # a repeat (a second adjudication, payment, stream entry or delivery) would show up too


def _held_by_workers(r: redis.Redis, msp: str) -> set[str]:
    """Ids of the tasks whose messages the org's workers have taken from its queue and not acknowledged yet
    (kombu's `unacked` hash, under the org's prefix)."""
    raw: dict[bytes, bytes] = r.hgetall(OrgKeys(msp).celery_prefix + "unacked")  # type: ignore[assignment]
    return {str(json.loads(value)[0]["headers"]["id"]) for value in raw.values()}


def test_a_worker_killed_mid_adjudication_loses_and_repeats_nothing(
    workers: Topology,
    gateways: dict[str, GatewayHttp],
    receiver: tuple[Receiver, str],
    gateway_as: Callable[..., Gateway],
) -> None:
    """The insurer's worker is killed while it holds the task of a claim still undecided on chain. The claim is
    decided once (on chain, in the ClaimResponses), paid once (one PaymentReconciliation, equal to the chain), and
    every stream entry and webhook delivery happens once; no task fails for good."""
    state, _ = receiver
    hospital, insurer = gateways["HospitalOrg"], gateways["InsurerOrg"]
    admin = redis.Redis.from_url(workers.redis_admin_url)
    failed_before = admin.llen(INSURER_KEYS.failed)
    member = enrol(hospital, insurer)
    log = ChainLog(workers, "claims", chain_height(workers, "ClinicOrg", "claims"))
    proc = worker_cli.worker_process(workers, "InsurerOrg")
    ins = gateway_as("InsurerOrg")
    claims = [submit(hospital, member, [(f"9{n:04d}", 1, "10.00")]) for n in range(12)]

    # One member's claims are decided one at a time, so while one is decided the worker holds the others' tasks.
    def held_undecided() -> list[str]:
        held = _held_by_workers(admin, "InsurerMSP")
        return [c for c in claims if any(h.endswith(f":{c}:adjudicate") for h in held)
                and claim_status(ins, c) == "submitted"]  # fmt: skip

    # Frozen (SIGSTOP) while it is looked at, the worker can neither finish nor acknowledge what it holds before it is
    # killed: the kill is certain to hit a held task (whose decision may still be on its way to the ledger).
    def frozen_holding_undecided() -> list[str]:
        proc.kill(signal.SIGSTOP)
        found: list[str] = []
        try:
            found = held_undecided()
        finally:
            if not found:
                proc.kill(signal.SIGCONT)
        return found

    wait_for(frozen_holding_undecided, 30, "the worker holding the task of a claim not decided yet")
    killed = proc.kill(signal.SIGKILL)  # supervisord starts it again
    try:
        _settle(workers, {c: LOCAL_IDS[c] for c in claims}, log, hospital)
        found = Findings()
        audit_claims(workers, {c: LOCAL_IDS[c] for c in claims}, log.snapshot(), hospital, insurer, state, found)
    finally:
        log.close()
    assert not found.lost and not found.duplicated, found
    assert admin.llen(INSURER_KEYS.failed) == failed_before, admin.lrange(INSURER_KEYS.failed, 0, 3)
    assert proc.pid() not in (None, killed)


def test_a_listener_killed_between_publishing_and_its_checkpoint_repeats_nothing(
    workers: Topology, gateways: dict[str, GatewayHttp], receiver: tuple[Receiver, str]
) -> None:
    """The insurer's listener is killed after it published a claim's tasks and before its checkpoint moved past
    the claim's event. It is held in that window on purpose: its next checkpoint write fails (the key is made a
    string), so it publishes the next event's tasks and then waits to try again. Killed there, its checkpoint put
    back, it starts again from before the event and publishes the tasks again: the claim is still adjudicated,
    paid, streamed and delivered once."""
    state, _ = receiver
    hospital, insurer = gateways["HospitalOrg"], gateways["InsurerOrg"]
    admin = redis.Redis.from_url(workers.redis_admin_url)
    failed_before = admin.llen(INSURER_KEYS.failed)
    member = enrol(hospital, insurer)
    checkpoint = f"careledger:checkpoint:{INSURER_KEYS.listener_checkpoint_name('claims')}"
    listener = worker_cli.listener_process(workers, "InsurerOrg")
    log = ChainLog(workers, "claims", chain_height(workers, "ClinicOrg", "claims"))

    def streamed(claim: str) -> bool:
        entries = admin.xrange(INSURER_KEYS.stream("claims"))
        return any(f[b"claimId"].decode() == claim and f[b"event"] == b"Claims.Submitted" for _, f in entries)

    def quiet(seconds: float) -> bool:
        """The listener's checkpoint has not moved for this long: the next event it reads will be ours."""
        first = admin.hgetall(checkpoint)
        time.sleep(seconds)
        return bool(first) and admin.hgetall(checkpoint) == first

    claim, killed = "", None
    try:
        for attempt in range(5):
            wait_for(lambda: quiet(3), 90, "a quiet moment on the claims channel")
            before = admin.hgetall(checkpoint)
            admin.delete(checkpoint)
            admin.set(checkpoint, "held")
            claim = submit(hospital, member, [(f"6{attempt:04d}", 1, "10.00")])
            try:
                wait_for(lambda c=claim: streamed(c), 20, "the claim's tasks published")
            except AssertionError:  # another event came first and holds the listener: let it go and try again
                admin.delete(checkpoint)
                admin.hset(checkpoint, mapping=before)  # type: ignore[arg-type]
                continue
            assert admin.type(checkpoint) == b"string", "the listener moved its checkpoint"
            killed = listener.kill(signal.SIGKILL)  # in the window; supervisord starts it again
            admin.delete(checkpoint)
            admin.hset(checkpoint, mapping=before)  # type: ignore[arg-type]
            break
        else:
            pytest.fail("the listener could not be held in the window")
        block = wait_for(lambda: next((e.block for e in log.snapshot() if claim in claim_ids(e)), None), 20, "event")
        wait_for(lambda: int(admin.hget(checkpoint, "block_number") or 0) >= block, 60, "the event read again")
        _settle(workers, {claim: LOCAL_IDS[claim]}, log, hospital)
        found = Findings()
        audit_claims(workers, {claim: LOCAL_IDS[claim]}, log.snapshot(), hospital, insurer, state, found)
    finally:
        log.close()
        if admin.type(checkpoint) == b"string":
            admin.delete(checkpoint)
    assert not found.lost and not found.duplicated, found
    assert admin.llen(INSURER_KEYS.failed) == failed_before, admin.lrange(INSURER_KEYS.failed, 0, 3)
    assert listener.pid() not in (None, killed)


def test_a_task_whose_message_was_lost_is_sent_again_from_the_outbox(workers: Topology) -> None:
    """The window kombu leaves open (a message taken from the queue by a worker killed before it recorded it) is
    simulated directly: a task is written down in the outbox as sent long ago, but never sent."""
    r = redis.Redis.from_url(workers.redis_admin_url)
    delivery = f"test-lost-{time.time_ns()}"
    claim = {"claimId": delivery, "insurer": "InsurerMSP", "provider": "HospitalMSP"}
    entry = {"task": "careledger.notify", "args": ["Claims.Cancelled", claim, delivery], "at": time.time() - 3600}
    r.hset(INSURER_KEYS.inflight, delivery, json.dumps(entry | {"queue": "careledger.InsurerOrg"}))

    def on_stream() -> bool:
        return any(f[b"delivery"].decode() == delivery for _, f in r.xrange(INSURER_KEYS.stream("claims")))

    wait_for(on_stream, 30, "the re-sent task's effect")
    wait_for(lambda: not r.hexists(INSURER_KEYS.inflight, delivery), 10, "the task crossed out")


# ----- Redis users -------------------------------------------------------------------------------------------


def test_claims_filed_together_are_submitted_adjudicated_and_paid_in_batches(
    workers: Topology, gateways: dict[str, GatewayHttp], gateway_as: Callable[..., Gateway]
) -> None:
    """Concurrent POSTs at the hospital go on chain in one Claims:SubmitBatch; the insurer adjudicates the batch in
    one transaction and pays the hospital's claims in remittances of many claims (the cycle pays what is queued when
    it runs: claims adjudicated on either side of it go in two), whose PaymentReconciliations reach the hospital
    with one detail per claim."""
    hospital, insurer = gateways["HospitalOrg"], gateways["InsurerOrg"]
    member = enrol(hospital, insurer)
    codes = [f"7{n:04d}" for n in range(8)]
    with ThreadPoolExecutor(len(codes)) as pool:
        keys = list(pool.map(lambda code: submit(hospital, member, [(code, 1, "40.00")]), codes))
    paid: dict[str, str] = {}  # claim -> the payment that paid it

    def all_paid(name: str, p: dict[str, Any]) -> bool:
        if name == "Claims.PaidBatch":
            paid.update({x["claimId"]: p["paymentRef"] for x in p["lines"] if x["claimId"] in keys})
        return set(keys) <= set(paid)

    events = chain_events(gateway_as("HospitalOrg"), all_paid, timeout=60)
    batches = [
        p for name, p in events if name == "Claims.SubmittedBatch" and {c["claimId"] for c in p["claims"]} & set(keys)
    ]
    assert batches and max(len(b["claims"]) for b in batches) > 1, "concurrent claims were not batched"
    assert sum(1 for name, p in events if set(adjudicated_in(name, p)) & set(keys) and name.endswith("Batch")) >= 1
    payments = [p for name, p in events if name == "Claims.PaidBatch" and p["paymentRef"] in paid.values()]
    assert len(payments) < len(keys), "the claims were not paid together"
    for payment in payments:
        assert payment["totalCents"] == sum(x["amountCents"] for x in payment["lines"])
        url = f"/PaymentReconciliation/{payment['paymentRef']}"
        assert wait_for(lambda u=url: hospital.get(u).status_code == 200, 20, "the remittance")
        reconciliation = hospital.get(url).json()
        assert {d["identifier"]["value"] for d in reconciliation["detail"]} == {x["claimId"] for x in payment["lines"]}
    assert all(claim_response(hospital, k) is not None for k in keys)


def test_prior_authorisation_is_decided_by_rules_or_by_a_person(
    workers: Topology, gateways: dict[str, GatewayHttp]
) -> None:
    hospital, insurer = gateways["HospitalOrg"], gateways["InsurerOrg"]
    member = enrol(hospital, insurer)

    def request(code: str, priority: str) -> dict[str, Any]:
        claim = synthetic.claim(member.patient_id, "InsurerMSP", [(code, 1, "900.00")], TODAY, "Coverage/test")
        claim |= {"use": "preauthorization", "priority": {"coding": [{"code": priority}]}}
        r = hospital.post(
            "/Claim/$submit", {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": claim}]}
        )
        assert r.status_code == 201, r.text
        return dict(r.json()["entry"][0]["resource"])

    approved = request("70553", "stat")  # authorised by the rules at once
    assert approved["outcome"] == "complete" and approved["preAuthRef"].startswith("PA-")
    pended = request("27447", "normal")  # needs a person
    assert pended["outcome"] == "queued"
    claim_id = pended["request"]["reference"].split("/")[1]
    key = claim_key(hospital.get(f"/Claim/{claim_id}").json())
    decide = {"resourceType": "Parameters", "parameter": [{"name": "decision", "valueCode": "denied"},
                                                          {"name": "reason", "valueCode": "50"}]}  # fmt: skip
    wait_for(lambda: insurer.get(f"/ClaimResponse/{key}").status_code == 200, 20, "the pended response at the insurer")
    r = insurer.post(f"/ClaimResponse/{key}/$decide", decide)
    assert r.status_code == 200, r.text
    decided = wait_for(
        lambda: (c := hospital.get(f"/ClaimResponse/{claim_id}").json()).get("outcome") == "complete" and c,
        30,
        "the person's decision at the hospital",
    )
    assert decided["error"][0]["code"]["coding"][0]["code"] == "50"

    # The hospital appeals the denial once, with documentation (only its keyed digest goes on chain); a person at the
    # insurer approves it, and the hospital hears of it.
    documentation = {"contentType": "text/plain", "data": base64.b64encode(b"MRI: medial meniscus tear").decode()}
    appeal = {"resourceType": "Parameters", "parameter": [{"name": "documentation", "valueAttachment": documentation}]}
    r = hospital.post(f"/Claim/{claim_id}/$appeal", appeal)
    assert r.status_code == 200, r.text
    assert r.json()["parameter"][0]["valueCode"] == "appealed"
    again = hospital.post(f"/Claim/{claim_id}/$appeal", appeal)
    assert again.status_code == 409, again.text  # one appeal per request
    approve = {"resourceType": "Parameters", "parameter": [{"name": "decision", "valueCode": "approved"}]}
    r = insurer.post(f"/ClaimResponse/{key}/$decide", approve)
    assert r.status_code == 200, r.text
    approved_on_appeal = wait_for(
        lambda: (
            (c := hospital.get(f"/ClaimResponse/{claim_id}").json()).get("outcome") == "complete"
            and not c.get("error")
            and c
        ),
        30,
        "the approval on appeal at the hospital",
    )
    assert approved_on_appeal["preAuthRef"].startswith("PA-")
    metrics = subprocess.run(
        [sys.executable, "-m", "careledger.cli", "claims", "pa-metrics", "--org", "InsurerOrg"],
        env={**os.environ, "CARELEDGER_HOME": str(workers.home), "CARELEDGER_PORT_BASE": str(workers.port_base)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert metrics.returncode == 0, metrics.stderr
    row = next(line.split() for line in metrics.stdout.splitlines() if line.strip().startswith("all"))
    # requests, approved, denied, approved after appeal
    assert int(row[1]) >= 2 and int(row[2]) >= 1 and int(row[4]) >= 1


def test_prior_authorisations_filed_together_are_submitted_and_decided_in_batches(
    workers: Topology, gateways: dict[str, GatewayHttp], gateway_as: Callable[..., Gateway]
) -> None:
    """Concurrent requests at the hospital go on chain in one Claims:SubmitBatch (with claims, when any arrive
    with them); the insurer decides the requests of one block in one Claims:DecidePreauthBatch, and each answer
    reaches the hospital."""
    hospital, insurer = gateways["HospitalOrg"], gateways["InsurerOrg"]
    member = enrol(hospital, insurer)

    def request(code: str) -> str:
        claim = synthetic.claim(member.patient_id, "InsurerMSP", [(code, 1, "700.00")], TODAY, "Coverage/test")
        r = hospital.post("/Claim", claim | {"use": "preauthorization"})
        assert r.status_code == 201, r.text
        key = claim_key(r.json())
        LOCAL_IDS[key] = str(r.json()["id"])
        return key

    codes = [f"8{n:04d}" for n in range(6)]
    with ThreadPoolExecutor(len(codes)) as pool:
        keys = list(pool.map(request, codes))
    answers = [
        wait_for(lambda k=k: (c := claim_response(hospital, k)) and c.get("outcome") == "complete" and c, 60, k)
        for k in keys
    ]
    assert all(a["preAuthRef"].startswith("PA-") and not a.get("error") for a in answers)

    def decided_in(name: str, p: dict[str, Any]) -> list[str]:
        if name == "Claims.PreauthDecidedBatch":
            return [c["claimId"] for c in p["claims"]]
        return [p["claimId"]] if name == "Claims.PreauthDecided" else []

    ours, undecided = set(keys), set(keys)

    def all_decided(name: str, p: dict[str, Any]) -> bool:
        undecided.difference_update(decided_in(name, p))
        return not undecided

    events = chain_events(gateway_as("InsurerOrg"), all_decided, timeout=60)
    submitted = [
        p for name, p in events if name == "Claims.SubmittedBatch" and {c["claimId"] for c in p["claims"]} & ours
    ]
    assert submitted and max(len(b["claims"]) for b in submitted) > 1, "concurrent requests were not batched"
    decided = [[k for k in decided_in(name, p) if k in ours] for name, p in events]
    assert max(len(d) for d in decided) > 1, "requests submitted together were not decided together"
    assert sorted(k for d in decided for k in d) == sorted(keys)  # each decided once


def test_claim_lines_are_purged_when_their_retention_passes(
    workers: Topology, gateways: dict[str, GatewayHttp], gateway_as: Callable[..., Gateway]
) -> None:
    hospital, insurer = gateways["HospitalOrg"], gateways["InsurerOrg"]
    key = submit(hospital, enrol(hospital, insurer), [("99213", 1, "80.00")])
    wait_for(lambda: claim_response(hospital, key), 20, "the ClaimResponse")
    events = chain_events(
        gateway_as("InsurerOrg"), lambda name, p: name == "Claims.LinesPurged" and p["claimId"] == key, RETENTION_S + 60
    )
    assert events
    for org in ("HospitalOrg", "InsurerOrg"):  # gone from both parties' peers; the public summary stays
        contract = gateway_as(org).network("claims").contract("careledger")
        with pytest.raises(Exception, match="purged"):
            contract.evaluate("Claims:Lines", args=[key])
        assert json.loads(contract.evaluate("Claims:Get", args=[key]))["linesPurged"] is True


def test_an_org_reaches_only_its_own_redis_keys(workers: Topology) -> None:
    """Each org's processes connect as the org's Redis user: another org's queues, outbox, stream, checkpoint and
    Celery keys are refused (NOPERM), and so are commands beyond what the processes need."""
    admin = redis.Redis.from_url(workers.redis_admin_url)
    hospital = redis.Redis.from_url(workers.redis_url_for("HospitalOrg"))
    own = OrgKeys("HospitalMSP").prefix + f"test:own:{time.time_ns()}"
    hospital.set(own, "mine")
    assert hospital.get(own) == b"mine"
    hospital.delete(own)
    queue = INSURER_KEYS.celery_prefix + "careledger.InsurerOrg"
    checkpoint = f"careledger:checkpoint:{OrgKeys('InsurerMSP').listener_checkpoint_name('claims')}"
    assert admin.exists(checkpoint), "the insurer's listener keeps its checkpoint there"
    attempts: list[Callable[[], object]] = [
        lambda: hospital.hgetall(INSURER_KEYS.inflight),
        lambda: hospital.hset(INSURER_KEYS.inflight, "forged", "{}"),
        lambda: hospital.xrange(INSURER_KEYS.stream("claims")),
        lambda: hospital.xadd(INSURER_KEYS.stream("claims"), {"claim": "{}"}),
        lambda: hospital.llen(queue),
        lambda: hospital.lpush(queue, "forged task"),
        lambda: hospital.hgetall(checkpoint),
        lambda: hospital.delete(INSURER_KEYS.dead_letters),
        lambda: hospital.get("careledger:anything-unprefixed"),
        lambda: hospital.keys("*"),
        lambda: hospital.publish("careledger:InsurerMSP:celery:/0.celery.pidbox", "x"),
        lambda: hospital.config_get("*"),
        lambda: hospital.flushall(),
        lambda: hospital.acl_list(),
    ]
    for n, attempt in enumerate(attempts):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
            pytest.fail(f"attempt {n} was allowed")
    # Nothing connects without a password, or with another user's.
    bare = redis.Redis(host=workers.host, port=workers.redis_port)
    with pytest.raises(redis.AuthenticationError):
        bare.ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=workers.host, port=workers.redis_port, username="default", password="").ping()
    wrong = workers.redis_url_for("HospitalOrg").replace("HospitalMSP:", "InsurerMSP:", 1)
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(wrong).ping()
    assert admin.llen(queue) >= 0 and not admin.hexists(INSURER_KEYS.inflight, "forged")
    admin.acl_log_reset()  # these refusals were the test's; test_no_org_process_was_refused_by_redis reads the log


# ----- supervision and faults ------------------------------------------------------------------------------------


def _org_processes(t: Topology) -> list[Any]:
    return [p for org in worker_cli.orgs_with_workers(t) for p in (worker_cli.listener_process(t, org),
                                                                   worker_cli.worker_process(t, org))]  # fmt: skip


def _all_alive(t: Topology) -> bool:
    from network import control

    services = control.services(t)
    return bool(services) and all(s["state"] == "RUNNING" and s["live"] for s in services)


def test_supervisord_restarts_a_killed_listener_and_worker(workers: Topology, gateways: dict[str, GatewayHttp]) -> None:
    hospital, insurer = gateways["HospitalOrg"], gateways["InsurerOrg"]
    procs = [worker_cli.listener_process(workers, "InsurerOrg"), worker_cli.worker_process(workers, "InsurerOrg")]
    killed = [p.kill(signal.SIGKILL) for p in procs]
    wait_for(lambda: all(p.pid() not in (None, k) for p, k in zip(procs, killed, strict=True)), 30, "new processes")
    claim = submit(hospital, enrol(hospital, insurer), [("99214", 1, "80.00")])
    wait_for(lambda: claim_response(hospital, claim), 120, "the claim adjudicated by the restarted processes")
    wait_for(lambda: _all_alive(workers), 60, "`network status` reporting every process alive")


def test_claims_flow_again_after_redis_restarts(workers: Topology, gateways: dict[str, GatewayHttp]) -> None:
    """Listeners and workers ride out Redis going away: nobody restarts them, and the next claim goes through."""
    from network import redis_server

    hospital, insurer = gateways["HospitalOrg"], gateways["InsurerOrg"]
    member = enrol(hospital, insurer)
    wait_for(lambda: _all_alive(workers), 60, "every process alive before the fault")
    before = {p.name: p.pid() for p in _org_processes(workers)}
    # What an org wrote in a MULTI/EXEC transaction (as kombu records unacknowledged messages) survives the restart.
    insurer_redis = redis.Redis.from_url(workers.redis_url_for("InsurerOrg"))
    marker = INSURER_KEYS.prefix + f"test:transaction:{time.time_ns()}"
    with insurer_redis.pipeline(transaction=True) as pipe:
        pipe.hset(marker, "written", "in a transaction").expire(marker, 600)
        pipe.execute()
    assert redis_server.process(workers).stop()
    time.sleep(3)  # Redis stays away a while: listeners and workers lose their connections
    assert redis_server.start(workers)
    redis_server.wait_ready(workers)
    claim = submit(hospital, member, [("99215", 1, "90.00")])
    wait_for(lambda: claim_response(hospital, claim), 120, "a claim adjudicated after Redis restarted")
    assert {p.name: p.pid() for p in _org_processes(workers)} == before, "a process died and was restarted"
    assert insurer_redis.hgetall(marker) == {b"written": b"in a transaction"}
    wait_for(lambda: _all_alive(workers), 60, "`network status` reporting every process alive")


def test_no_org_process_was_refused_by_redis(workers: Topology) -> None:
    """Every command the listeners and workers ran, in all the tests above, was allowed by their orgs' ACLs."""
    refused = redis.Redis.from_url(workers.redis_admin_url).acl_log(count=50)
    assert refused == [], refused
