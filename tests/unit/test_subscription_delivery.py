"""Subscription delivery at an org's workers, over the in-memory ledger and a real private Redis: handshakes, event
numbering (once per event, however often a task runs), notifications per content, retries and the error status,
heartbeats, and the focus of each topic. Tasks run eagerly; what they would send to Celery is collected and run by
the test, so every step can be run again on purpose."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fhir.resources.R4B import get_fhir_model_class

from consortium import topology as topo
from ledger.contracts import Ledger
from ledger.fake import FakeLedger
from records import subscriptions as sub
from records import synthetic
from records import validation as fv
from records.service import Records
from tests import fhir_samples as fhir
from tests.subscription_samples import event_numbers, parameters, subscription
from tests.unit.test_worker_tasks import KINDS, MPI, records_of
from workers import context, outbox, tasks
from workers import subscriptions as ws
from workers.app import app
from workers.settings import WorkerSettings


@dataclass
class Receiver:
    """A subscriber's endpoint: every notification POSTed, and a switch to refuse them."""

    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    refusing: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [b for b in self.received if parameters(b)["type"] == kind]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                if not state.refusing:
                    state.received.append(body)
                    state.headers.append(dict(self.headers))
            self.send_response(503 if state.refusing else 200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_port}/hook"
    yield state
    server.shutdown()
    server.server_close()


@dataclass
class Org:
    world: FakeLedger
    records: Records
    ctx: context.OrgContext
    sent: list[tuple[str, list[Any], str]]  # (task, args, task id) the workers would have sent to Celery

    def run_sent(self) -> list[Any]:
        """Run every task sent so far (and those they send), in order; their results."""
        results = []
        while self.sent:
            name, args, _ = self.sent.pop(0)
            results.append(app.tasks[name].apply(args=args).get())
        return results

    def subscribe(self, resource: dict[str, Any], sid: str) -> sub.Subscription:
        self.ctx.run(sub.save(self.records, sid, lambda newest: sub.client_write(resource, None)))
        return sub.read(self.records, sid)


@pytest.fixture
def orgs(redis_topology: topo.Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Org]]:
    world = FakeLedger(KINDS)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    r = redis.Redis.from_url(redis_topology.redis_admin_url)
    r.flushdb()
    sent: list[tuple[str, list[Any], str]] = []
    monkeypatch.setattr(
        outbox, "publish", lambda _r, _msp, _queue, task, args, task_id: sent.append((task, args, task_id))
    )
    monkeypatch.setattr(app, "send_task", lambda task, args=(), **_: sent.append((task, list(args), "")))
    monkeypatch.setattr(ws, "ATTEMPTS", 3)
    out = {}
    for org, msp in (("HospitalOrg", "HospitalMSP"), ("InsurerOrg", "InsurerMSP")):
        records = records_of(world, tmp_path, msp)
        settings = WorkerSettings.load(redis_topology, org)
        ctx = context.OrgContext(settings, records, r, httpx.Client(), httpx.Client(timeout=5), loop)
        out[msp] = Org(world, records, ctx, sent)
    yield out
    context._context = None
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    for o in out.values():
        o.records.store.close()


def acting_as(org: Org) -> Org:
    context._context = org.ctx
    return org


def file_claim(hospital: Org, lines: list[tuple[str, int, str]]) -> tuple[str, str]:
    """The hospital files a claim for its patient p1; (the claim's key on chain, the hospital's Claim id)."""

    async def go() -> tuple[str, str]:
        if hospital.records.store.head("Patient", "p1") is None:
            patient = {**fhir.PATIENTS[0], "id": "p1", "identifier": [{"system": fhir.MPI_SYSTEM, "value": MPI}]}
            await hospital.records.transaction(
                [fv.entry({"resource": patient, "request": {"method": "PUT", "url": "Patient/p1"}}, 0)]
            )
        claim = synthetic.claim("p1", "InsurerMSP", lines, "2026-11-02", "Coverage/c1")
        (w,) = await hospital.records.transaction(
            [fv.entry({"resource": claim, "request": {"method": "POST", "url": "Claim"}}, 0)]
        )
        return hospital.records.store.ledger_key("Claim", w.id), w.id

    return hospital.ctx.run(go())


