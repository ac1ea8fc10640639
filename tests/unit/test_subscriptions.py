"""Topic-based subscriptions in the records layer: validation against the backport profile, the status the server
keeps, notification bundles per content level, keeping and replaying them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from ledger.contracts import Ledger
from ledger.fake import FakeLedger
from records import subscriptions as sub
from records import validation as fv
from records.errors import FhirInvalid
from records.service import Custodian, Records
from records.store import Store
from tests import fhir_samples as fhir
from tests.subscription_samples import event_numbers, parameters, subscription

KINDS = {"HospitalMSP": "provider", "ClinicMSP": "provider", "InsurerMSP": "insurer"}
HOOK = "https://ehr.hospital.example/notifications"
BASE = "https://gateway.hospital.example/fhir"


@pytest.fixture
def hospital(tmp_path: Path) -> Iterator[Records]:
    world = FakeLedger(KINDS)
    store = Store(tmp_path / "hospital.sqlite", b"h" * 32)
    records = Records(
        store,
        Ledger(world.member("HospitalMSP")),
        fhir.CONSORTIUM_KEY,
        fhir.MPI_SYSTEM,
        Custodian("HospitalMSP", "provider"),
    )
    yield records
    store.close()


def problems(resource: dict[str, Any], kind: str = "provider") -> list[tuple[str, str]]:
    with pytest.raises(FhirInvalid) as e:
        sub.validate(resource, kind)
    return [(i.code, i.expression) for i in e.value.issues]


def test_a_backport_subscription_is_understood() -> None:
    resource = subscription(
        "claim-adjudicated",
        HOOK,
        "full-resource",
        filters=("patient=Patient/p1", "ClaimResponse.insurer=InsurerMSP,OtherMSP"),
        heartbeat=60,
        timeout=5,
        headers=("Authorization: Bearer abc",),
    )
    topic, filters, channel = sub.validate(resource, "provider")
    assert topic.url == "https://careledger.example/fhir/SubscriptionTopic/claim-adjudicated"
    assert [(f.name, f.values) for f in filters] == [
        ("patient", ("Patient/p1",)),
        ("insurer", ("InsurerMSP", "OtherMSP")),
    ]
    assert channel == sub.Channel(HOOK, (("Authorization", "Bearer abc"),), "full-resource", 60, 5, None)
    # Plain http only to loopback (tests, development).
    sub.validate(subscription("claim-submitted", "http://127.0.0.1:8080/hook"), "insurer")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda r: r | {"criteria": "https://careledger.example/fhir/SubscriptionTopic/nope"},
            ("value", "Subscription.criteria"),
        ),
        (
            lambda r: r | {"criteria": "https://careledger.example/fhir/SubscriptionTopic/claim-submitted"},
            ("not-supported", "Subscription.criteria"),
        ),
        (lambda r: r | {"status": "error"}, ("value", "Subscription.status")),
        (lambda r: {k: v for k, v in r.items() if k != "reason"}, ("structure", "Subscription.reason")),
        (
            lambda r: r | {"channel": r["channel"] | {"type": "websocket"}},
            ("not-supported", "Subscription.channel.type"),
        ),
        (lambda r: r | {"channel": r["channel"] | {"type": "sms"}}, ("not-supported", "Subscription.channel.type")),
        (
            lambda r: r | {"channel": r["channel"] | {"endpoint": "http://ehr.example/hook"}},
            ("value", "Subscription.channel.endpoint"),
        ),
        (
            lambda r: r | {"channel": r["channel"] | {"endpoint": "ftp://ehr.example/x"}},
            ("value", "Subscription.channel.endpoint"),
        ),
        (
            lambda r: r | {"channel": r["channel"] | {"endpoint": "https://user:pw@ehr.example/x"}},
            ("value", "Subscription.channel.endpoint"),
        ),
        (
            lambda r: r | {"channel": r["channel"] | {"payload": "application/xml"}},
            ("not-supported", "Subscription.channel.payload"),
        ),
        (
            lambda r: r | {"channel": {k: v for k, v in r["channel"].items() if k != "_payload"}},
            ("required", "Subscription.channel.payload.extension"),
        ),
        (
            lambda r: (
                r
                | {
                    "channel": r["channel"]
                    | {"_payload": {"extension": [{"url": sub.CONTENT_URL, "valueCode": "all"}]}}
                }
            ),
            ("code-invalid", "Subscription.channel.payload.extension[0].valueCode"),
        ),
        (
            lambda r: (
                r | {"channel": r["channel"] | {"extension": [{"url": sub.HEARTBEAT_URL, "valueUnsignedInt": 0}]}}
            ),
            ("value", "Subscription.channel.extension[0].valueUnsignedInt"),
        ),
        (
            lambda r: (
                r | {"channel": r["channel"] | {"extension": [{"url": sub.TIMEOUT_URL, "valueUnsignedInt": 600}]}}
            ),
            ("value", "Subscription.channel.extension[0].valueUnsignedInt"),
        ),
        (
            lambda r: r | {"channel": r["channel"] | {"header": ["Content-Type: text/plain"]}},
            ("not-supported", "Subscription.channel.header[0]"),
        ),
        (
            lambda r: r | {"channel": r["channel"] | {"header": ["no colon"]}},
            ("value", "Subscription.channel.header[0]"),
        ),
        (
            lambda r: (
                r | {"_criteria": {"extension": [{"url": sub.FILTER_URL, "valueString": "provider=HospitalMSP"}]}}
            ),
            ("not-supported", "Subscription.criteria.extension[0].valueString"),
        ),
        (
            lambda r: r | {"_criteria": {"extension": [{"url": sub.FILTER_URL, "valueString": "insurer:not=X"}]}},
            ("not-supported", "Subscription.criteria.extension[0].valueString"),
        ),
        (
            lambda r: r | {"_criteria": {"extension": [{"url": sub.FILTER_URL, "valueString": "Encounter.insurer=X"}]}},
            ("value", "Subscription.criteria.extension[0].valueString"),
        ),
        (
            lambda r: r | {"_criteria": {"extension": [{"url": sub.FILTER_URL, "valueString": "just words"}]}},
            ("value", "Subscription.criteria.extension[0].valueString"),
        ),
    ],
)
def test_every_problem_names_its_element(change: Any, expected: tuple[str, str]) -> None:
    assert expected in problems(change(subscription("claim-adjudicated", HOOK)))


def test_every_problem_of_a_subscription_is_listed_at_once() -> None:
    bad = subscription("claim-adjudicated", "http://ehr.example/hook", filters=("nope=1",), heartbeat=0)
    bad["channel"]["payload"] = "text/plain"
    found = {expression for _, expression in problems(bad)}
    assert {
        "Subscription.channel.endpoint",
        "Subscription.channel.payload",
        "Subscription.channel.extension[0].valueUnsignedInt",
        "Subscription.criteria.extension[0].valueString",
    } <= found


def test_a_patient_filter_must_name_a_patient_known_here() -> None:
    resource = subscription("claim-adjudicated", HOOK, filters=("patient=Patient/nobody",))
    with pytest.raises(FhirInvalid) as e:
        sub.validate(resource, "provider", lambda value: False)
    assert e.value.issues[0].expression == "Subscription.criteria.extension[0].valueString"


def test_the_server_keeps_status_and_error() -> None:
    asked = subscription("claim-adjudicated", HOOK, status="active") | {"error": "client says so"}
    first = sub.client_write(asked, None)
    assert first["status"] == "requested" and "error" not in first  # a handshake comes first
    assert sub.client_write(subscription("claim-adjudicated", HOOK, status="off"), None)["status"] == "off"
    active = first | {"status": "active"}
    assert sub.client_write(asked, active)["status"] == "active"  # nothing changed: stays active
    moved = subscription("claim-adjudicated", "https://elsewhere.example/hook", status="active")
    assert sub.client_write(moved, active)["status"] == "requested"  # a new endpoint: a new handshake
    in_error = sub.server_status(active, "error", "event 3 was not accepted")
    assert in_error["error"] == "event 3 was not accepted"
    assert sub.client_write(asked, in_error)["status"] == "requested"  # reactivation after an error


def kept_subscription(records: Records, resource: dict[str, Any], status: str = "active") -> sub.Subscription:
    async def go() -> sub.Subscription:
        await sub.save(records, "s1", lambda newest: sub.client_write(resource, None))
        changed = await sub.set_status(records, "s1", status)
        assert changed is not None
        return changed

    return asyncio.run(go())


def claim_response(patient_pseudonym: str) -> dict[str, Any]:
    return {
        "resourceType": "ClaimResponse",
        "id": "c1",
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "use": "claim",
        "patient": {"identifier": {"system": sub.PSEUDONYM_SYSTEM, "value": patient_pseudonym}},
        "created": "2026-11-02T10:00:00Z",
        "insurer": sub.msp_reference("InsurerMSP"),
        "outcome": "complete",
    }


def held_focus(records: Records, patient: str) -> sub.Focus:
    asyncio.run(records.keep(claim_response(patient), patient))
    stored = records.store.read("ClaimResponse", "c1")
    assert stored is not None
    return sub.Focus.held(BASE, stored)


def valid_bundle(bundle: dict[str, Any]) -> None:
    """The R4 models accept it (the Parameters inside included)."""
    get_fhir_model_class("Bundle").model_validate(bundle)


@pytest.mark.parametrize("content", sub.CONTENTS)
def test_a_notification_is_a_history_bundle_with_the_status_first(hospital: Records, content: str) -> None:
    s = kept_subscription(hospital, subscription("claim-adjudicated", HOOK, content))
    focus = held_focus(hospital, "pseudo-1")
    event = sub.Event(7, "2026-11-02T10:00:01.000000Z", focus)
    bundle = sub.notification(s, BASE, "event-notification", 7, [event])
    valid_bundle(bundle)
    assert bundle["type"] == "history" and bundle["meta"]["profile"] == [sub.NOTIFICATION_PROFILE]
    status = bundle["entry"][0]
    assert status["resource"]["meta"]["profile"] == [sub.STATUS_PROFILE]
    assert status["request"] == {"method": "GET", "url": f"{BASE}/Subscription/s1/$status"}
    p = parameters(bundle)
    assert p["subscription"] == {"reference": f"{BASE}/Subscription/s1"}
    assert (p["status"], p["type"], p["events-since-subscription-start"]) == ("active", "event-notification", "7")
    assert event_numbers(bundle) == [7]
    focus_url = f"{BASE}/ClaimResponse/c1"
    if content == "empty":
        assert len(bundle["entry"]) == 1 and "topic" not in p and "focus" not in p["notification-event"][0]
        return
    assert p["topic"] == s.topic.url
    assert p["notification-event"][0]["focus"]["reference"] == focus_url
    entry = bundle["entry"][1]
    assert entry["fullUrl"] == focus_url and entry["request"] == {"method": "POST", "url": "ClaimResponse"}
    assert entry["response"]["location"] == "ClaimResponse/c1/_history/1"
    assert ("resource" in entry) == (content == "full-resource")


def test_handshakes_and_heartbeats_carry_no_event(hospital: Records) -> None:
    s = kept_subscription(hospital, subscription("claim-adjudicated", HOOK, "full-resource"), status="requested")
    for kind, status in (("handshake", "requested"), ("heartbeat", "requested")):
        bundle = sub.notification(s, BASE, kind, 0)
        valid_bundle(bundle)
        p = parameters(bundle)
        assert (p["type"], p["status"], p["events-since-subscription-start"]) == (kind, status, "0")
        assert "notification-event" not in p and len(bundle["entry"]) == 1


def test_a_kept_notification_holds_held_resources_by_version_and_follows_erasure(hospital: Records) -> None:
    s = kept_subscription(hospital, subscription("claim-adjudicated", HOOK, "full-resource"))
    focus = held_focus(hospital, "pseudo-1")
    sent = sub.notification(s, BASE, "event-notification", 1, [sub.Event(1, "2026-11-02T10:00:01Z", focus)])
    assert asyncio.run(sub.keep_notification(hospital, "s1", 1, sub.for_keeping(sent)))
    assert not asyncio.run(sub.keep_notification(hospital, "s1", 1, sub.for_keeping(sent)))  # once
    kept = sub.kept_notification(hospital, "s1", 1)
    assert kept is not None and "resource" not in kept["entry"][1]
    assert sub.hydrated(hospital, kept)["entry"][1]["resource"]["id"] == "c1"
    assert "resource" not in sub.hydrated(hospital, kept, lambda rtype: False)["entry"][1]
    # A newer version of the ClaimResponse does not change what event 1 said.
    asyncio.run(hospital.keep(claim_response("pseudo-1") | {"outcome": "partial"}, "pseudo-1"))
    assert sub.hydrated(hospital, kept)["entry"][1]["resource"]["outcome"] == "complete"
    # Kept notifications are filed apart from every patient: never part of a patient's record.
    assert [r.type for r in hospital.store.patient_resources("pseudo-1")] == ["ClaimResponse"]
    # The patient's erasure reaches the kept notification: the entry keeps only its request and response.
    hospital.store.erase("pseudo-1", "2026-11-03T00:00:00Z")
    after = sub.hydrated(hospital, kept)
    assert "resource" not in after["entry"][1] and after["entry"][1]["response"]["location"]


def test_a_resource_kept_in_the_notification_is_withheld_from_a_reader_without_its_scope(hospital: Records) -> None:
    s = kept_subscription(hospital, subscription("claim-adjudicated", HOOK, "full-resource"))
    claim = {"resourceType": "Claim", "id": "k1", "status": "active"}
    focus = sub.Focus("Claim", "urn:careledger:claim:k1", claim, None, sub.claim_identifier("k1"))
    sent = sub.notification(s, BASE, "event-notification", 1, [sub.Event(1, "2026-11-02T10:00:01Z", focus)])
    kept = sub.for_keeping(sent)
    assert kept["entry"][1]["resource"] == claim  # not held here: kept as it was
    assert sub.hydrated(hospital, kept)["entry"][1]["resource"] == claim
    withheld = sub.hydrated(hospital, kept, lambda rtype: rtype != "Claim")["entry"][1]
    assert "resource" not in withheld and withheld["fullUrl"] == "urn:careledger:claim:k1"


def test_the_event_count_is_the_highest_kept_notification(hospital: Records) -> None:
    s = kept_subscription(hospital, subscription("claim-adjudicated", HOOK, "empty"))
    assert sub.events_kept(hospital, "s1") == 0
    for n in range(1, 38):
        bundle = sub.notification(s, BASE, "event-notification", n, [sub.Event(n, "2026-11-02T10:00:00Z", None)])
        asyncio.run(sub.keep_notification(hospital, "s1", n, bundle))
        assert sub.events_kept(hospital, "s1") == n


def test_events_narrow_what_was_kept_never_widen_it(hospital: Records) -> None:
    s = kept_subscription(hospital, subscription("claim-adjudicated", HOOK, "id-only"))
    focus = held_focus(hospital, "pseudo-1")
    kept = []
    for n in (1, 2):
        bundle = sub.notification(s, BASE, "event-notification", n, [sub.Event(n, "2026-11-02T10:00:00Z", focus)])
        kept.append(sub.for_keeping(bundle))
    full = sub.events_bundle(s, BASE, 2, [sub.hydrated(hospital, b) for b in kept], "full-resource")
    valid_bundle(full)
    p = parameters(full)
    assert (p["type"], event_numbers(full)) == ("query-event", [1, 2])
    assert len(full["entry"]) == 3 and not any("resource" in e for e in full["entry"][1:])  # id-only was kept
    empty = sub.events_bundle(s, BASE, 2, kept, "empty")
    assert len(empty["entry"]) == 1 and all("focus" not in e for e in parameters(empty)["notification-event"])


def test_the_status_operation_answers_a_searchset_of_status_parameters(hospital: Records) -> None:
    s = kept_subscription(hospital, subscription("claim-adjudicated", HOOK), status="active")
    asyncio.run(sub.set_status(hospital, "s1", "error", "event 4 was not accepted after 6 attempts: 503"))
    s = sub.read(hospital, "s1")
    bundle = sub.status_bundle(BASE, [(s, 4)])
    valid_bundle(bundle)
    assert bundle["type"] == "searchset"
    p = parameters({"entry": bundle["entry"]})
    assert (p["type"], p["status"], p["events-since-subscription-start"]) == ("query-status", "error", "4")
    assert p["error"] == {"text": "event 4 was not accepted after 6 attempts: 503"}


def test_patient_filters_name_patients_by_local_id_consortium_identifier_or_pseudonym(hospital: Records) -> None:
    patient = {**fhir.PATIENTS[0], "id": "p1"}
    asyncio.run(
        hospital.transaction([fv.entry({"resource": patient, "request": {"method": "PUT", "url": "Patient/p1"}}, 0)])
    )
    pseudonym = hospital.pseudonym_of_identifier(fhir.MPI_SYSTEM, fhir.PATIENTS[0]["identifier"][0]["value"])
    for value in ("Patient/p1", "p1", f"{fhir.MPI_SYSTEM}|MPI-70931-QX", f"{sub.PSEUDONYM_SYSTEM}|{pseudonym}"):
        assert sub.resolve_patient(hospital, value) == pseudonym, value
    assert sub.resolve_patient(hospital, "Patient/nobody") is None
    resource = subscription("claim-adjudicated", HOOK, filters=("patient=Patient/p1", "outcome=approved,partial"))
    s = kept_subscription(hospital, resource)
    assert sub.matches(hospital, s, {"patient": pseudonym, "outcome": "partial", "insurer": "InsurerMSP"})
    assert not sub.matches(hospital, s, {"patient": pseudonym, "outcome": "denied"})
    assert not sub.matches(hospital, s, {"patient": "someone else", "outcome": "approved"})


def test_topics_are_published_for_discovery() -> None:
    for topic in sub.TOPICS:
        resource = sub.topic_resource(topic)
        get_fhir_model_class("SubscriptionTopic").model_validate(resource)
        assert resource["url"] == topic.url and [f["filterParameter"] for f in resource["canFilterBy"]]
    assert [t.code for t in sub.topics_for("insurer")] == ["claim-submitted"]
    assert [t.code for t in sub.topics_for("provider")] == ["claim-adjudicated", "payment-issued", "preauth-decided"]
    claim = {"claimId": "k", "insurer": "InsurerMSP", "provider": "HospitalMSP"}
    assert [t.code for t in sub.topics_of_event("Claims.Paid", claim, "HospitalMSP")] == ["payment-issued"]
    assert sub.topics_of_event("Claims.Paid", claim, "InsurerMSP") == []
    assert [t.code for t in sub.topics_of_event("Claims.Submitted", claim, "InsurerMSP")] == ["claim-submitted"]
    trigger = sub.topic_resource(sub.TOPIC_BY_CODE["payment-issued"])["eventTrigger"]
    assert [t["event"]["coding"][0]["code"] for t in trigger] == ["Claims.Paid", "Claims.PaidBatch"]
