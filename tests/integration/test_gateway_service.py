"""The gateways as they run in production: one process per org (`careledger gateway start`), HTTPS, bearer tokens
for EHR clients, mutual TLS between member gateways, on the real network."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fhirpy import SyncFHIRClient

from consortium.topology import Topology
from fabric_gateway import Gateway
from records import synthetic
from tests.conftest import GatewayHttp, claim_key, org_processes_on

pytestmark = pytest.mark.network


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, network: Topology) -> Iterator[str]:
    """The tests of records (not the supply API's) run twice: the gateways keep them in SQLite, then in PostgreSQL."""
    with org_processes_on(network, request.param) as found:
        yield found


def location_id(response_entry: dict[str, Any]) -> str:
    return str(response_entry["response"]["location"].split("/")[1])


def new_patient(gw: GatewayHttp, n: int = 5, seed: int | None = None) -> tuple[str, str, list[str]]:
    """Post a visit; returns (patient id, MPI value, every location)."""
    gen = synthetic.Synthetic.seeded(seed)
    mpi = gen.mpi_value()
    r = gw.post("", gen.transaction(n, mpi))
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    return location_id(entries[0]), mpi, [e["response"]["location"].split("/_history")[0] for e in entries]


def test_everything_across_orgs_follows_consent_and_is_audited(store: str, gateways: dict[str, GatewayHttp]) -> None:
    hospital, clinic = gateways["HospitalOrg"], gateways["ClinicOrg"]
    patient_id, mpi, locations = new_patient(hospital, 6)
    everything = f"/Patient/$everything?identifier={synthetic.MPI_SYSTEM}|{mpi}&purpose=TREAT"

    # No consent: the clinic is refused, with the custodian's reason, and the deny is on chain.
    denied = clinic.get(everything)
    assert denied.status_code == 403, denied.text
    assert denied.json()["resourceType"] == "OperationOutcome"
    assert "discloses no records of this patient" in denied.json()["issue"][0]["diagnostics"]

    # The patient consents (the hospital records it as custodian): now the clinic gets the hospital's records.
    granted = hospital.post("/Consent", synthetic.consent(patient_id, "ClinicMSP"))
    assert granted.status_code == 201, granted.text
    consent_id = granted.json()["id"]
    allowed = clinic.get(everything)
    assert allowed.status_code == 200, allowed.text
    got = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in allowed.json()["entry"]}
    assert set(locations) <= got
    assert all(e["fullUrl"].startswith(hospital.settings.url) for e in allowed.json()["entry"])

    # Another purpose is not covered by the grant.
    assert clinic.get(everything.replace("TREAT", "HRESCH")).status_code == 403

    # Revocation (the Consent updated to inactive) takes effect at once.
    revoked_consent = granted.json() | {"status": "inactive"}
    revoked = hospital.put(f"/Consent/{consent_id}", revoked_consent)
    assert revoked.status_code == 200, revoked.text
    assert clinic.get(everything).status_code == 403

    # The on-chain access log, as AuditEvents: deny, permit, deny (purpose), deny (revoked); accessor ClinicMSP.
    log = hospital.get("/AuditEvent", params={"patient": patient_id})
    assert log.status_code == 200, log.text
    events = [e["resource"] for e in log.json()["entry"]]
    assert [e["outcome"] for e in events] == ["4", "0", "4", "4"]
    assert {e["agent"][0]["who"]["identifier"]["value"] for e in events} == {"ClinicMSP"}
    assert events[1]["entity"][2]["what"]["reference"] == f"Consent/{consent_id}"
    assert "revoked" in events[3]["outcomeDesc"] or "no consent" in events[3]["outcomeDesc"]


def test_member_calls_need_a_member_certificate(gateways: dict[str, GatewayHttp]) -> None:
    hospital = gateways["HospitalOrg"]
    new_patient(hospital, 2)
    # An EHR's bearer token is not an org identity: the org-to-org endpoint wants the TLS client certificate.
    r = hospital.get(f"{hospital.settings.url}/federation/everything/{'0' * 64}")
    assert r.status_code == 401 and r.json()["issue"][0]["code"] == "login"