def event(world: FakeLedger, name: str, claim_id: str) -> tuple[str, dict[str, Any]]:
    """The last event of this name for the claim: (its delivery id, as the listener names it, its payload)."""
    block, tx, _, payload = [e for e in world.events if e[2] == name and e[3].get("claimId") == claim_id][-1]
    return f"{tx}:{name}:{claim_id}:notify", {**payload, "eventBlock": block}


def adjudicate(org: Org, claim_id: str, approved_cents: int) -> None:
    """The insurer's decision, straight on the ledger (the insurer's rules are tested elsewhere)."""
    insurer = Ledger(org.world.member("InsurerMSP"))
    lines = [{"sequence": 1, "outcome": "approved", "approvedCents": approved_cents, "reasons": []}]
    org.ctx.run(insurer.adjudicate(claim_id, {"lines": lines, "retentionSeconds": 0}))


def provider_keeps_claim_response(hospital: Org, claim_id: str, local_id: str) -> None:
    """What `fetch_claim_response` keeps at the provider before it notifies."""
    local = hospital.records.by_ledger_key("Claim", claim_id)
    assert local is not None
    response = {
        "resourceType": "ClaimResponse",
        "id": local_id,
        "status": "active",
        "type": ws.CLAIM_TYPE,
        "use": "claim",
        "patient": {"identifier": {"system": sub.PSEUDONYM_SYSTEM, "value": local.patient}},
        "created": "2026-11-02T10:00:00Z",
        "insurer": sub.msp_reference("InsurerMSP"),
        "outcome": "complete",
        "request": {"reference": f"Claim/{local_id}"},
    }
    hospital.ctx.run(hospital.records.keep(response, local.patient))


def activate(org: Org, receiver: Receiver) -> None:
    """What the ticker brings: the handshake of every requested subscription."""
    ws.tick.apply().get()
    org.run_sent()


def test_a_provider_hears_of_adjudication_and_payment_with_consecutive_event_numbers(
    orgs: dict[str, Org], receiver: Receiver
) -> None:
    hospital = acting_as(orgs["HospitalMSP"])
    hospital.subscribe(
        subscription("claim-adjudicated", receiver.url, "full-resource", headers=("Authorization: Bearer t0k",)), "adj"
    )
    hospital.subscribe(subscription("payment-issued", receiver.url, "full-resource"), "pay")
    activate(hospital, receiver)
    handshakes = receiver.of_type("handshake")
    assert {parameters(b)["subscription"]["reference"].rsplit("/", 1)[1] for b in handshakes} == {"adj", "pay"}
    assert all(parameters(b)["status"] == "requested" for b in handshakes)
    assert sub.read(hospital.records, "adj").status == "active" and sub.read(hospital.records, "pay").status == "active"

    for n in range(3):
        claim_id, local_id = file_claim(hospital, [(f"9921{n}", 1, "100.00")])
        adjudicate(hospital, claim_id, 10000)
        provider_keeps_claim_response(hospital, claim_id, local_id)
        delivery, payload = event(hospital.world, "Claims.Adjudicated", claim_id)
        summary = {**payload, "claim": f"Claim/{local_id}", "claimResponse": f"ClaimResponse/{local_id}"}
        assert tasks.notify.apply(args=["Claims.Adjudicated", summary, delivery]).get() == "notified"
        hospital.run_sent()
        hospital.ctx.run(Ledger(hospital.world.member("InsurerMSP")).pay(claim_id, f"PAY-{claim_id}"))
        delivery, payload = event(hospital.world, "Claims.Paid", claim_id)
        tasks.notify.apply(args=["Claims.Paid", payload, delivery]).get()
        hospital.run_sent()

    notes = receiver.of_type("event-notification")
    by_sub: dict[str, list[int]] = {}
    for b in notes:
        by_sub.setdefault(parameters(b)["subscription"]["reference"].rsplit("/", 1)[1], []).extend(event_numbers(b))
    assert by_sub == {"adj": [1, 2, 3], "pay": [1, 2, 3]}
    first_adj = next(b for b in notes if parameters(b)["subscription"]["reference"].endswith("/adj"))
    focus = first_adj["entry"][1]
    assert focus["resource"]["resourceType"] == "ClaimResponse" and focus["fullUrl"].endswith(
        f"/ClaimResponse/{focus['resource']['id']}"
    )
    assert first_adj["entry"][2]["resource"]["resourceType"] == "Claim"  # the provider's own Claim, as context
    first_pay = next(b for b in notes if parameters(b)["subscription"]["reference"].endswith("/pay"))
    payment = first_pay["entry"][1]["resource"]
    assert payment["resourceType"] == "PaymentReconciliation" and payment["paymentAmount"] == {
        "value": 100.0,
        "currency": "USD",
    }
    assert hospital.records.store.read("PaymentReconciliation", payment["id"]) is not None  # kept at the provider
    # The channel's headers go with every POST to it (the payment subscription has none).
    for body, headers in zip(receiver.received, receiver.headers, strict=True):
        mine = parameters(body)["subscription"]["reference"].endswith("/adj")
        assert headers.get("Authorization") == ("Bearer t0k" if mine else None)
    assert all(h["Content-Type"] == "application/fhir+json" for h in receiver.headers)
    for body in receiver.received:  # every one a valid R4 Bundle, the Parameters inside included
        get_fhir_model_class("Bundle").model_validate(body)


