"""Attacks on the trust model, replayed against the running stack: the real Fabric network, every member's gateway
as its own HTTPS process, mutual TLS between members.

Two attackers:
- a malicious member org with valid credentials: its own peer identities, its gateway's TLS certificate, its CA
  (it can issue itself any client certificate), and the consortium pseudonym key every member holds;
- whoever holds a stolen EHR bearer token, with whatever SMART scopes it carries.

Each test is named for the attack it replays and shows it refused, and that the refusal changed nothing: no record
released, no row stored, no binding or grant altered. docs/SECURITY.md maps each threat to the test that proves it.
"""

from __future__ import annotations

import datetime
import http.client
import json
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consortium import connect, tls
from consortium.topology import Topology
from fabric_gateway import Endpoint, Gateway, GatewayError, Identity, load_msp
from gateway import cli as gateway_cli
from gateway.dev_issuer import dev_token
from records import digests, synthetic
from records.store import open_backend
from tests.conftest import GatewayHttp, PhiRegistry
from tests.integration.identities import PATIENT_OU, fingerprint, minted, organizational_units
from tests.integration.test_contracts import ask, call, contract_error, iso, opaque_key
from tests.unit.test_gateway_fuzz import broken_bundles, odd_text

pytestmark = pytest.mark.network

GatewayAs = Callable[..., Gateway]
MemberClient = Callable[[str], httpx.Client]
MPI = synthetic.MPI_SYSTEM


# ----- helpers --------------------------------------------------------------------------------------------------------


def rows(gw: GatewayHttp) -> int:
    """Every resource row of the org's store, pending or committed, on whichever backend it runs."""
    backend = open_backend(gw.settings.custodian.store_url)
    try:
        with backend.read() as sql:
            (count,) = sql.one("SELECT COUNT(*) FROM resources") or (0,)
        return int(count)
    finally:
        backend.close()


def new_patient(gw: GatewayHttp, n: int = 3) -> tuple[str, str, list[str]]:
    """Post a visit (a Patient and n - 1 clinical resources); returns (patient id, MPI value, Type/id of each)."""
    gen = synthetic.Synthetic.seeded(None)
    mpi = gen.mpi_value()
    r = gw.post("", gen.transaction(n, mpi))
    assert r.status_code == 200, r.text
    locations = [e["response"]["location"].split("/_history")[0] for e in r.json()["entry"]]
    return locations[0].split("/")[1], mpi, locations


def pseudonym(gw: GatewayHttp, mpi: str) -> str:
    """What any member computes from the consortium identifier with the pseudonym key every member holds."""
    return digests.pseudonym(gw.settings.custodian.consortium_key(), MPI, mpi)


def as_token(gw: GatewayHttp, scope: str, **claims: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {dev_token(gw.settings, 'stolen-token', scope, **claims)}"}


def fhir_request(
    gw: GatewayHttp, method: str, path: str, scope: str, body: Any = None, **claims: object
) -> httpx.Response:
    headers = {**as_token(gw, scope, **claims), "Content-Type": "application/fhir+json"}
    content = None if body is None else json.dumps(body).encode()
    return gw.http.request(method, path, content=content, headers=headers)


Mint = Callable[..., tuple[Gateway, Identity]]


@pytest.fixture
def mint(network: Topology) -> Iterator[Mint]:
    """mint("ClinicOrg", "name"): a new client identity the org issues itself, and a Gateway that signs as it;
    mint("HospitalOrg", "name", patient=True): a patient's own certificate (marked with OU `patient`)."""
    opened: list[Gateway] = []

    def make(org_name: str, name: str, *, patient: bool = False) -> tuple[Gateway, Identity]:
        gw, identity = minted(network, org_name, name, patient=patient)
        opened.append(gw)
        return gw, identity

    yield make
    for gw in opened:
        gw.close()


def record_entry(patient: str, key: str | None = None) -> dict[str, Any]:
    return {
        "patient": patient,
        "directory": False,
        "resourceType": "Observation",
        "resourceKey": key or opaque_key(),
        "version": 1,
        "digest": opaque_key(),
        "lastUpdated": iso(datetime.datetime.now(datetime.UTC)),
        "size": 10,
    }


def grant_of(patient: str, grantee: str, document: str = "", consent_id: str | None = None) -> dict[str, Any]:
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    return {
        "consentId": consent_id or opaque_key(),
        "patient": patient,
        "grantee": grantee,
        "action": "read",
        "scope": ["*"],
        "purpose": "TREAT",
        "start": iso(start),
        "end": "",
        "documentDigest": document,
    }


def refused_with(code: str, attempt: Callable[[], object], says: str = "") -> GatewayError:
    """The attempt is refused by the contract with `code` (and a message that says `says`)."""
    with pytest.raises(GatewayError) as refused:
        attempt()
    assert contract_error(refused.value) == code, refused.value
    assert says in str(refused.value), refused.value
    return refused.value


def audit_log(gw: Gateway, patient: str) -> list[dict[str, Any]]:
    now = datetime.datetime.now(datetime.UTC)
    start, end = iso(now - datetime.timedelta(hours=1)), iso(now + datetime.timedelta(hours=1))
    return list(ask(gw, "providers", "Audit:ByPatient", patient, start, end, "1000", "")["entries"] or [])


def federation_url(network: Topology, custodian_msp: str, patient: str) -> str:
    return f"{tls.member_url(network, custodian_msp)}/federation/everything/{patient}"


def released_nothing(response: httpx.Response, held: list[str]) -> None:
    """A refusal as an OperationOutcome, and not one of the custodian's resources in it."""
    assert response.json()["resourceType"] == "OperationOutcome", response.text
    assert "entry" not in response.json()
    for location in held:
        assert location.split("/")[1] not in response.text, location


# ----- 1. consent bypass by a self-made custodian ---------------------------------------------------------------------


def test_consent_bypass_by_a_self_made_custodian_is_refused(
    gateways: dict[str, GatewayHttp],
    gateway_as: GatewayAs,
    member_client: MemberClient,
    network: Topology,
    mint: Mint,
) -> None:
    hospital_http, clinic_http = gateways["HospitalOrg"], gateways["ClinicOrg"]
    hospital, clinic = gateway_as("HospitalOrg"), gateway_as("ClinicOrg")
    _, mpi, held = new_patient(hospital_http, 4)  # a HospitalOrg-only patient
    patient = pseudonym(clinic_http, mpi)  # ClinicOrg computes the pseudonym itself

    # The patient's own app identity, which the hospital proposed and the patient confirmed.
    patient_app, patient_cert = mint("HospitalOrg", "patient", patient=True)
    call(hospital, "providers", "Consent:RegisterPatientIdentity", patient, patient_cert.certificate_pem.decode())
    call(patient_app, "providers", "Consent:ConfirmPatientIdentity", patient)
    hospital_binding = ask(clinic, "providers", "Consent:PatientIdentityHistory", patient, "HospitalMSP")
    assert hospital_binding[-1]["fingerprint"] == fingerprint(patient_cert)

    as_clinic = member_client("ClinicOrg")
    url = federation_url(network, "HospitalMSP", patient)
    everything = "/Patient/$everything"
    by_identifier = {"identifier": f"{MPI}|{mpi}", "purpose": "TREAT"}

    # Step 1: one dummy record under the patient's pseudonym makes ClinicOrg a custodian (accepted by design).
    assert call(clinic, "providers", "Records:Register", json.dumps([record_entry(patient)])) == 1
    custodians = {c["custodian"] for c in ask(hospital, "providers", "Records:Custodians", patient)}
    assert custodians == {"HospitalMSP", "ClinicMSP"}

    # Step 2: as "custodian", ClinicOrg grants itself access with a made-up document digest (accepted: it opens
    # ClinicOrg's own records, and nothing else).
    recorded = call(clinic, "providers", "Consent:Grant", json.dumps(grant_of(patient, "ClinicMSP", opaque_key())))
    assert (recorded["grantedVia"], recorded["grantedBy"]) == ("custodian", "ClinicMSP")
    check = ask(clinic, "providers", "Consent:Check", patient, "HospitalMSP", "ClinicMSP", "*", "TREAT")
    assert check["decision"] == "deny", check

    # Step 3: ClinicOrg asks HospitalOrg's gateway over mutual TLS, then through its own gateway end to end.
    direct = as_clinic.get(url, params={"purpose": "TREAT"})
    assert direct.status_code == 403, direct.text
    released_nothing(direct, held)
    end_to_end = clinic_http.get(everything, params=by_identifier)
    assert end_to_end.status_code == 403, end_to_end.text
    released_nothing(end_to_end, held)

    # Second path: ClinicOrg binds a certificate it issued itself as the patient's identity and grants "as the
    # patient" (accepted: such a grant opens only the records of the custodian that confirmed the certificate).
    fake_app, fake_cert = mint("ClinicOrg", "not-the-patient", patient=True)
    call(clinic, "providers", "Consent:RegisterPatientIdentity", patient, fake_cert.certificate_pem.decode())
    confirmed = call(fake_app, "providers", "Consent:ConfirmPatientIdentity", patient)
    assert [b["registeredBy"] for b in confirmed["bindings"]] == ["ClinicMSP"]
    as_patient = call(fake_app, "providers", "Consent:Grant", json.dumps(grant_of(patient, "ClinicMSP")))
    assert (as_patient["grantedVia"], as_patient["signer"]) == ("patient", fingerprint(fake_cert))
    check = ask(clinic, "providers", "Consent:Check", patient, "HospitalMSP", "ClinicMSP", "*", "TREAT")
    assert check["decision"] == "deny", check
    direct = as_clinic.get(url, params={"purpose": "TREAT"})
    assert direct.status_code == 403, direct.text
    released_nothing(direct, held)
    end_to_end = clinic_http.get(everything, params=by_identifier)
    assert end_to_end.status_code == 403, end_to_end.text
    released_nothing(end_to_end, held)
    # HospitalOrg's binding is the one it had: same certificate, no new state.
    assert ask(clinic, "providers", "Consent:PatientIdentityHistory", patient, "HospitalMSP") == hospital_binding

    # Every refusal was decided and logged on chain by HospitalOrg (two direct, two end to end).
    denied = [e for e in audit_log(hospital, patient) if e["accessor"] == "ClinicMSP"]
    assert [(e["custodian"], e["decision"]) for e in denied] == [("HospitalMSP", "deny")] * 4

    # The control: when the real patient consents, the same request is served. The refusals above were the rule.
    call(patient_app, "providers", "Consent:Grant", json.dumps(grant_of(patient, "ClinicMSP")))
    allowed = as_clinic.get(url, params={"purpose": "TREAT"})
    assert allowed.status_code == 200, allowed.text
    got = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in allowed.json()["entry"]}
    assert got == set(held)