def test_search_paging_and_conditional_create(store: str, gateways: dict[str, GatewayHttp]) -> None:
    hospital = gateways["HospitalOrg"]
    patient_id, _, locations = new_patient(hospital, 8)
    page = hospital.get("/Observation", params={"patient": f"Patient/{patient_id}", "_count": "3"})
    assert page.status_code == 200, page.text
    body = page.json()
    observations = [loc for loc in locations if loc.startswith("Observation/")]
    assert body["total"] == len(observations) and len(body["entry"]) == 3
    seen = [e["resource"]["id"] for e in body["entry"]]
    while nxt := [link["url"] for link in body["link"] if link["relation"] == "next"]:
        body = hospital.get(nxt[0]).json()
        seen += [e["resource"]["id"] for e in body["entry"]]
    assert sorted(f"Observation/{i}" for i in seen) == sorted(observations)

    since = hospital.get("/Observation", params={"patient": patient_id, "_lastUpdated": "gt2999-01-01"})
    assert since.json()["total"] == 0
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m")
    assert hospital.get("/Observation", params={"patient": patient_id, "_lastUpdated": today}).json()["total"] == len(
        observations
    )
    assert hospital.get("/Observation", params={"colour": "red"}).status_code == 400

    # Conditional create on the consortium identifier: the second POST finds the first and creates nothing.
    gen = synthetic.Synthetic.seeded(7)
    patient = gen.patient(gen.mpi_value())
    condition = {"If-None-Exist": f"identifier={synthetic.MPI_SYSTEM}|{patient['identifier'][0]['value']}"}
    first = hospital.post("/Patient", patient, headers=condition)
    second = hospital.post("/Patient", patient, headers=condition)
    assert (first.status_code, second.status_code) == (201, 200), second.text
    assert first.json()["id"] == second.json()["id"]


