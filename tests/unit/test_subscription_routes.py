"""The gateway's Subscription routes in process, over the in-memory ledger: create, read, update, delete, search,
topic discovery, `$status` and `$events`, scopes and refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class

from records import subscriptions as sub
from tests.subscription_samples import TOPIC_BASE, event_numbers, parameters, subscription
from tests.unit.gateway_harness import Gateway

HOOK = "https://ehr.example/hook"


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    g = Gateway(tmp_path)
    yield g
    g.close()


@pytest.fixture
def insurer_gw(tmp_path: Path) -> Iterator[Gateway]:
    g = Gateway(tmp_path, msp="InsurerMSP")
    yield g
    g.close()


def test_a_subscription_is_created_requested_read_and_kept_off_chain(gw: Gateway) -> None:
    async def scenario(g: Gateway) -> None:
        r = await g.post("/fhir/Subscription", subscription("claim-adjudicated", HOOK, "full-resource", heartbeat=30))
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["status"] == "requested" and created["meta"]["versionId"] == "1"
        assert r.headers["location"] == f"Subscription/{created['id']}/_history/1" and r.headers["etag"] == 'W/"1"'
        read = await g.get(f"/fhir/Subscription/{created['id']}")
        assert read.status_code == 200 and read.json()["channel"]["endpoint"] == HOOK
        history = await g.get(f"/fhir/Subscription/{created['id']}/_history")
        assert history.json()["total"] == 1
        found = await g.get("/fhir/Subscription?status=requested")
        assert [e["resource"]["id"] for e in found.json()["entry"]] == [created["id"]]
        assert (await g.get("/fhir/Subscription?status=active")).json()["total"] == 0

    gw.run(scenario)
    assert gw.world.events == [] and gw.world.committed == {}  # nothing on chain


def test_an_unknown_topic_is_refused_naming_the_element(gw: Gateway) -> None:
    async def scenario(g: Gateway) -> None:
        bad = subscription("claim-adjudicated", HOOK) | {"criteria": f"{TOPIC_BASE}/claim-exploded"}
        r = await g.post("/fhir/Subscription", bad)
        assert r.status_code == 422
        issue = r.json()["issue"][0]
        assert issue["expression"] == ["Subscription.criteria"] and "claim-adjudicated" in issue["diagnostics"]
        # A topic for insurers, at a provider.
        r = await g.post("/fhir/Subscription", subscription("claim-submitted", HOOK))
        assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["Subscription.criteria"]
        r = await g.post("/fhir/Subscription", subscription("claim-adjudicated", "http://ehr.example/hook"))
        assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["Subscription.channel.endpoint"]
        r = await g.post("/fhir/Subscription", subscription("claim-adjudicated", HOOK, filters=("patient=Patient/x",)))
        assert r.status_code == 422 and "no patient known here" in r.text
        assert (await g.post("/fhir/Subscription", {"resourceType": "Patient"})).status_code == 400
        assert (await g.get("/fhir/Subscription")).json()["total"] == 0

    gw.run(scenario)


def test_updates_change_the_channel_or_status_and_the_server_keeps_status(gw: Gateway) -> None:
    async def scenario(g: Gateway) -> None:
        sid = (await g.post("/fhir/Subscription", subscription("claim-adjudicated", HOOK))).json()["id"]
        await sub.set_status(g.records, sid, "active")  # as a handshake would
        same = subscription("claim-adjudicated", HOOK, status="active")
        r = await g.request("PUT", f"/fhir/Subscription/{sid}", same)
        assert r.status_code == 200 and r.json()["status"] == "active"  # nothing changed: no new handshake
        moved = subscription("claim-adjudicated", "https://other.example/hook", status="active")
        r = await g.request("PUT", f"/fhir/Subscription/{sid}", moved)
        assert r.json()["status"] == "requested"  # a new endpoint is handshaken first
        r = await g.request("PUT", f"/fhir/Subscription/{sid}", moved, **{"If-Match": 'W/"1"'})
        assert r.status_code == 412
        r = await g.request("PUT", f"/fhir/Subscription/{sid}", moved | {"id": "other"})
        assert r.status_code == 400
        r = await g.request("DELETE", f"/fhir/Subscription/{sid}")
        assert r.status_code == 200
        assert (await g.get(f"/fhir/Subscription/{sid}")).json()["status"] == "off"
        assert (await g.request("DELETE", "/fhir/Subscription/nope")).status_code == 404
        # PUT to a new id creates it.
        r = await g.request("PUT", "/fhir/Subscription/mine", subscription("payment-issued", HOOK))
        assert r.status_code == 201 and r.json()["id"] == "mine"

    gw.run(scenario)


def test_subscriptions_need_a_system_scope_for_each_interaction(gw: Gateway) -> None:
    async def scenario(g: Gateway) -> None:
        body = subscription("claim-adjudicated", HOOK)
        assert (await g.post("/fhir/Subscription", body, scope="system/Subscription.r")).status_code == 403
        r = await g.post("/fhir/Subscription", body, scope="system/Subscription.c")
        assert r.status_code == 201
        sid = r.json()["id"]
        assert (await g.get(f"/fhir/Subscription/{sid}", scope="system/Subscription.c")).status_code == 403
        patient_scoped = "patient/*.cruds"
        assert (await g.get(f"/fhir/Subscription/{sid}", scope=patient_scoped)).status_code == 403
        assert (await g.get(f"/fhir/Subscription/{sid}/$status", scope="system/Subscription.r")).status_code == 200
        assert (
            await g.request("DELETE", f"/fhir/Subscription/{sid}", scope="system/Subscription.r")
        ).status_code == 403
        assert g.http is not None
        assert (await g.http.get(f"/fhir/Subscription/{sid}")).status_code == 401

    gw.run(scenario)


def test_topics_are_discoverable_and_the_capability_statement_lists_them(gw: Gateway, insurer_gw: Gateway) -> None:
    async def provider(g: Gateway) -> None:
        topics = (await g.get("/fhir/SubscriptionTopic")).json()
        assert [e["resource"]["id"] for e in topics["entry"]] == [
            "claim-adjudicated",
            "payment-issued",
            "preauth-decided",
        ]
        one = await g.get(f"/fhir/SubscriptionTopic?url={TOPIC_BASE}/payment-issued")
        assert one.json()["total"] == 1
        assert (await g.get("/fhir/SubscriptionTopic/claim-adjudicated")).json()[
            "url"
        ] == f"{TOPIC_BASE}/claim-adjudicated"
        assert (await g.get("/fhir/SubscriptionTopic/claim-submitted")).status_code == 404  # for insurers
        assert g.http is not None
        capability = (await g.http.get("/fhir/metadata")).json()
        assert sub.SERVER_CAPABILITY in capability["instantiates"]
        (entry,) = [r for r in capability["rest"][0]["resource"] if r["type"] == "Subscription"]
        assert [o["name"] for o in entry["operation"]] == ["status", "events"]
        assert {e["valueCanonical"] for e in entry["extension"]} == {t.url for t in sub.TOPICS}
        get_fhir_model_class("CapabilityStatement").model_validate(capability)

    async def insurer(g: Gateway) -> None:
        topics = (await g.get("/fhir/SubscriptionTopic")).json()
        assert [e["resource"]["id"] for e in topics["entry"]] == ["claim-submitted"]
        r = await g.post("/fhir/Subscription", subscription("claim-submitted", HOOK, filters=("provider=HospitalMSP",)))
        assert r.status_code == 201, r.text

    gw.run(provider)
    insurer_gw.run(insurer)


def keep_events(g: Gateway, sid: str, count: int) -> None:
    """Events 1..count kept for the subscription, as the workers keep them (empty focus: the test is numbering)."""
    s = sub.read(g.records, sid)

    async def go() -> None:
        for n in range(1, count + 1):
            event = sub.Event(n, f"2026-11-02T10:00:{n % 60:02d}.000000Z", None)
            bundle = sub.notification(s, "https://gw/fhir", "event-notification", n, [event])
            await sub.keep_notification(g.records, sid, n, sub.for_keeping(bundle))

    asyncio.run(go())


def test_status_and_events_operations(gw: Gateway) -> None:
    sids: list[str] = []

    async def create(g: Gateway) -> None:
        for topic in ("claim-adjudicated", "payment-issued"):
            sids.append((await g.post("/fhir/Subscription", subscription(topic, HOOK, "empty"))).json()["id"])
        await sub.set_status(g.records, sids[0], "error", "event 3 was not accepted after 6 attempts: 503")

    gw.run(create)
    keep_events(gw, sids[0], 130)

    async def operations(g: Gateway) -> None:
        status = (await g.get(f"/fhir/Subscription/{sids[0]}/$status")).json()
        assert status["type"] == "searchset" and status["total"] == 1
        p = parameters({"entry": status["entry"]})
        assert (p["type"], p["status"], p["events-since-subscription-start"]) == ("query-status", "error", "130")
        assert p["error"]["text"].startswith("event 3 was not accepted")
        every = (await g.get("/fhir/Subscription/$status")).json()
        assert every["total"] == 2
        errors = (await g.get("/fhir/Subscription/$status?status=error")).json()
        assert errors["total"] == 1
        # A gap recovered: events 5 to 9.
        events = (await g.get(f"/fhir/Subscription/{sids[0]}/$events?eventsSinceNumber=5&eventsUntilNumber=9")).json()
        assert events["type"] == "history" and event_numbers(events) == [5, 6, 7, 8, 9]
        assert parameters(events)["type"] == "query-event"
        # At most a page at a time: the newest when no start is given, from the start when one is.
        assert event_numbers((await g.get(f"/fhir/Subscription/{sids[0]}/$events")).json()) == list(range(31, 131))
        page = (await g.get(f"/fhir/Subscription/{sids[0]}/$events?eventsSinceNumber=2")).json()
        assert event_numbers(page) == list(range(2, 102))
        beyond = (await g.get(f"/fhir/Subscription/{sids[0]}/$events?eventsSinceNumber=500")).json()
        assert event_numbers(beyond) == []
        for bad in ("eventsSinceNumber=0", "eventsUntilNumber=x", "content=everything"):
            assert (await g.get(f"/fhir/Subscription/{sids[0]}/$events?{bad}")).status_code == 400, bad
        assert (await g.get("/fhir/Subscription/nope/$events")).status_code == 404

    gw.run(operations)