# ----- 2. SMART scopes of a stolen token ------------------------------------------------------------------------------


def test_a_stolen_tokens_smart_scopes_are_enforced_per_interaction(gateways: dict[str, GatewayHttp]) -> None:
    hospital = gateways["HospitalOrg"]
    mine, _, mine_held = new_patient(hospital, 3)
    other, _, other_held = new_patient(hospital, 3)
    my_obs = next(x for x in mine_held if x.startswith("Observation/"))
    other_obs = next(x for x in other_held if x.startswith("Observation/"))
    current = hospital.get(f"/Patient/{mine}").json()
    fresh = synthetic.Synthetic.seeded(None).patient()

    def status(method: str, path: str, scope: str, body: Any = None, **claims: object) -> int:
        return fhir_request(hospital, method, path, scope, body, **claims).status_code

    before = rows(hospital)
    refused = {
        # create only: no update, no erase
        "c: update": status("PUT", f"/Patient/{mine}", "system/Patient.c", current),
        "c: $erase": status("POST", f"/Patient/{mine}/$erase", "system/Patient.c", {}),
        # update only: no create, neither by POST nor by PUT of a new id
        "u: create": status("POST", "/Patient", "system/Patient.u", fresh),
        "u: create by PUT": status("PUT", "/Patient/new-by-put", "system/Patient.u", {**fresh, "id": "new-by-put"}),
        # user/ scopes need a launch context this server does not support: never widened
        "user read": status("GET", f"/Patient/{mine}", "user/*.read"),
        "user write": status("POST", "/Patient", "user/*.write", fresh),
        "user cruds": status("GET", f"/{my_obs}", "user/*.cruds system/*.read"),
        # patient/ without a launch patient grants nothing
        "patient/ no launch: read": status("GET", f"/{my_obs}", "patient/*.rs"),
        "patient/ no launch: search": status("GET", "/Observation", "patient/*.rs"),
        # patient/ with one: nothing of another patient
        "other's read": status("GET", f"/{other_obs}", "patient/*.cruds", patient=mine),
        "other's vread": status("GET", f"/{other_obs}/_history/1", "patient/*.cruds", patient=mine),
        "other's history": status("GET", f"/{other_obs}/_history", "patient/*.cruds", patient=mine),
        "other's $verify": status("GET", f"/{other_obs}/$verify", "patient/*.cruds", patient=mine),
        "other's $everything": status("GET", f"/Patient/{other}/$everything", "patient/*.cruds", patient=mine),
        "other's $erase": status("POST", f"/Patient/{other}/$erase", "patient/*.cruds", {}, patient=mine),
        "other's update": status(
            "PUT", f"/{other_obs}", "patient/*.cruds", hospital.get(f"/{other_obs}").json(), patient=mine
        ),
        "write for other": status(
            "POST",
            "/Observation",
            "patient/*.cruds",
            synthetic.Synthetic.seeded(1).clinical(f"Patient/{other}", 0),
            patient=mine,
        ),
    }
    assert refused == dict.fromkeys(refused, 403)
    assert rows(hospital) == before

    # Searches with patient/ scopes are narrowed to the launch patient, whatever they ask for.
    for params in ({}, {"patient": other}, {"_id": other_obs.split("/")[1]}):
        r = hospital.http.get("/Observation", params=params, headers=as_token(hospital, "patient/*.rs", patient=mine))
        assert r.status_code == 200, r.text
        subjects = {e["resource"]["subject"]["reference"] for e in r.json().get("entry", [])}
        assert subjects <= {f"Patient/{mine}"}, (params, subjects)

    # The tokens were valid: what each scope does allow goes through.
    assert status("GET", f"/{my_obs}", "patient/*.rs", patient=mine) == 200
    assert status("POST", "/Patient", "system/Patient.c", fresh) == 201
    assert status("PUT", f"/Patient/{mine}", "system/Patient.u", current) == 200