def test_fhirpy_creates_reads_and_searches(store: str, gateways: dict[str, GatewayHttp]) -> None:
    hospital = gateways["HospitalOrg"]
    client = SyncFHIRClient(
        hospital.base, authorization=f"Bearer {hospital.token()}", requests_config={"verify": hospital.ca}
    )
    gen = synthetic.Synthetic.seeded(11)
    patient = client.resource("Patient", **{k: v for k, v in gen.patient().items() if k != "resourceType"})
    patient.save()
    assert patient.id
    obs = client.resource(
        "Observation",
        status="final",
        code={"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        subject=patient.to_reference(),
        valueQuantity={"value": 72, "unit": "/min"},
    )
    obs.save()
    read = client.reference("Observation", obs.id).to_resource()
    assert read["valueQuantity"]["value"] == 72 and read["meta"]["versionId"] == "1"
    found = client.resources("Observation").search(patient=patient.id).fetch_all()
    assert [o.id for o in found] == [obs.id]


def test_claims_and_coverage_go_where_they_belong(
    store: str, gateways: dict[str, GatewayHttp], gateway_as: Callable[..., Gateway]
) -> None:
    hospital, insurer = gateways["HospitalOrg"], gateways["InsurerOrg"]
    patient_id, mpi, _ = new_patient(hospital, 2)
    coverage = synthetic.coverage(mpi, "InsurerMSP", "2026-01-01", "2026-12-31")
    # The insurer keeps its Coverage unregistered; a Coverage an EHR sends a provider is one of its records, registered
    # like any other; an insurer keeps no clinical records.
    assert insurer.post("/Coverage", coverage).status_code == 201
    at_provider = hospital.post("/Coverage", coverage)
    assert at_provider.status_code == 201, at_provider.text
    verified = hospital.get(f"/Coverage/{at_provider.json()['id']}/$verify").json()
    assert verified["parameter"][0] == {"name": "result", "valueBoolean": True}
    assert insurer.post("", synthetic.Synthetic.seeded(3).transaction(2)).status_code == 403

    today = datetime.date.today().isoformat()
    claim = synthetic.claim(
        patient_id, "InsurerMSP", [("99213", 1, "125.00"), ("85025", 2, "30.50")], today, "Coverage/1"
    )
    r = hospital.post("/Claim", claim)
    assert r.status_code == 201, r.text
    claim_id, key = r.json()["id"], claim_key(r.json())
    assert claim_id not in key and len(key) == 64  # the chain knows the claim by an opaque key, never by its id

    # On chain: the public summary for every member, the lines only for the provider and the insurer.
    claims = gateway_as("InsurerOrg").network("claims").contract("careledger")
    summary = json.loads(claims.evaluate("Claims:Get", args=[key]))
    assert (summary["status"], summary["totalCents"], summary["provider"]) == ("submitted", 18600, "HospitalMSP")
    lines = json.loads(claims.evaluate("Claims:Lines", args=[key]))
    assert [(line["code"], line["netCents"]) for line in lines["lines"]] == [("99213", 12500), ("85025", 6100)]
    assert hospital.get(f"/Claim/{claim_id}/$verify").json()["parameter"][0]["valueBoolean"] is True

    # The same claim again is a second claim, an exact duplicate: the contract files it with the whole-claim edit
    # CARC 18 and the claim it duplicates (private, for the insurer to deny it as a payer does), not refused.
    dup = hospital.post("/Claim", claim)
    assert dup.status_code == 201, dup.text
    dup_lines = json.loads(claims.evaluate("Claims:Lines", args=[claim_key(dup.json())]))
    assert dup_lines["duplicateOf"] == key and {"sequence": 0, "reason": "18", "remark": ""} in dup_lines["edits"]
    assert "duplicateOf" not in json.loads(claims.evaluate("Claims:Lines", args=[key]))
    assert hospital.get("/Claim", params={"patient": patient_id}).json()["total"] == 2

    # Before adjudication the provider may withdraw it: the Claim updated to cancelled cancels it on chain. Any
    # other change to a submitted claim is refused.
    stored = hospital.get(f"/Claim/{claim_id}").json()
    assert hospital.put(f"/Claim/{claim_id}", stored | {"priority": {"text": "urgent"}}).status_code == 422
    cancelled = hospital.put(f"/Claim/{claim_id}", stored | {"status": "cancelled"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["meta"]["versionId"] == "2"
    summary = json.loads(claims.evaluate("Claims:Get", args=[key]))
    assert summary["status"] == "cancelled"
    assert hospital.get(f"/Claim/{claim_id}/$verify").json()["parameter"][0]["valueBoolean"] is True


def test_supply_api_follows_a_pack_and_flags_a_clone(gateways: dict[str, GatewayHttp]) -> None:
    pharma, hospital, clinic = gateways["PharmaOrg"], gateways["HospitalOrg"], gateways["ClinicOrg"]
    serial = f"SAPI{datetime.datetime.now().strftime('%H%M%S%f')}"
    pack = {"gtin": "00300123456785", "serial": serial, "lot": "LOT9", "expiry": "2031-06-30"}
    unit = f"{pharma.settings.url}/supply/units/{pack['gtin']}/{serial}"

    assert pharma.post(f"{pharma.settings.url}/supply/units", pack).status_code == 201
    assert pharma.post(f"{unit}/ship", {"to": "HospitalMSP"}).status_code == 200
    # Only the addressee receives; the clinic is refused by the contract, as an OperationOutcome.
    refused = clinic.post(f"{clinic.settings.url}/supply/units/{pack['gtin']}/{serial}/receive", {})
    assert refused.status_code == 409 and "not in transit to ClinicMSP" in refused.json()["issue"][0]["diagnostics"]
    hospital_unit = f"{hospital.settings.url}/supply/units/{pack['gtin']}/{serial}"
    deadline = time.monotonic() + 5  # the hospital's peer commits the shipment a moment after the pharma peer
    while hospital.get(hospital_unit).json().get("shippedTo") != "HospitalMSP":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert hospital.post(f"{hospital_unit}/receive", {}).status_code == 200
    assert hospital.post(f"{hospital_unit}/dispense", {}).status_code == 200

    # The same serial shows up again at the clinic: a clone of a dispensed pack.
    verify = clinic.get(f"{clinic.settings.url}/supply/verify", params={"gtin": pack["gtin"], "serial": serial})
    assert verify.status_code == 200, verify.text
    assert verify.json()["authentic"] is False and "already_dispensed" in verify.json()["flags"]
    steps = [e["bizStep"] for e in hospital.get(f"{hospital_unit}/history").json()]
    assert steps == ["commissioning", "shipping", "receiving", "dispensing"]

    bad = pharma.post(f"{pharma.settings.url}/supply/units", {"gtin": pack["gtin"]})
    assert bad.status_code == 422 and bad.json()["resourceType"] == "OperationOutcome"
