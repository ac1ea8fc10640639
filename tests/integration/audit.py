"""What the chain, the stores, the event streams and the webhooks say about claims, for the tests that kill parts of
the network (test_faults.py, and the worker and listener tests in test_workers.py): each claim adjudicated once,
each approved claim paid once, PaymentReconciliations equal to the chain, one stream entry and one webhook delivery
per event. Findings are collected, not asserted one by one, so a test can report every one of them."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from consortium import connect
from consortium.redis_keys import OrgKeys
from consortium.topology import Topology
from fabric_gateway import messages as fabric_messages
from fabric_gateway.checkpoint import InMemoryCheckpointer, after_event
from tests.conftest import GatewayHttp

HOSPITAL, INSURER = "HospitalMSP", "InsurerMSP"
KEYS = {HOSPITAL: OrgKeys(HOSPITAL), INSURER: OrgKeys(INSURER)}


class Hooks(Protocol):
    """The webhook receiver of the tests: every delivery it accepted, as (org, JSON body)."""

    lock: threading.Lock
    accepted: list[tuple[str, dict[str, Any]]]


@dataclass
class Findings:
    """What went wrong, one line per item; `lost` and `duplicated` count items."""

    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)

    def count(self, n: int, what: str) -> None:
        """An item that must happen exactly once happened n times."""
        if n == 0:
            self.lost.append(what)
        elif n > 1:
            self.duplicated.append(f"{what} ({n}x)")


# ----- what the chain says, as it happens ------------------------------------------------------------------------


@dataclass
class Seen:
    at: float  # when this test saw it
    block: int
    tx_id: str
    name: str
    payload: dict[str, Any]


class ChainLog:
    """Every CareLedger event of a channel from a block on, with when it was seen, read as ClinicOrg (whose peer no
    scenario kills). A broken stream resumes after the last event."""

    def __init__(self, t: Topology, channel: str, start_block: int) -> None:
        self.t, self.channel, self.start_block = t, channel, start_block
        self.events: list[Seen] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.streams: list[Any] = []
        self.thread = threading.Thread(target=self._run, name=f"chainlog-{channel}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        position = InMemoryCheckpointer()
        while not self.stopping.is_set():
            try:
                with connect.gateway(self.t, "ClinicOrg") as gw:
                    checkpoint = position.load()
                    stream = gw.network(self.channel).chaincode_events(
                        self.t.chaincode_name,
                        start_block=self.start_block if checkpoint.is_empty else None,
                        checkpoint=checkpoint,
                    )
                    self.streams.append(stream)
                    for e in stream:
                        with self.lock:
                            self.events.append(
                                Seen(time.monotonic(), e.block_number, e.tx_id, e.name, json.loads(e.payload))
                            )
                        position.save(after_event(e))
            except Exception:
                time.sleep(0.2)

    def snapshot(self) -> list[Seen]:
        with self.lock:
            return list(self.events)

    def close(self) -> None:
        self.stopping.set()
        for s in self.streams:
            s.close()


def chain_height(t: Topology, org: str, channel: str) -> int:
    with connect.gateway(t, org) as gw:
        return fabric_messages.chain_height(
            gw.network(channel).contract("qscc").evaluate("GetChainInfo", args=[channel])
        )


def claim_ids(event: Seen, provider: str = HOSPITAL) -> list[str]:
    """The claims an event is about (a batch event lists several)."""
    p = event.payload
    if event.name in ("Claims.SubmittedBatch", "Claims.AdjudicatedBatch"):
        return [c["claimId"] for c in p.get("claims") or [] if c.get("provider") == provider]
    if event.name == "Claims.PaidBatch":
        return [line["claimId"] for line in p.get("lines") or []] if p.get("provider") == provider else []
    return [p["claimId"]] if p.get("provider") == provider and p.get("claimId") else []


SUBMITTED = ("Claims.Submitted", "Claims.SubmittedBatch")
ADJUDICATED = ("Claims.Adjudicated", "Claims.AdjudicatedBatch")
PAID = ("Claims.Paid", "Claims.PaidBatch")


# ----- the audit -------------------------------------------------------------------------------------------------


def audit_claims(
    t: Topology,
    ours: dict[str, str],
    events: list[Seen],
    hospital: GatewayHttp,
    insurer: GatewayHttp,
    hooks: Hooks,
    found: Findings,
) -> None:
    """`ours`: claim key on chain -> the hospital's Claim id. Each claim adjudicated once, with one ClaimResponse
    version at the insurer and at the hospital; each approved claim paid once, in a remittance whose
    PaymentReconciliation, at the insurer and as the hospital fetched it, equals the chain; one entry per event on
    each org's stream and one delivery per event to each webhook."""
    adjudicated: Counter[str] = Counter(c for e in events if e.name in ADJUDICATED for c in claim_ids(e))
    paid: Counter[str] = Counter(c for e in events if e.name in PAID for c in claim_ids(e))
    with connect.gateway(t, "InsurerOrg") as gw:
        contract = gw.network("claims").contract("careledger")
        state = {c: json.loads(contract.evaluate("Claims:Get", args=[c])) for c in sorted(ours)}
    for c, local in sorted(ours.items()):
        found.count(adjudicated[c], f"claim {c[:12]} adjudicated")
        approved = int(state[c].get("approvedCents") or 0)
        if approved > 0:
            found.count(paid[c], f"claim {c[:12]} paid")
            if state[c]["status"] != "paid" or state[c]["paidCents"] != approved:
                found.lost.append(f"claim {c[:12]} is {state[c]['status']}, paid {state[c]['paidCents']} of {approved}")
        for org, url in (("insurer", f"/ClaimResponse/{c}"), ("hospital", f"/ClaimResponse/{local}")):
            r = (insurer if org == "insurer" else hospital).get(url)
            if r.status_code != 200:
                found.lost.append(f"claim {c[:12]}: no ClaimResponse at the {org} ({r.status_code})")
            elif r.json()["meta"]["versionId"] != "1":
                found.duplicated.append(f"claim {c[:12]}: ClaimResponse made again at the {org}")
    # Each payment's PaymentReconciliation, at the insurer and as the hospital fetched it, equals the chain.
    in_reconciliations: Counter[str] = Counter()
    payments = [
        e
        for e in events
        if e.name == "Claims.PaidBatch" and e.payload.get("provider") == HOSPITAL and set(claim_ids(e)) & set(ours)
    ]
    for e in payments:
        lines = Counter((line["claimId"], int(line["amountCents"])) for line in e.payload["lines"])
        ref = e.payload["paymentRef"]
        for org, gw_http in (("insurer", insurer), ("hospital", hospital)):
            r = gw_http.get(f"/PaymentReconciliation/{ref}")
            if r.status_code != 200:
                found.lost.append(f"payment {ref[:16]}: no PaymentReconciliation at the {org} ({r.status_code})")
                continue
            pr = r.json()
            details = Counter((d["identifier"]["value"], round(d["amount"]["value"] * 100)) for d in pr["detail"])
            if org == "insurer":
                in_reconciliations.update(cid for cid, _ in details.elements())
            if details != lines or round(pr["paymentAmount"]["value"] * 100) != int(e.payload["totalCents"]):
                found.lost.append(f"payment {ref[:16]}: the {org}'s PaymentReconciliation differs from the chain")
    for c in ours:
        if in_reconciliations[c] > 1:
            found.duplicated.append(f"claim {c[:12]} is in {in_reconciliations[c]} PaymentReconciliations")
    # Streams: one entry per claim event, one per payment.
    admin = redis.Redis.from_url(t.redis_admin_url)
    streams = {msp: admin.xrange(KEYS[msp].stream("claims")) for msp in KEYS}
    for msp, wanted in ((INSURER, "Claims.Submitted"), (HOSPITAL, "Claims.Adjudicated")):
        counts = Counter(f[b"claimId"].decode() for _, f in streams[msp] if f[b"event"].decode() == wanted)
        for c in ours:
            found.count(counts[c], f"{wanted} {c[:12]} on {msp}'s stream")
    on_stream = Counter(
        json.loads(f[b"claim"]).get("paymentRef") for _, f in streams[HOSPITAL] if f[b"event"] == b"Claims.PaidBatch"
    )
    for e in payments:
        found.count(
            on_stream[e.payload["paymentRef"]], f"payment {e.payload['paymentRef'][:16]} on the hospital's stream"
        )
    # Webhooks: every event delivered under one delivery id (a receiver drops repeats of one id, not two ids).
    deliveries: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    with hooks.lock:
        for org, body in hooks.accepted:
            deliveries[(org, body["event"], body["claim"].get("claimId", ""))].add(body["delivery"])
    for org, wanted in (("InsurerOrg", "Claims.Submitted"), ("HospitalOrg", "Claims.Adjudicated")):
        for c in ours:
            found.count(len(deliveries[(org, wanted, c)]), f"{wanted} {c[:12]} delivered to {org}'s webhook")