# ----- 4. odd ids on every route --------------------------------------------------------------------------------------

ODD_IDS = ["<script>", "a b", "x" * 4000, "..", "%2e%2e", "a%00b"]


def raw_exchange(gw: GatewayHttp, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request with exactly this request target (no client-side encoding or normalisation), over TLS; the
    status and body of the answer. A dropped connection raises."""
    url = urlsplit(gw.settings.url)
    host, port = url.hostname or "127.0.0.1", url.port or 443
    context = ssl.create_default_context(cafile=gw.ca)
    headers = {**gw.headers(), "Content-Type": "application/fhir+json", "Connection": "close"}
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with (
        socket.create_connection((host, port), timeout=60) as sock,
        context.wrap_socket(sock, server_hostname=host) as s,
    ):
        s.sendall(head.encode("latin-1") + body)
        response = http.client.HTTPResponse(s, method=method)
        response.begin()
        return response.status, response.read()


@pytest.mark.parametrize("odd", ODD_IDS, ids=["script", "space", "4000-chars", "dot-dot", "encoded-dot-dot", "nul"])
def test_odd_ids_on_every_route_are_answered_4xx_and_store_nothing(gateways: dict[str, GatewayHttp], odd: str) -> None:
    hospital, insurer = gateways["HospitalOrg"], gateways["InsurerOrg"]
    patient = {**synthetic.Synthetic.seeded(3).patient(), "id": odd}
    coverage = {**synthetic.coverage("MPI-1-X", "InsurerMSP", "2026-01-01", "2026-12-31"), "id": odd}
    before = rows(hospital), rows(insurer)
    answers: dict[str, list[int]] = {}
    for spelled in (odd, quote(odd, safe="")):  # as the attacker typed it, and percent-encoded by a client
        routes = [
            (hospital, "GET", f"/fhir/Patient/{spelled}", b""),
            (hospital, "GET", f"/fhir/Patient/{spelled}/_history/1", b""),
            (hospital, "GET", f"/fhir/Patient/{spelled}/_history", b""),
            (hospital, "PUT", f"/fhir/Patient/{spelled}", json.dumps(patient).encode()),
            (hospital, "GET", f"/fhir/Observation/{spelled}/$verify", b""),
            (hospital, "POST", f"/fhir/Patient/{spelled}/$erase", b"{}"),
            (insurer, "GET", f"/fhir/Coverage/{spelled}", b""),
            (insurer, "PUT", f"/fhir/Coverage/{spelled}", json.dumps(coverage).encode()),
        ]
        for gw, method, target, body in routes:
            # Every request is answered, and a client that retries it (as one does after a dropped connection)
            # gets the same answer and stores nothing either.
            statuses = [raw_exchange(gw, method, target, body)[0] for _attempt in range(2)]
            answers[f"{gw.settings.org.name} {method} {target[:60]}"] = statuses
    assert all(400 <= s < 500 and len(set(got)) == 1 for got in answers.values() for s in got), answers
    assert (rows(hospital), rows(insurer)) == before


# ----- 5. conditional create inside transactions ----------------------------------------------------------------------


def test_if_none_exist_in_transactions_creates_one_patient_sequential_or_parallel(
    gateways: dict[str, GatewayHttp],
) -> None:
    hospital = gateways["HospitalOrg"]

    def visit(mpi: str, seed: int) -> dict[str, Any]:
        bundle = synthetic.Synthetic.seeded(seed).transaction(3, mpi)
        bundle["entry"][0]["request"]["ifNoneExist"] = f"identifier={MPI}|{mpi}"
        return bundle

    def patients(mpi: str) -> list[str]:
        found = hospital.get("/Patient", params={"identifier": f"{MPI}|{mpi}"}).json()
        return [e["resource"]["id"] for e in found.get("entry", [])]

    sequential = synthetic.Synthetic.seeded(None).mpi_value()
    first, second = hospital.post("", visit(sequential, 1)), hospital.post("", visit(sequential, 2))
    assert (first.status_code, second.status_code) == (200, 200), second.text
    assert first.json()["entry"][0]["response"]["location"] == second.json()["entry"][0]["response"]["location"]
    assert len(patients(sequential)) == 1

    parallel = synthetic.Synthetic.seeded(None).mpi_value()
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda seed: hospital.post("", visit(parallel, seed)), range(5)))
    assert [a.status_code for a in answers] == [200] * 5, [a.text[:300] for a in answers]
    locations = {a.json()["entry"][0]["response"]["location"] for a in answers}
    assert len(locations) == 1, locations
    assert len(patients(parallel)) == 1
    # Every visit's clinical entries point at that one Patient.
    (patient_id,) = patients(parallel)
    observations = hospital.get("/Observation", params={"patient": patient_id, "_count": "100"}).json()
    assert observations["total"] == 5 * 2


def at_once(gw: GatewayHttp, bundles: list[dict[str, Any]]) -> list[httpx.Response]:
    """Post every bundle to the org's gateway together: one thread each, all released by one barrier. The answers
    come back in the bundles' order."""
    start = threading.Barrier(len(bundles))

    def send(bundle: dict[str, Any]) -> httpx.Response:
        start.wait()
        return gw.post("", bundle)

    with ThreadPoolExecutor(len(bundles)) as pool:
        return list(pool.map(send, bundles))


def one_won(answers: list[httpx.Response], condition: str) -> int:
    """Exactly one answer is a transaction-response; every other is 412 with one `conflict` issue naming the failed
    `condition` of entry 0. The winner's position."""
    assert sorted(a.status_code for a in answers) == [200] + [412] * (len(answers) - 1), [
        (a.status_code, a.text[:300]) for a in answers
    ]
    for lost in (a for a in answers if a.status_code == 412):
        outcome = lost.json()
        assert outcome["resourceType"] == "OperationOutcome", lost.text
        assert [i["code"] for i in outcome["issue"]] == ["conflict"], lost.text
        assert f"Bundle.entry[0].request.{condition}" in outcome["issue"][0]["diagnostics"], lost.text
    (won,) = [n for n, a in enumerate(answers) if a.status_code == 200]
    assert answers[won].json()["type"] == "transaction-response"
    return won


def stored_versions(gw: GatewayHttp, location: str) -> list[dict[str, Any]]:
    """Every version the org's gateway holds of `Type/id`, oldest first."""
    history = gw.get(f"/{location}/_history")
    assert history.status_code == 200, history.text
    return sorted((e["resource"] for e in history.json()["entry"]), key=lambda r: int(r["meta"]["versionId"]))


def registered_versions(gw: GatewayHttp, ledger: Gateway, location: str) -> list[int]:
    """Every version of `Type/id` registered on chain (Records:History under the key the org derives for it)."""
    rtype, rid = location.split("/")
    store = gw.settings.custodian.open_store()
    try:
        key = store.ledger_key(rtype, rid)
    finally:
        store.close()
    return [int(r["version"]) for r in ask(ledger, "providers", "Records:History", key)]


def verified(gw: GatewayHttp, location: str) -> bool:
    """$verify: the version the gateway holds is the one registered on chain, digest for digest."""
    r = gw.get(f"/{location}/$verify")
    assert r.status_code == 200, r.text
    return bool(r.json()["parameter"][0]["valueBoolean"])


def test_if_match_in_concurrent_transactions_lets_one_update_of_a_version_through(
    gateways: dict[str, GatewayHttp], gateway_as: GatewayAs
) -> None:
    """Five transactions sent at once each update the same Observation naming its version 1 in `request.ifMatch`,
    and each also creates an Observation of its own. Exactly one commits: its update is version 2, in the store and
    on chain, and its new Observation is stored. The four others are answered 412 and write nothing, not even their
    unconditional entry. Naming the version that is current then goes through: the 412s were the condition's."""
    hospital = gateways["HospitalOrg"]
    patient_id, _, held = new_patient(hospital, 3)
    target = next(x for x in held if x.startswith("Observation/"))
    current = hospital.get(f"/{target}").json()
    assert current["meta"]["versionId"] == "1"

    def observations() -> int:
        found = hospital.get("/Observation", params={"patient": patient_id, "_count": "100"})
        return int(found.json()["total"])

    def contender(n: int, if_match: str) -> dict[str, Any]:
        update = {**current, "note": [{"text": f"contender {n}"}]}
        extra = synthetic.Synthetic.seeded(n).clinical(f"Patient/{patient_id}", 0)
        return {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": update, "request": {"method": "PUT", "url": target, "ifMatch": if_match}},
                {"resource": extra, "request": {"method": "POST", "url": "Observation"}},
            ],
        }

    before, observations_before = rows(hospital), observations()
    answers = at_once(hospital, [contender(n, 'W/"1"') for n in range(5)])
    won = one_won(answers, "ifMatch")
    written = [e["response"] for e in answers[won].json()["entry"]]
    assert [(w["status"], w["etag"]) for w in written] == [("200 OK", 'W/"2"'), ("201 Created", 'W/"1"')]

    # One new version of the target and one new Observation: the winner's, nothing of the others.
    assert rows(hospital) == before + 2
    assert observations() == observations_before + 1
    versions = stored_versions(hospital, target)
    assert [v["meta"]["versionId"] for v in versions] == ["1", "2"]
    assert versions[1]["note"] == [{"text": f"contender {won}"}]
    assert registered_versions(hospital, gateway_as("HospitalOrg"), target) == [1, 2]
    assert verified(hospital, target)

    # The control: an update naming the current version is taken.
    then = hospital.post("", contender(99, 'W/"2"'))
    assert then.status_code == 200, then.text
    assert then.json()["entry"][0]["response"]["etag"] == 'W/"3"'
    assert registered_versions(hospital, gateway_as("HospitalOrg"), target) == [1, 2, 3]


