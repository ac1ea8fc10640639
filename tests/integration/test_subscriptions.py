"""FHIR topic-based subscriptions end to end with real processes: the orgs' gateways (where subscriptions are made and
`$status` / `$events` answered), chain-event listeners (which also tick handshakes and heartbeats) and Celery
workers (which number, keep and deliver notifications), Redis and Fabric. An HTTP receiver in this process plays the
hospital's EHR and the insurer's claims system; it is taken down for a while to make them miss notifications."""

from __future__ import annotations

import datetime
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from consortium.topology import Topology
from gateway import cli as gateway_cli
from records import synthetic
from tests.conftest import GatewayHttp, claim_key
from tests.subscription_samples import event_numbers, parameters, subscription
from tests.waiting import wait_for
from workers import cli as worker_cli

pytestmark = pytest.mark.network

TODAY = datetime.date.today().isoformat()
SETTINGS = {
    "CARELEDGER_SUBSCRIPTION_ATTEMPTS": "3",  # a notification not accepted three times puts its subscription in error
    "CARELEDGER_SUBSCRIPTION_BACKOFF": "0.2",
    "CARELEDGER_SUBSCRIPTION_TICK": "0.5",
}
HEARTBEAT_S = 2


@dataclass
class Subscriber:
    """The subscribers' endpoint: every notification received, by subscription id. It can be taken down and brought
    back on the same port."""

    port: int = 0
    received: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def up(self) -> None:
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bundle = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                sid = parameters(bundle)["subscription"]["reference"].rsplit("/", 1)[1]
                with state.lock:
                    state.received.setdefault(sid, []).append(bundle)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()

    def of(self, sid: str, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [b for b in self.received.get(sid, []) if parameters(b)["type"] == kind]

    def events(self, sid: str) -> list[int]:
        """The event numbers received, in the order they came."""
        return [n for b in self.of(sid, "event-notification") for n in event_numbers(b)]


@pytest.fixture(scope="module")
def subscriber() -> Iterator[Subscriber]:
    s = Subscriber()
    s.up()
    yield s
    s.down()


@pytest.fixture(scope="module")
def workers(network: Topology, gateway_clients: dict[str, GatewayHttp]) -> Iterator[Topology]:
    """Gateways, listeners and workers of every org on `claims`, with quick retries and ticks."""
    for org in gateway_clients:
        gateway_cli.start(network, org)
    saved = {k: os.environ.get(k) for k in SETTINGS}
    os.environ.update(SETTINGS)
    for org in worker_cli.orgs_with_workers(network):
        worker_cli.start_worker(network, org)
        worker_cli.start_listener(network, org)
    yield network
    for org in worker_cli.orgs_with_workers(network):
        worker_cli.listener_process(network, org).stop()
        worker_cli.worker_process(network, org).stop(timeout=30)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def subscribe(gw: GatewayHttp, resource: dict[str, Any]) -> str:
    r = gw.post("/Subscription", resource)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "requested"
    return str(r.json()["id"])


def status_of(gw: GatewayHttp, sid: str) -> dict[str, Any]:
    r = gw.get(f"/Subscription/{sid}/$status")
    assert r.status_code == 200, r.text
    return parameters({"entry": r.json()["entry"]})


def enrol(hospital: GatewayHttp, insurer: GatewayHttp) -> tuple[str, str]:
    """A patient at the hospital with coverage at the insurer: (the hospital's Patient id, the MPI identifier)."""
    gen = synthetic.Synthetic.seeded(None)
    mpi = gen.mpi_value()
    r = hospital.post("", gen.transaction(2, mpi))
    assert r.status_code == 200, r.text
    assert (
        insurer.post("/Coverage", synthetic.coverage(mpi, "InsurerMSP", "2026-01-01", "2027-12-31")).status_code == 201
    )
    return str(r.json()["entry"][0]["response"]["location"].split("/")[1]), mpi


def submit(hospital: GatewayHttp, patient_id: str, code: str) -> tuple[str, str]:
    """A claim filed at the hospital: (its key on chain, the hospital's Claim id)."""
    r = hospital.post("/Claim", synthetic.claim(patient_id, "InsurerMSP", [(code, 1, "40.00")], TODAY, "Coverage/t"))
    assert r.status_code == 201, r.text
    return claim_key(r.json()), str(r.json()["id"])


def focus_ids(bundles: list[dict[str, Any]]) -> list[str]:
    """The focus of each event, in event order: the resource id (hospital) or the claim key (insurer)."""
    out = []
    for b in sorted(bundles, key=lambda b: event_numbers(b)[0]):
        for event in parameters(b)["notification-event"]:
            ref = event["focus"]
            out.append(ref["identifier"]["value"] if "identifier" in ref else ref["reference"].rsplit("/", 1)[1])
    return out


def test_subscribers_hear_claims_flow_miss_some_while_down_and_recover_them(
    workers: Topology, gateways: dict[str, GatewayHttp], subscriber: Subscriber
) -> None:
    hospital, insurer = gateways["HospitalOrg"], gateways["InsurerOrg"]

    # The hospital's EHR subscribes to adjudications (with heartbeats) and payments, full resources; the insurer's
    # claims system to submitted claims, ids only; each about this test's patient (other tests' claims may still be
    # settling). Each is handshaken, then active.
    patient, mpi = enrol(hospital, insurer)
    mine, theirs = (f"patient=Patient/{patient}",), (f"patient={synthetic.MPI_SYSTEM}|{mpi}",)
    adj = subscribe(
        hospital,
        subscription("claim-adjudicated", subscriber.url("ehr"), "full-resource", mine, heartbeat=HEARTBEAT_S),
    )
    pay = subscribe(hospital, subscription("payment-issued", subscriber.url("ehr"), "full-resource", mine))
    sub = subscribe(insurer, subscription("claim-submitted", subscriber.url("claims"), "id-only", theirs))
    owners = {adj: hospital, pay: hospital, sub: insurer}
    for sid, gw in owners.items():
        wait_for(
            lambda sid=sid, gw=gw: gw.get(f"/Subscription/{sid}").json()["status"] == "active", 20, f"{sid} active"
        )
        (handshake,) = subscriber.of(sid, "handshake")
        assert parameters(handshake)["status"] == "requested"

    # Claims flow: every subscriber hears of every one, once, numbered 1, 2.
    flowing = [submit(hospital, patient, code) for code in ("86001", "86002")]
    for sid in owners:
        wait_for(lambda sid=sid: len(subscriber.events(sid)) >= 2, 30, f"events 1-2 of {sid}")
    time.sleep(1)  # would a repeat arrive?
    for sid in owners:
        assert sorted(subscriber.events(sid)) == [1, 2], sid
    # Full resources for the EHR: the ClaimResponse it can also read at its gateway, under its own Claim id.
    adjudicated = subscriber.of(adj, "event-notification")
    assert sorted(focus_ids(adjudicated)) == sorted(local for _, local in flowing)
    first = next(b for b in adjudicated if event_numbers(b) == [1])
    response = first["entry"][1]["resource"]
    assert response == hospital.get(f"/ClaimResponse/{response['id']}").json()
    payments = [b["entry"][1]["resource"] for b in subscriber.of(pay, "event-notification")]
    assert {p["resourceType"] for p in payments} == {"PaymentReconciliation"}
    assert {p["paymentAmount"]["value"] for p in payments} == {40.0}
    # Ids only for the claims system: the claim's key, no resource.
    submitted = subscriber.of(sub, "event-notification")
    assert sorted(focus_ids(submitted)) == sorted(key for key, _ in flowing)
    assert all("resource" not in e for b in submitted for e in b["entry"][1:])

    # Idle: heartbeats come every heartbeatPeriod, carrying the event count.
    before = len(subscriber.of(adj, "heartbeat"))
    beats = wait_for(lambda: subscriber.of(adj, "heartbeat")[before:], HEARTBEAT_S * 4, "a heartbeat")
    assert parameters(beats[-1])["events-since-subscription-start"] == "2"
    assert subscriber.of(pay, "heartbeat") == []  # no heartbeatPeriod, no heartbeats

    # The subscribers' endpoint goes down while two more claims flow: their notifications cannot be delivered, and
    # after three attempts each subscription is in error, its count still going on.
    subscriber.down()
    missed = [submit(hospital, patient, code) for code in ("86003", "86004")]
    for sid, gw in owners.items():
        wait_for(
            lambda sid=sid, gw=gw: status_of(gw, sid)["events-since-subscription-start"] == "4",
            40,
            f"4 events of {sid}",
        )
        error = wait_for(
            lambda sid=sid, gw=gw: (s := status_of(gw, sid))["status"] == "error" and s, 30, f"{sid} in error"
        )
        assert "not accepted after 3 attempts" in error["error"]["text"]

    # Back up, they ask for their subscriptions again; after the handshake, a new claim arrives as event 5.
    subscriber.up()
    for sid, gw in owners.items():
        current = gw.get(f"/Subscription/{sid}").json()
        assert gw.put(f"/Subscription/{sid}", current | {"status": "requested"}).json()["status"] == "requested"
        wait_for(lambda sid=sid, gw=gw: gw.get(f"/Subscription/{sid}").json()["status"] == "active", 20, f"{sid} again")
        assert parameters(subscriber.of(sid, "handshake")[-1])["events-since-subscription-start"] == "4"
    submit(hospital, patient, "86005")
    for sid in owners:
        wait_for(lambda sid=sid: 5 in subscriber.events(sid), 30, f"event 5 of {sid}")

    # Each finds the gap in the numbers and recovers what it missed with $events.
    for sid, gw in owners.items():
        heard = set(subscriber.events(sid))
        gap = sorted(set(range(1, max(heard) + 1)) - heard)
        assert gap == [3, 4], (sid, gap)
        r = gw.get(f"/Subscription/{sid}/$events", params={"eventsSinceNumber": gap[0], "eventsUntilNumber": gap[-1]})
        assert r.status_code == 200, r.text
        recovered = r.json()
        assert recovered["type"] == "history" and parameters(recovered)["type"] == "query-event"
        assert event_numbers(recovered) == [3, 4]
        events = parameters(recovered)["notification-event"]
        foci = [
            e["focus"].get("identifier", {}).get("value") or e["focus"]["reference"].rsplit("/", 1)[1] for e in events
        ]
        if sid == sub:
            assert sorted(foci) == sorted(key for key, _ in missed)
            assert all("resource" not in e for e in recovered["entry"][1:])  # id-only, as subscribed
        else:
            assert sorted(foci) == sorted(local for _, local in missed)
            resources = [e["resource"] for e in recovered["entry"][1:] if e["fullUrl"].split("/")[-2] != "Claim"]
            assert {r["id"] for r in resources} == {local for _, local in missed}  # full resources, as sent then
    # The count and status, as $status tells them.
    for sid, gw in owners.items():
        s = status_of(gw, sid)
        assert (s["status"], s["events-since-subscription-start"]) == ("active", "5") and "error" not in s