# ----- where an unfinished claim's tasks are ---------------------------------------------------------------------


def whereabouts(t: Topology, claims: set[str], limit: int = 12) -> list[str]:
    """For claims whose work did not finish: every place in Redis that still names them (the outbox, Celery's
    queues and unacknowledged messages, the failed list, the remittance queues), so a failure says where the work
    stopped. Only for reports: it reads every key of the two orgs."""
    admin = redis.Redis.from_url(t.redis_admin_url)
    out: list[str] = []
    for claim in sorted(claims)[:limit]:
        places = []
        for msp in KEYS:
            for raw_key in admin.scan_iter(match=f"{KEYS[msp].prefix}*", count=1000):
                key = raw_key.decode()
                kind = admin.type(raw_key).decode()
                values: list[tuple[bytes, bytes]] = []  # (hash field or b"", value)
                if kind == "hash":
                    values = list(admin.hgetall(raw_key).items())
                elif kind == "list":
                    values = [(b"", v) for v in admin.lrange(raw_key, 0, -1)]
                elif kind == "zset":
                    values = [(b"", v) for v in admin.zrange(raw_key, 0, -1)]
                hits = [
                    (name, field.decode(errors="replace") + text)
                    for field, v in values
                    for name, text in [_readable(v)]
                ]
                hits = [h for h in hits if claim in h[1]]
                if hits:
                    tasks = sorted({name for name, _ in hits})
                    places.append(f"{key.removeprefix(KEYS[msp].prefix)} x{len(hits)} {tasks}")
        out.append(f"claim {claim[:12]}: " + ("; ".join(places) if places else "named nowhere in Redis"))
    return out


def _readable(raw: bytes) -> tuple[str, str]:
    """(task name, text to search) of a stored value: a kombu message's body is base64 JSON, decoded here."""
    text = raw.decode(errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        return "", text
    if isinstance(data, list) and data and isinstance(data[0], dict):  # kombu's unacked entry: [message, ex, rk]
        data = data[0]
    if not isinstance(data, dict):
        return "", text
    if "body" in data and isinstance(data.get("headers"), dict):
        with contextlib.suppress(ValueError):
            text += base64.b64decode(data["body"]).decode(errors="replace")
        return str(data["headers"].get("task", "")), text
    return str(data.get("task", "")), text