def test_if_none_match_star_in_concurrent_transactions_creates_a_resource_once(
    gateways: dict[str, GatewayHttp], gateway_as: GatewayAs
) -> None:
    """Five transactions sent at once each PUT the same new Observation id with `request.ifNoneMatch: *` (create
    only), each with its own content. Exactly one creates it (version 1, in the store and on chain, with that
    transaction's content); the four others are answered 412 and write nothing. Sent again afterwards the create-only
    PUT is refused 412 too, while the same PUT without the condition updates it."""
    hospital = gateways["HospitalOrg"]
    patient_id, _, _ = new_patient(hospital, 2)
    rid = f"create-once-{secrets.token_hex(6)}"
    target = f"Observation/{rid}"

    def contender(n: int, **condition: str) -> dict[str, Any]:
        obs = synthetic.Synthetic.seeded(n).clinical(f"Patient/{patient_id}", 0)
        obs |= {"id": rid, "note": [{"text": f"contender {n}"}]}
        request = {"method": "PUT", "url": target, **condition}
        return {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": obs, "request": request}]}

    before = rows(hospital)
    answers = at_once(hospital, [contender(n, ifNoneMatch="*") for n in range(5)])
    won = one_won(answers, "ifNoneMatch")
    (written,) = [e["response"] for e in answers[won].json()["entry"]]
    assert (written["status"], written["location"]) == ("201 Created", f"{target}/_history/1")
    for lost in (a for a in answers if a.status_code == 412):
        assert f"{target} exists" in lost.json()["issue"][0]["diagnostics"], lost.text

    assert rows(hospital) == before + 1
    versions = stored_versions(hospital, target)
    assert [(v["meta"]["versionId"], v["note"]) for v in versions] == [("1", [{"text": f"contender {won}"}])]
    assert registered_versions(hospital, gateway_as("HospitalOrg"), target) == [1]
    assert verified(hospital, target)

    # Sequentially: create-only is refused once the resource exists; the plain PUT updates it.
    again = hospital.post("", contender(98, ifNoneMatch="*"))
    assert again.status_code == 412, again.text
    assert rows(hospital) == before + 1
    update = hospital.post("", contender(99))
    assert update.status_code == 200, update.text
    assert update.json()["entry"][0]["response"]["etag"] == 'W/"2"'
    assert registered_versions(hospital, gateway_as("HospitalOrg"), target) == [1, 2]


# ----- 6. inputs that once gave 500, and a fuzz run over HTTPS --------------------------------------------------------


def _deep_extensions(levels: int) -> bytes:
    obs = json.dumps(synthetic.Synthetic.seeded(2).clinical("Patient/x", 1))
    nested = '{"url":"http://x","extension":[' * levels + '{"url":"http://x","valueString":"v"}' + "]}" * levels
    return (obs[:-1] + ',"extension":[' + nested + "]}").encode()


def test_inputs_that_once_gave_500_are_answered_4xx(gateways: dict[str, GatewayHttp]) -> None:
    hospital = gateways["HospitalOrg"]
    patient_id, _, held = new_patient(hospital, 2)
    before = rows(hospital)
    headers = {**hospital.headers(), "Content-Type": "application/fhir+json"}

    def post(path: str, body: bytes) -> httpx.Response:
        return hospital.http.post(path, content=body, headers=headers)

    answers = {
        "JSON nested 10,000 levels": post("", b"[" * 10_000 + b"]" * 10_000),
        "extensions nested 150 levels": post("/Observation", _deep_extensions(150)),
        "_count=²": hospital.get("/Observation", params={"_count": "²"}),
        "_offset=²": hospital.get("/Observation", params={"_offset": "²"}),
        "_lastUpdated year 1 at +01:00": hospital.get(
            "/Observation", params={"_lastUpdated": "0001-01-01T00:00:00+01:00"}
        ),
        "_lastUpdated year 9999 at -01:00": hospital.get(
            "/Observation", params={"_lastUpdated": "9999-12-31T23:59:59-01:00"}
        ),
        "_lastUpdated with a bare +": hospital.get("/Observation?_lastUpdated=0001-01-01T00:00:00+01:00"),
        "vread 99999999999999999999": hospital.get(f"/{held[1]}/_history/99999999999999999999"),
        "Patient vread 99999999999999999999": hospital.get(f"/Patient/{patient_id}/_history/99999999999999999999"),
    }
    statuses = {name: r.status_code for name, r in answers.items()}
    assert all(400 <= s < 500 for s in statuses.values()), statuses
    assert all(r.json()["resourceType"] == "OperationOutcome" for r in answers.values())

    # A batch answers each entry on its own: every entry refused, none stored.
    batch = post("", json.dumps({"resourceType": "Bundle", "type": "batch", "entry": [None, 5, "x"]}).encode())
    assert batch.status_code < 500, batch.text
    if batch.status_code == 200:
        assert [e["response"]["status"][:1] for e in batch.json()["entry"]] == ["4"] * 3, batch.text
    assert rows(hospital) == before


fuzz_request = st.one_of(
    st.tuples(st.just("POST"), st.just(""), broken_bundles()),
    st.tuples(
        st.just("GET"),
        st.builds(lambda t, i: f"/{t}/{quote(i, safe='')}", st.sampled_from(["Patient", "Observation"]), odd_text),
        st.none(),
    ),
    st.tuples(
        st.just("GET"),
        st.builds(
            lambda k, v: f"/Observation?{k}={quote(v, safe='')}",
            st.sampled_from(["_count", "_offset", "_lastUpdated", "patient", "_id", "identifier", "x"]),
            st.one_of(odd_text, st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])),
        ),
        st.none(),
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(attempt=fuzz_request)
def test_fuzzed_requests_over_https_never_get_a_5xx_nor_store_on_a_4xx(
    gateways: dict[str, GatewayHttp], phi_registry: PhiRegistry, attempt: tuple[str, str, Any]
) -> None:
    hospital = gateways["HospitalOrg"]
    method, path, body = attempt
    before = rows(hospital)
    with phi_registry.paused():  # accepted fuzz inputs are random text, not patients
        r = hospital.post(path, body) if method == "POST" else hospital.get(path)
    assert r.status_code < 500, (method, path, r.status_code, r.text[:500])
    if r.status_code >= 400:
        assert rows(hospital) == before, (method, path, r.status_code)
        assert r.json()["resourceType"] == "OperationOutcome"


# ----- 7. no existence oracle -----------------------------------------------------------------------------------------


def test_federation_answers_a_held_and_an_unknown_patient_alike(
    gateways: dict[str, GatewayHttp], gateway_as: GatewayAs, member_client: MemberClient, network: Topology
) -> None:
    hospital_http = gateways["HospitalOrg"]
    _, mpi, _ = new_patient(hospital_http, 2)
    held = pseudonym(hospital_http, mpi)
    unknown = pseudonym(hospital_http, synthetic.Synthetic.seeded(None).mpi_value())
    for org in ("ClinicOrg", "InsurerOrg"):  # a provider without consent; an insurer, not even on `providers`
        client = member_client(org)
        answers = [
            client.get(federation_url(network, "HospitalMSP", p), params={"purpose": "TREAT"}) for p in (held, unknown)
        ]
        assert answers[0].status_code == 403, answers[0].text
        assert (answers[0].status_code, answers[0].content) == (answers[1].status_code, answers[1].content), org
        assert answers[0].headers["content-type"] == answers[1].headers["content-type"]
    # The held patient's refusals are on chain, decided and logged by the custodian.
    log = audit_log(gateway_as("HospitalOrg"), held)
    assert [(e["accessor"], e["decision"]) for e in log] == [("ClinicMSP", "deny"), ("InsurerMSP", "deny")]


class GatewayLog:
    """The JSON lines an org's gateway writes to its log (run/logs/gateway-<org>.log, where its supervisor copies
    the gateway's output) from the moment this is made."""

    def __init__(self, network: Topology, org: str) -> None:
        self.path = gateway_cli.process(network, org).log_file
        self.offset = self.path.stat().st_size

    def lines(self) -> list[dict[str, Any]]:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        out: list[dict[str, Any]] = []
        for raw in data.splitlines():
            try:
                line = json.loads(raw)
            except ValueError:  # not a JSON line (a partly copied one is read whole next time)
                continue
            if isinstance(line, dict):
                out.append(line)
        return out

    def awaited(
        self, wanted: Callable[[dict[str, Any]], bool], count: int, within_s: float = 10.0
    ) -> list[dict[str, Any]]:
        """The first `count` wanted lines. The gateway writes a line before it answers the request it is about, and
        the supervisor copies it to the file a moment later: wait (bounded) until it has."""
        deadline = time.monotonic() + within_s
        while len(found := [line for line in self.lines() if wanted(line)]) < count:
            assert time.monotonic() < deadline, (f"{count} lines wanted in {self.path}", found)
            time.sleep(0.05)
        return found[:count]


def test_every_federation_request_is_logged_for_a_held_and_an_unknown_patient(
    gateways: dict[str, GatewayHttp], gateway_as: GatewayAs, member_client: MemberClient, network: Topology
) -> None:
    """A member asks HospitalOrg's gateway for a patient it holds (no consent) and for one it does not hold, as a
    provider (ClinicOrg) and as an org off `providers` (InsurerOrg). The two answers are the same in every byte and
    header but the date, and every one of the four requests is logged by the custodian, in order: the held patient's
    as its access decision on chain (`Audit:RecordAccess`) and a log line naming that transaction, the unknown
    patient's as a log line of a refusal (nothing on chain names that patient, so nothing is written there)."""
    hospital_http = gateways["HospitalOrg"]
    _, mpi, _ = new_patient(hospital_http, 2)
    held = pseudonym(hospital_http, mpi)
    unknown = pseudonym(hospital_http, synthetic.Synthetic.seeded(None).mpi_value())
    log = GatewayLog(network, "HospitalOrg")

    for org in ("ClinicOrg", "InsurerOrg"):
        client = member_client(org)
        answers = [
            client.get(federation_url(network, "HospitalMSP", p), params={"purpose": "TREAT"}) for p in (held, unknown)
        ]
        assert answers[0].status_code == 403, answers[0].text
        assert answers[0].json()["issue"][0]["code"] == "forbidden"
        assert answers[0].content == answers[1].content, org
        headers = [{k: v for k, v in a.headers.items() if k != "date"} for a in answers]
        assert headers[0] == headers[1], org

    # On chain: the held patient's two refusals, decided by the custodian; nothing for the unknown one.
    hospital = gateway_as("HospitalOrg")
    decided = [(e["accessor"], e["decision"], e["txId"]) for e in audit_log(hospital, held)]
    assert [d[:2] for d in decided] == [("ClinicMSP", "deny"), ("InsurerMSP", "deny")]
    assert audit_log(hospital, unknown) == []

    # In the custodian's log: one line per request, in the order asked; a held patient's names its decision's
    # transaction.
    lines = log.awaited(lambda x: (x.get("logger"), x.get("msg")) == ("careledger.sharing", "disclosure"), 4)
    said = [(x.get("accessor"), x.get("decision"), x.get("tx"), x.get("reason")) for x in lines]
    assert said == [
        ("ClinicMSP", "deny", decided[0][2], None),
        ("ClinicMSP", "deny", None, "not held"),
        ("InsurerMSP", "deny", decided[1][2], None),
        ("InsurerMSP", "deny", None, "not held"),
    ], said


# ----- 8. content negotiation -----------------------------------------------------------------------------------------


def test_bodies_that_are_not_fhir_json_get_415_and_unproducible_accepts_406(gateways: dict[str, GatewayHttp]) -> None:
    hospital = gateways["HospitalOrg"]
    patient = synthetic.Synthetic.seeded(None).patient()
    body = json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": []}).encode()
    before = rows(hospital)
    statuses: dict[str, int] = {}
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml", "application/fhir+xml"):
        for path, method, sent in (("", "POST", body), ("/Patient", "POST", json.dumps(patient).encode())):
            headers = {**hospital.headers(), "Content-Type": content_type}
            statuses[f"{method} {path} {content_type}"] = hospital.http.request(
                method, path, content=sent, headers=headers
            ).status_code
    no_type = hospital.http.post("/Patient", content=json.dumps(patient), headers=hospital.headers())
    statuses["POST /Patient without a Content-Type"] = no_type.status_code
    assert statuses == dict.fromkeys(statuses, 415)
    for accept in ("application/xml", "application/fhir+xml", "text/html"):
        headers = {**hospital.headers(), "Content-Type": "application/fhir+json", "Accept": accept}
        assert hospital.http.post("/Patient", content=json.dumps(patient), headers=headers).status_code == 406
        assert hospital.http.get("/Patient", headers=headers).status_code == 406
    assert hospital.get("/Patient", params={"_format": "xml"}).status_code == 406
    assert rows(hospital) == before


# ----- 9. supply: a shipment off the channel --------------------------------------------------------------------------


def test_supply_ship_to_an_org_off_the_pharma_channel_is_refused(
    gateways: dict[str, GatewayHttp], gateway_as: GatewayAs
) -> None:
    pharma = gateway_as("PharmaOrg")
    gtin, serial = "00300123456785", f"OFF{secrets.token_hex(6).upper()}"
    unit = {"gtin": gtin, "serial": serial, "lot": "LOT3", "expiry": "2031-01-31"}
    call(pharma, "pharma", "Supply:Commission", json.dumps(unit))
    refused_with(
        "INVALID_ARGUMENT", lambda: call(pharma, "pharma", "Supply:Ship", gtin, serial, "InsurerMSP"), "member"
    )
    refused_with("INVALID_ARGUMENT", lambda: call(pharma, "pharma", "Supply:Ship", gtin, serial, "PharmaMSP"))
    # Through the gateway's supply API too, as an OperationOutcome.
    http = gateways["PharmaOrg"]
    r = http.post(f"{http.settings.url}/supply/units/{gtin}/{serial}/ship", {"to": "InsurerMSP"})
    assert r.status_code == 422 and r.json()["resourceType"] == "OperationOutcome", r.text
    state = ask(pharma, "pharma", "Supply:Get", gtin, serial)
    assert (state["state"], state["custodian"], state.get("shippedTo", "")) == ("active", "PharmaMSP", "")
    assert [e["bizStep"] for e in ask(pharma, "pharma", "Supply:History", gtin, serial)] == ["commissioning"]


# ----- 10. contract refusals through the real peers -------------------------------------------------------------------


def refused_by_the_channel_or_the_contract(attempt: Callable[[], object], contract_says: str) -> str:
    """Refused either before the contract runs (the peer's access control: `access denied`, no such channel) or by
    the contract with FORBIDDEN saying `contract_says`; the peer's words."""
    with pytest.raises(GatewayError) as refused:
        attempt()
    text = str(refused.value)
    by_contract = contract_error(refused.value) == "FORBIDDEN" and contract_says in text
    assert by_contract or "access denied" in text.lower() or "channel" in text.lower(), text
    return text


def test_contracts_refuse_the_wrong_msp_role_custodian_or_patient_through_the_real_peers(
    gateways: dict[str, GatewayHttp], gateway_as: GatewayAs, network: Topology, mint: Mint
) -> None:
    hospital, clinic, insurer = gateway_as("HospitalOrg"), gateway_as("ClinicOrg"), gateway_as("InsurerOrg")
    _, mpi, _ = new_patient(gateways["HospitalOrg"], 2)
    patient = pseudonym(gateways["HospitalOrg"], mpi)
    _, other_mpi, _ = new_patient(gateways["HospitalOrg"], 2)
    other_patient = pseudonym(gateways["HospitalOrg"], other_mpi)
    hospital_key = opaque_key()
    call(hospital, "providers", "Records:Register", json.dumps([record_entry(patient, hospital_key)]))
    attempts: list[dict[str, Any]] = []

    def entry() -> dict[str, Any]:
        attempts.append(record_entry(patient))
        return attempts[-1]

    # A peer's own identity may endorse, never submit.
    hospital_org, insurer_org = network.org("HospitalOrg"), network.org("InsurerOrg")
    peer_identity, peer_signer = load_msp(network.node_dir(network.peer_of(hospital_org)) / "msp", "HospitalMSP")
    with Gateway(connect.endpoint(network, hospital_org), peer_identity, peer_signer) as as_peer:
        refused_by_the_channel_or_the_contract(
            lambda: call(as_peer, "providers", "Records:Register", json.dumps([entry()])), 'role "peer"'
        )

    # An insurer has no business on `providers`: its own peer does not serve the channel, and another member's peer
    # refuses its proposal.
    insurer_identity, insurer_signer = load_msp(network.user_dir(insurer_org, "User1") / "msp", "InsurerMSP")
    own = connect.endpoint(network, insurer_org)
    hospital_peer = Endpoint(
        network.peer_of(hospital_org).address,
        network.tls_ca_cert(hospital_org).read_bytes(),
        own.client_cert,
        own.client_key,
    )
    refused_by_the_channel_or_the_contract(
        lambda: call(insurer, "providers", "Records:Register", json.dumps([entry()])), "provider"
    )
    with Gateway(hospital_peer, insurer_identity, insurer_signer) as via_hospital:
        refused_by_the_channel_or_the_contract(
            lambda: call(via_hospital, "providers", "Records:Register", json.dumps([entry()])), "provider"
        )
    for attempted in attempts:
        refused_with("NOT_FOUND", lambda k=attempted["resourceKey"]: ask(hospital, "providers", "Records:Get", k, "0"))

    # Nor may an insurer submit claims on `claims`, where it is a member.
    claim = {
        "claimId": opaque_key(),
        "patient": patient,
        "insurer": "InsurerMSP",
        "serviceDate": datetime.date.today().isoformat(),
        "currency": "USD",
        "totalCents": 100,
        "digest": opaque_key(),
    }
    detail = {
        "claimId": claim["claimId"],
        "coverage": "Coverage/1",
        "salt": secrets.token_hex(16),
        "lines": [{"sequence": 1, "code": "99213", "quantity": 1, "unitPriceCents": 100, "netCents": 100}],
    }
    submit = json.dumps(claim)
    refused_with("FORBIDDEN", lambda: call(insurer, "claims", "Claims:Submit", submit, transient={"claim": detail}))
    refused_with("NOT_FOUND", lambda: ask(insurer, "claims", "Claims:Get", claim["claimId"]))

    # Another org's resource: no new version from a member that does not hold it.
    refused_with(
        "FORBIDDEN",
        lambda: call(clinic, "providers", "Records:Register", json.dumps([record_entry(patient, hospital_key)])),
        "held by",
    )
    # Erasure is recorded by a custodian of the patient only.
    refused_with("FORBIDDEN", lambda: call(clinic, "providers", "Records:RecordErasure", patient))

    # A clinic revoking the hospital's consent: refused as a stranger, as a self-made custodian, and through an
    # identity it bound as the patient's.
    consent = grant_of(patient, "InsurerMSP", opaque_key())
    call(hospital, "providers", "Consent:Grant", json.dumps(consent))
    consent_id = consent["consentId"]
    refused_with("FORBIDDEN", lambda: call(clinic, "providers", "Consent:Revoke", consent_id, opaque_key()))
    call(clinic, "providers", "Records:Register", json.dumps([record_entry(patient)]))
    refused_with("FORBIDDEN", lambda: call(clinic, "providers", "Consent:Revoke", consent_id, opaque_key()))
    fake_app, fake_cert = mint("ClinicOrg", "not-the-patient", patient=True)
    call(clinic, "providers", "Consent:RegisterPatientIdentity", patient, fake_cert.certificate_pem.decode())
    call(fake_app, "providers", "Consent:ConfirmPatientIdentity", patient)
    refused_with("FORBIDDEN", lambda: call(fake_app, "providers", "Consent:Revoke", consent_id, ""))
    assert ask(hospital, "providers", "Consent:Get", consent_id)["status"] == "active"

    # A patient's own certificate never acts for the org that issued it, nor for another patient.
    patient_app, patient_cert = mint("HospitalOrg", "patient", patient=True)
    call(hospital, "providers", "Consent:RegisterPatientIdentity", patient, patient_cert.certificate_pem.decode())
    call(patient_app, "providers", "Consent:ConfirmPatientIdentity", patient)
    says = "patient's own identity"
    register = json.dumps([record_entry(patient)])
    access = json.dumps({"patient": patient, "accessor": "ClinicMSP", "resource": "$everything", "purpose": "TREAT"})
    for fn, args in (
        ("Records:Register", [register]),
        ("Audit:RecordAccess", [access]),
        ("Records:RecordErasure", [patient]),
        ("Consent:RegisterPatientIdentity", [other_patient, fake_cert.certificate_pem.decode()]),
    ):
        refused_with("FORBIDDEN", lambda f=fn, a=args: call(patient_app, "providers", f, *a), says)
    # Its grants speak for its own patient only: as a custodian for another patient it is refused.
    for_other = json.dumps(grant_of(other_patient, "ClinicMSP", opaque_key()))
    refused_with("FORBIDDEN", lambda: call(patient_app, "providers", "Consent:Grant", for_other), "another patient")

    # Nothing above changed the index: the hospital's resource is still its own, at version 1.
    record = ask(hospital, "providers", "Records:Get", hospital_key, "0")
    assert (record["custodian"], record["version"]) == ("HospitalMSP", 1)
    assert {c["custodian"] for c in ask(hospital, "providers", "Records:Custodians", other_patient)} == {"HospitalMSP"}


def confirmed_patient_certificate(gateways: dict[str, GatewayHttp], gateway_as: GatewayAs, mint: Mint) -> Gateway:
    """A HospitalOrg patient and the patient's own certificate, issued by the hospital's CA as a client marked with
    OU `patient`, proposed by the hospital and confirmed by the patient on `providers`: a Gateway that signs as it.
    That it confirms at all shows the members' MSPs (NodeOUs on) take a client certificate with the extra OU."""
    hospital = gateway_as("HospitalOrg")
    _, mpi, _ = new_patient(gateways["HospitalOrg"], 2)
    patient = pseudonym(gateways["HospitalOrg"], mpi)
    patient_app, patient_cert = mint("HospitalOrg", "patient", patient=True)
    assert organizational_units(patient_cert) == ["client", PATIENT_OU]
    call(hospital, "providers", "Consent:RegisterPatientIdentity", patient, patient_cert.certificate_pem.decode())
    confirmed = call(patient_app, "providers", "Consent:ConfirmPatientIdentity", patient)
    assert [b["fingerprint"] for b in confirmed["bindings"]] == [fingerprint(patient_cert)]
    return patient_app


def test_a_patient_certificate_does_not_act_for_its_org_on_the_claims_channel(
    gateways: dict[str, GatewayHttp], gateway_as: GatewayAs, mint: Mint
) -> None:
    hospital = gateway_as("HospitalOrg")
    patient_app = confirmed_patient_certificate(gateways, gateway_as, mint)
    says = "patient's own identity"
    _, mpi, _ = new_patient(gateways["HospitalOrg"], 2)
    claim_id = opaque_key()
    claim = {
        "claimId": claim_id,
        "patient": pseudonym(gateways["HospitalOrg"], mpi),
        "insurer": "InsurerMSP",
        "serviceDate": datetime.date.today().isoformat(),
        "currency": "USD",
        "totalCents": 4200,
        "digest": opaque_key(),
    }
    detail = {
        "claimId": claim_id,
        "coverage": "Coverage/1",
        "salt": secrets.token_hex(16),
        "lines": [{"sequence": 1, "code": "99499", "quantity": 1, "unitPriceCents": 4200, "netCents": 4200}],
    }
    submit = json.dumps(claim)
    # Refused by the contract (the peer's MSP took the signer: the refusal is the chaincode's FORBIDDEN).
    for fn, args, transient in (
        ("Claims:Submit", [submit], {"claim": detail}),
        ("Claims:SubmitBatch", [json.dumps([claim])], {"claims": {claim_id: detail}}),
    ):
        refused_with(
            "FORBIDDEN", lambda f=fn, a=args, t=transient: call(patient_app, "claims", f, *a, transient=t), says
        )
    refused_with("NOT_FOUND", lambda: ask(hospital, "claims", "Claims:Get", claim_id))

    # The control: the hospital's own client submits the same claim. Its provider's steps, and the private lines
    # the provider shares with the insurer, stay out of the patient certificate's reach.
    assert call(hospital, "claims", "Claims:Submit", submit, transient={"claim": detail})["provider"] == "HospitalMSP"
    for fn, args in (
        ("Claims:Cancel", [claim_id, "dup"]),
        ("Claims:PurgeLines", [claim_id]),
    ):
        refused_with("FORBIDDEN", lambda f=fn, a=args: call(patient_app, "claims", f, *a), says)
    refused_with("FORBIDDEN", lambda: ask(patient_app, "claims", "Claims:Lines", claim_id), says)
    assert ask(hospital, "claims", "Claims:Lines", claim_id)["lines"][0]["code"] == "99499"
    stored = ask(hospital, "claims", "Claims:Get", claim_id)
    assert (stored["provider"], stored["status"] != "cancelled", stored["linesPurged"]) == ("HospitalMSP", True, False)


def test_a_patient_certificate_does_not_act_for_its_org_on_the_pharma_channel(
    gateways: dict[str, GatewayHttp], gateway_as: GatewayAs, mint: Mint
) -> None:
    pharma, hospital = gateway_as("PharmaOrg"), gateway_as("HospitalOrg")
    patient_app = confirmed_patient_certificate(gateways, gateway_as, mint)
    says = "patient's own identity"
    gtin, serial = "00300123456785", f"PAT{secrets.token_hex(6).upper()}"
    call(
        pharma,
        "pharma",
        "Supply:Commission",
        json.dumps({"gtin": gtin, "serial": serial, "lot": "LOT9", "expiry": "2031-01-31"}),
    )
    call(pharma, "pharma", "Supply:Ship", gtin, serial, "HospitalMSP")

    # The pack is addressed to the hospital: the patient's certificate may not receive it in the hospital's name.
    refused_with("FORBIDDEN", lambda: call(patient_app, "pharma", "Supply:Receive", gtin, serial), says)
    assert ask(hospital, "pharma", "Supply:Get", gtin, serial)["state"] == "in_transit"
    call(hospital, "pharma", "Supply:Receive", gtin, serial)  # the control: the hospital's own client
    # Held by the hospital: the patient's certificate may not dispense it, ship it on, or report on it.
    for fn, args in (
        ("Supply:Dispense", [gtin, serial]),
        ("Supply:Ship", [gtin, serial, "ClinicMSP"]),
        ("Supply:VerifyAndReport", [gtin, serial, "LOT9", "2031-01-31"]),
    ):
        refused_with("FORBIDDEN", lambda f=fn, a=args: call(patient_app, "pharma", f, *a), says)
    unit = ask(hospital, "pharma", "Supply:Get", gtin, serial)
    assert (unit["state"], unit["custodian"]) == ("active", "HospitalMSP")
    history = ask(hospital, "pharma", "Supply:History", gtin, serial)
    assert [e["bizStep"] for e in history] == ["commissioning", "shipping", "receiving"]


# ----- 11. a refused bundle lists every problem -----------------------------------------------------------------------


def test_a_transaction_with_several_invalid_entries_is_refused_once_with_every_problem(
    gateways: dict[str, GatewayHttp],
) -> None:
    """One transaction, eight distinct problems in seven entries (a bad code, two bad elements of one Patient, a PUT
    to a non-id, a reference to no entry, a DELETE, a repeated fullUrl, an entry that is no object) beside a valid
    Patient: one 422 OperationOutcome lists every problem, each with the expression of its element, and nothing of
    the bundle is stored, not even the valid entry. Past 100 problems the list is capped, its last issue saying how
    many more there are."""
    hospital = gateways["HospitalOrg"]
    gen = synthetic.Synthetic.seeded(None)
    mpi = gen.mpi_value()
    patient_entry, observation_entry = gen.transaction(2, mpi)["entry"]

    def observation(**changes: Any) -> dict[str, Any]:
        entry: dict[str, Any] = json.loads(json.dumps(observation_entry))
        entry["fullUrl"] = f"urn:uuid:{uuid.uuid4()}"
        entry["resource"] |= changes
        return entry

    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            patient_entry,  # valid
            observation(status="bogus"),
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {**gen.patient(), "gender": "robot", "birthDate": "not-a-date"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"resource": gen.patient(), "request": {"method": "PUT", "url": "Patient/a b"}},
            observation(subject={"reference": f"urn:uuid:{uuid.uuid4()}"}),
            {"resource": gen.patient(), "request": {"method": "DELETE", "url": "Patient/x"}},
            {**patient_entry, "resource": gen.patient()},  # the first entry's fullUrl again
            5,
        ],
    }
    before = rows(hospital)
    refused = hospital.post("", bundle)
    assert refused.status_code == 422, refused.text
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issues = outcome["issue"]
    assert all(i["severity"] == "error" and i["diagnostics"] for i in issues), issues
    assert all(len(i.get("expression", [])) == 1 for i in issues), issues
    assert sorted((i["expression"][0], i["code"]) for i in issues) == [
        ("Bundle.entry[1].resource.status", "code-invalid"),
        ("Bundle.entry[2].resource.birthDate", "structure"),
        ("Bundle.entry[2].resource.gender", "code-invalid"),
        ("Bundle.entry[3].request.url", "value"),
        ("Bundle.entry[4].resource.subject.reference", "invariant"),
        ("Bundle.entry[5].request.method", "not-supported"),
        ("Bundle.entry[6].fullUrl", "invariant"),
        ("Bundle.entry[7]", "structure"),
    ]
    assert rows(hospital) == before
    found = hospital.get("/Patient", params={"identifier": f"{MPI}|{mpi}"})
    assert found.status_code == 200 and found.json()["total"] == 0, found.text

    # 150 bad entries: 99 listed, each its own, and a last issue that says 51 more are not.
    many = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [observation(status="bogus", subject={"reference": "Patient/x"}) for _ in range(150)],
    }
    capped = hospital.post("", many)
    assert capped.status_code == 422, capped.text
    issues = capped.json()["issue"]
    assert len(issues) == 100
    assert [i["expression"] for i in issues[:99]] == [[f"Bundle.entry[{n}].resource.status"] for n in range(99)]
    assert issues[99]["code"] == "too-costly" and "51 more" in issues[99]["diagnostics"], issues[99]
    assert rows(hospital) == before