def test_an_event_is_numbered_once_however_often_its_tasks_run(orgs: dict[str, Org], receiver: Receiver) -> None:
    insurer = acting_as(orgs["InsurerMSP"])
    insurer.subscribe(subscription("claim-submitted", receiver.url, "id-only"), "s")
    activate(insurer, receiver)
    hospital = orgs["HospitalMSP"]
    claims = [file_claim(hospital, [(f"8000{n}", 1, "10.00")])[0] for n in range(2)]
    for claim_id in claims:
        delivery, payload = event(insurer.world, "Claims.Submitted", claim_id)
        for _ in range(3):  # the listener re-sent it, a worker died mid-task: the same event, again and again
            tasks.notify.apply(args=["Claims.Submitted", payload, delivery]).get()
        for _ in range(2):
            ws.on_event.apply(args=["Claims.Submitted", payload, delivery]).get()
        insurer.run_sent()
    notes = receiver.of_type("event-notification")
    assert [event_numbers(b) for b in notes] == [[1], [2]]  # each sent once: a delivery is not repeated
    assert sub.events_kept(insurer.records, "s") == 2
    # id-only: the focus by its URL (the claim's key on chain), no resource.
    entry = notes[0]["entry"][1]
    assert entry["fullUrl"] == f"urn:careledger:claim:{claims[0]}" and "resource" not in entry
    assert parameters(notes[0])["notification-event"][0]["focus"]["identifier"]["value"] == claims[0]
    # Redis loses the counter: numbering goes on from what the store kept, never reusing a number.
    insurer.ctx.redis.delete(insurer.ctx.settings.keys.subscription_events("s"))
    claim_id = file_claim(hospital, [("80009", 1, "10.00")])[0]
    delivery, payload = event(insurer.world, "Claims.Submitted", claim_id)
    tasks.notify.apply(args=["Claims.Submitted", payload, delivery]).get()
    insurer.run_sent()
    assert event_numbers(receiver.of_type("event-notification")[-1]) == [3]


def test_filters_decide_which_events_a_subscription_hears(orgs: dict[str, Org], receiver: Receiver) -> None:
    insurer = acting_as(orgs["InsurerMSP"])
    insurer.subscribe(subscription("claim-submitted", receiver.url, "empty", filters=("provider=ClinicMSP",)), "clinic")
    mine = subscription("claim-submitted", receiver.url, "full-resource", filters=(f"patient={fhir.MPI_SYSTEM}|{MPI}",))
    insurer.subscribe(mine, "member")
    activate(insurer, receiver)
    claim_id = file_claim(orgs["HospitalMSP"], [("80001", 1, "10.00")])[0]
    delivery, payload = event(insurer.world, "Claims.Submitted", claim_id)
    tasks.notify.apply(args=["Claims.Submitted", payload, delivery]).get()
    insurer.run_sent()
    (note,) = receiver.of_type("event-notification")
    assert parameters(note)["subscription"]["reference"].endswith("/member")
    claim = note["entry"][1]["resource"]
    assert claim["resourceType"] == "Claim" and claim["identifier"][0]["value"] == claim_id
    assert claim["total"] == {"value": 10.0, "currency": "USD"} and "item" not in claim  # the lines stay private
    assert sub.events_kept(insurer.records, "clinic") == 0


def test_an_endpoint_that_keeps_refusing_puts_the_subscription_in_error(
    orgs: dict[str, Org], receiver: Receiver
) -> None:
    insurer = acting_as(orgs["InsurerMSP"])
    insurer.subscribe(subscription("claim-submitted", receiver.url, "id-only"), "s")
    activate(insurer, receiver)
    hospital = orgs["HospitalMSP"]
    receiver.refusing = True
    for n in range(2):
        claim_id = file_claim(hospital, [(f"7000{n}", 1, "10.00")])[0]
        delivery, payload = event(insurer.world, "Claims.Submitted", claim_id)
        tasks.notify.apply(args=["Claims.Submitted", payload, delivery]).get()
        insurer.run_sent()  # three attempts (retried at once when run eagerly), then given up
    s = sub.read(insurer.records, "s")
    assert s.status == "error" and s.error.startswith("event 1 was not accepted after 3 attempts")
    assert sub.events_kept(insurer.records, "s") == 2  # the count goes on in error; the second was not even sent
    # The subscriber is back and asks for the subscription again: a handshake first, then events flow again.
    receiver.refusing = False
    insurer.ctx.run(
        sub.save(
            insurer.records,
            "s",
            lambda newest: sub.client_write(
                subscription("claim-submitted", receiver.url, "id-only", status="active"),
                json.loads(newest.content) if newest else None,
            ),
        )
    )
    assert sub.read(insurer.records, "s").status == "requested"
    activate(insurer, receiver)
    assert sub.read(insurer.records, "s").status == "active"
    assert parameters(receiver.of_type("handshake")[-1])["events-since-subscription-start"] == "2"
    claim_id = file_claim(hospital, [("70009", 1, "10.00")])[0]
    delivery, payload = event(insurer.world, "Claims.Submitted", claim_id)
    tasks.notify.apply(args=["Claims.Submitted", payload, delivery]).get()
    insurer.run_sent()
    assert event_numbers(receiver.of_type("event-notification")[-1]) == [3]  # 1 and 2 are for $events


def test_a_handshake_that_is_refused_ends_in_error(orgs: dict[str, Org], receiver: Receiver) -> None:
    insurer = acting_as(orgs["InsurerMSP"])
    insurer.subscribe(subscription("claim-submitted", receiver.url), "s")
    receiver.refusing = True
    activate(insurer, receiver)
    s = sub.read(insurer.records, "s")
    assert s.status == "error" and "handshake" in s.error