# ----- 3. erasure of one patient and everyone's search ----------------------------------------------------------------
# Last in this module: it leaves an erased patient in ClinicOrg's store, which is what it tests.


def test_erasing_one_patient_does_not_break_patient_search_for_everyone(gateways: dict[str, GatewayHttp]) -> None:
    clinic = gateways["ClinicOrg"]
    kept, _, kept_held = new_patient(clinic, 2)
    erased, _, erased_held = new_patient(clinic, 2)
    assert clinic.post(f"/Patient/{erased}/$erase", {}).status_code == 200
    assert clinic.get(f"/Patient/{erased}").status_code == 410
    assert clinic.get(f"/{erased_held[1]}").status_code == 410

    for rtype, wanted, gone in (("Patient", kept, erased), ("Observation", None, None)):
        page = clinic.get(f"/{rtype}", params={"_count": "500"})
        assert page.status_code == 200, (rtype, page.text)
        ids = {e["resource"]["id"] for e in page.json().get("entry", [])}
        assert wanted is None or wanted in ids
        assert gone is None or gone not in ids
    by_id = clinic.get("/Patient", params={"_id": f"{kept},{erased}"})
    assert by_id.status_code == 200, by_id.text
    assert [e["resource"]["id"] for e in by_id.json()["entry"]] == [kept]
    assert clinic.get(f"/{kept_held[1]}").status_code == 200