def test_heartbeats_are_sent_when_nothing_else_was(orgs: dict[str, Org], receiver: Receiver) -> None:
    insurer = acting_as(orgs["InsurerMSP"])
    insurer.subscribe(subscription("claim-submitted", receiver.url, heartbeat=1), "s")
    insurer.subscribe(subscription("claim-submitted", receiver.url), "quiet")  # no heartbeatPeriod: none
    activate(insurer, receiver)
    ws.tick.apply().get()
    insurer.run_sent()
    assert receiver.of_type("heartbeat") == []  # just handshaken: not idle yet
    time.sleep(1.2)
    ws.tick.apply().get()
    ws.tick.apply().get()  # a second tick in the same period sends no second heartbeat
    insurer.run_sent()
    (beat,) = receiver.of_type("heartbeat")
    p = parameters(beat)
    assert p["subscription"]["reference"].endswith("/s") and (p["status"], p["events-since-subscription-start"]) == (
        "active",
        "0",
    )


def test_a_prior_authorisation_decision_reaches_the_provider(orgs: dict[str, Org], receiver: Receiver) -> None:
    """The insurer's side of prior authorisation may land later: the topic works from the event the chain gives."""
    hospital = acting_as(orgs["HospitalMSP"])
    hospital.subscribe(
        subscription("preauth-decided", receiver.url, "full-resource", filters=("decision=approved",)), "pa"
    )
    activate(hospital, receiver)
    claim_id, local_id = file_claim(hospital, [("27447", 1, "9000.00")])
    _, submitted = event(hospital.world, "Claims.Submitted", claim_id)
    decided = {
        **submitted,
        "use": "preauthorization",
        "status": "decided",
        "outcome": "approved",
        "preAuthRef": "PA-1",
        "decisions": [
            {"decision": "approved", "reason": "", "preAuthRef": "PA-1", "at": "2026-11-03T09:00:00.123456789Z"}
        ],
    }
    tasks.notify.apply(args=["Claims.PreauthDecided", decided, f"tx1:Claims.PreauthDecided:{claim_id}:notify"]).get()
    hospital.run_sent()
    (note,) = receiver.of_type("event-notification")
    response = note["entry"][1]["resource"]
    assert response["id"] == local_id and response["use"] == "preauthorization" and response["preAuthRef"] == "PA-1"
    assert parameters(note)["notification-event"][0]["timestamp"] == "2026-11-03T09:00:00.123456Z"
    denied = {
        **decided,
        "outcome": "denied",
        "decisions": [{"decision": "denied", "reason": "197", "at": "2026-11-04T09:00:00Z"}],
    }
    tasks.notify.apply(args=["Claims.PreauthDecided", denied, f"tx2:Claims.PreauthDecided:{claim_id}:notify"]).get()
    hospital.run_sent()
    assert len(receiver.of_type("event-notification")) == 1  # filtered out: decision=approved only


def test_an_off_subscription_hears_nothing_and_counts_nothing(orgs: dict[str, Org], receiver: Receiver) -> None:
    insurer = acting_as(orgs["InsurerMSP"])
    insurer.subscribe(subscription("claim-submitted", receiver.url, status="off"), "s")
    activate(insurer, receiver)
    claim_id = file_claim(orgs["HospitalMSP"], [("80001", 1, "10.00")])[0]
    delivery, payload = event(insurer.world, "Claims.Submitted", claim_id)
    tasks.notify.apply(args=["Claims.Submitted", payload, delivery]).get()
    assert [t for t, _, _ in insurer.sent] == []  # not even a task
    assert receiver.received == [] and sub.events_kept(insurer.records, "s") == 0


def test_the_ticker_sends_one_tick_per_period_however_many_listeners_run(
    redis_topology: topo.Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    monkeypatch.setattr(app, "send_task", lambda task, **_: sent.append(task))
    r = redis.Redis.from_url(redis_topology.redis_admin_url)
    settings = WorkerSettings.load(redis_topology, "InsurerOrg")
    stop = threading.Event()
    listeners = [threading.Thread(target=ws.ticker, args=(r, settings, stop, 0.2)) for _ in range(3)]
    for t in listeners:
        t.start()
    time.sleep(1.1)
    stop.set()
    for t in listeners:
        t.join()
    assert set(sent) == {ws.TICK_TASK} and 3 <= len(sent) <= 6
