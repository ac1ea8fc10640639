"""Published Synthea R4 bundles, sent as published, through the running gateways on the real network: every entry
created and read back as sent, verified against the ledger, shared with the clinic under the patient's consent, and
the bundles' claims filed and adjudicated by the insurer's workers.

The bundles are tests/data/synthea/*.json (their sources: tests/data/README.md). More published bundles can be run
through the same tests without adding them to the repository: CARELEDGER_EXTRA_BUNDLES names folders of them
(separated by the path separator), each a Synthea patient transaction bundle.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from consortium import connect
from consortium.topology import REPO_ROOT, Topology
from gateway import cli as gateway_cli
from gateway.app import create_app
from gateway.auth import TokenPolicy
from gateway.deps import GatewayConfig, Services
from ledger.contracts import Ledger
from ledger.transport import FabricTransport
from records import synthetic
from records.blobs import attachments
from records.service import Custodian, Records
from records.sharing import Sharing
from records.store import Store
from records.validation import Entry
from tests.conftest import CLAIM_KEY_SYSTEM, TEST_STORE, GatewayHttp, claim_key, org_processes_on
from tests.waiting import wait_for
from workers import cli as worker_cli

pytestmark = pytest.mark.network

CARC_SYSTEM = "https://x12.org/codes/claim-adjustment-reason-codes"
SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"  # the consortium identifier system Synthea patients carry
# Types the hospital files as its own directory records, not under the patient (records.compartments).
DIRECTORY_TYPES = {"Organization", "Practitioner", "PractitionerRole", "Location", "Medication"}
WRITE_TIMEOUT_S = 600.0  # a bundle of hundreds of resources on a loaded 2-core machine


# The in-process gateway of the ledger-refusal test: HospitalOrg's Fabric identity, a token issuer of its own.
HOSPITAL = Custodian("HospitalMSP", "provider")
SIGNING_KEY = ec.generate_private_key(ec.SECP256R1())
TOKENS = TokenPolicy(
    SIGNING_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode(),
    "https://fhir.hospital.test",
    "https://auth.hospital.test",
)


def local_token() -> str:
    claims = {
        "iss": "https://auth.hospital.test",
        "aud": "https://fhir.hospital.test",
        "sub": "ehr-1",
        "scope": "system/*.read system/*.write",
        "exp": int(time.time()) + 900,
    }
    return jwt.encode(claims, SIGNING_KEY, algorithm="ES256")


def bundle_files() -> list[Path]:
    files = sorted((REPO_ROOT / "tests" / "data" / "synthea").glob("*.json"))
    for folder in filter(None, (os.environ.get("CARELEDGER_EXTRA_BUNDLES") or "").split(os.pathsep)):
        files += sorted(Path(folder).glob("*.json"))
    return files


@dataclass
class Posted:
    """One published bundle as the hospital's gateway took it."""

    name: str
    published: dict[str, Any]
    response: dict[str, Any]

    @property
    def locations(self) -> list[str]:
        """Type/id of every entry, in entry order."""
        return [str(e["response"]["location"]).split("/_history")[0] for e in self.response["entry"]]

    @property
    def ssn(self) -> str:
        patient = self.published["entry"][0]["resource"]
        return next(str(i["value"]) for i in patient["identifier"] if i.get("system") == SSN_SYSTEM)

    def of_type(self, rtype: str) -> list[tuple[dict[str, Any], str]]:
        """(published resource, location) of every entry of a type."""
        return [
            (e["resource"], loc)
            for e, loc in zip(self.published["entry"], self.locations, strict=True)
            if e["resource"]["resourceType"] == rtype
        ]


def post_as_published(gateway: GatewayHttp, raw: bytes) -> httpx.Response:
    """POST the file's bytes unchanged. A write whose ledger outcome is not known within the gateway's deadline is
    answered 503; the same request again returns its result once it settles (the request is keyed by its content)."""
    headers = {**gateway.headers(), "Content-Type": "application/fhir+json"}
    deadline = time.monotonic() + WRITE_TIMEOUT_S
    while True:
        r = gateway.http.post("", content=raw, headers=headers, timeout=WRITE_TIMEOUT_S)
        if r.status_code != 503 or time.monotonic() > deadline:
            return r
        time.sleep(float(r.headers.get("retry-after") or 1))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, network: Topology) -> Iterator[str]:
    """Every test here runs twice: the gateways and workers keep their records in SQLite, then in PostgreSQL."""
    with org_processes_on(network, request.param) as found:
        yield found


@pytest.fixture(scope="module")
def claim_workers(network: Topology, gateway_clients: dict[str, GatewayHttp], store: str) -> Iterator[Topology]:
    """Every gateway, and the listeners and workers of the orgs on `claims`, running before any bundle is posted,
    on the module's store."""
    from network import control

    for org in gateway_clients:
        gateway_cli.start(network, org)
    for org in worker_cli.orgs_with_workers(network):
        worker_cli.start_worker(network, org)
        worker_cli.start_listener(network, org)
    wait_for(lambda: all(s["state"] == "RUNNING" and s["live"] for s in control.services(network)), 300, "workers")
    yield network
    for org in worker_cli.orgs_with_workers(network):
        worker_cli.listener_process(network, org).stop()
        worker_cli.worker_process(network, org).stop(timeout=30)


@pytest.fixture(scope="module")
def posted(gateway_clients: dict[str, GatewayHttp], claim_workers: Topology) -> list[Posted]:
    hospital = gateway_clients["HospitalOrg"]
    found = []
    for path in bundle_files():
        raw = path.read_bytes()
        r = post_as_published(hospital, raw)
        assert r.status_code == 200, f"{path.name}: {r.status_code} {r.text[:3000]}"
        found.append(Posted(path.name, json.loads(raw), r.json()))
    return found


def test_every_entry_of_every_published_bundle_is_created(posted: list[Posted]) -> None:
    assert posted, "no bundles in tests/data/synthea"
    for p in posted:
        assert p.response["type"] == "transaction-response"
        assert len(p.response["entry"]) == len(p.published["entry"]), p.name
        statuses = {e["response"]["status"] for e in p.response["entry"]}
        assert statuses == {"201 Created"}, (p.name, statuses)
        types = [loc.split("/")[0] for loc in p.locations]
        assert types == [e["resource"]["resourceType"] for e in p.published["entry"]], p.name


def expected_as_stored(p: Posted, index: int, stored: dict[str, Any]) -> dict[str, Any]:
    """The published resource as the server documents it keeps it:
    - `id` is the id the server assigned (a POST's id is the server's; the published one is ignored, per FHIR);
    - `meta` is the published meta plus the server's `versionId` and `lastUpdated`;
    - every `urn:uuid:` reference to an entry of the bundle names the resource it became (Type/id); every other
      reference (Synthea's conditional `Practitioner?identifier=...`, `Organization?identifier=...`) is unchanged;
    - a Claim also carries its key on chain as an identifier (system urn:careledger:claim), so the EHR can match the
      claim's events to it;
    - an attachment's inline `data` is kept as an encrypted blob (records.blobs): the attachment points at the
      Binary that holds it (`url`), with the content's `size` and SHA-1 `hash`, which must be the published data's.
    Nothing else may differ: every other element, value and number is as published."""
    targets = {e.get("fullUrl"): loc for e, loc in zip(p.published["entry"], p.locations, strict=True)}
    resource = _rewritten(p.published["entry"][index]["resource"], targets)
    rid = p.locations[index].split("/")[1]
    meta = {**(resource.get("meta") or {}), "versionId": "1", "lastUpdated": stored["meta"]["lastUpdated"]}
    resource = {**resource, "id": rid, "meta": meta}
    if resource["resourceType"] == "Claim":
        key = claim_key(stored)
        resource["identifier"] = [*(resource.get("identifier") or []), {"system": CLAIM_KEY_SYSTEM, "value": key}]
    resource = json.loads(json.dumps(resource))
    for published, kept in zip(attachments(resource), attachments(stored), strict=True):
        if "data" in published:
            content = base64.b64decode(published.pop("data"))
            assert str(kept.get("url") or "").startswith("Binary/"), kept
            assert kept.get("size") == len(content), kept
            assert kept.get("hash") == base64.b64encode(hashlib.sha1(content).digest()).decode(), kept
            published |= {"url": kept["url"], "size": kept["size"], "hash": kept["hash"]}
    return resource


def _rewritten(node: Any, targets: dict[Any, str]) -> Any:
    if isinstance(node, dict):
        out = {k: _rewritten(v, targets) for k, v in node.items()}
        if isinstance(out.get("reference"), str) and out["reference"].startswith("urn:uuid:"):
            out["reference"] = targets[out["reference"]]
        return out
    if isinstance(node, list):
        return [_rewritten(v, targets) for v in node]
    return node


def test_every_resource_reads_back_as_published(gateways: dict[str, GatewayHttp], posted: list[Posted]) -> None:
    hospital = gateways["HospitalOrg"]
    for p in posted:
        for i, location in enumerate(p.locations):
            r = hospital.get(f"/{location}")
            assert r.status_code == 200, (p.name, location, r.text[:500])
            stored = r.json()
            assert stored == expected_as_stored(p, i, stored), (p.name, i, location)
            assert r.headers["etag"] == 'W/"1"'


def test_a_sample_of_every_type_verifies_against_the_ledger(
    gateways: dict[str, GatewayHttp], posted: list[Posted]
) -> None:
    hospital = gateways["HospitalOrg"]
    for p in posted:
        for rtype in sorted({loc.split("/")[0] for loc in p.locations}):
            samples = p.of_type(rtype)
            for _, location in (samples[0], samples[-1]):
                if rtype == "Claim":  # on chain once the claim outbox filed it, after the bundle committed
                    state = wait_for(partial(filed, hospital, location), 300, f"{location} filed")
                    assert state["state"] == "submitted", state
                r = hospital.get(f"/{location}/$verify")
                assert r.status_code == 200, (p.name, location, r.text[:500])
                result = {x["name"]: x for x in r.json()["parameter"]}
                assert result["result"]["valueBoolean"] is True, (p.name, location, r.json())


def everything(gateway: GatewayHttp, first: str) -> list[dict[str, Any]]:
    """Every resource of $everything, following the next links page by page."""
    found: list[dict[str, Any]] = []
    url: str | None = first
    while url is not None:
        r = gateway.get(url)
        assert r.status_code == 200, r.text[:1000]
        page = r.json()
        found += [e["resource"] for e in page.get("entry") or []]
        url = next((link["url"] for link in page.get("link") or [] if link["relation"] == "next"), None)
    return found


def test_the_clinic_gets_every_resource_once_the_patient_consents(
    gateways: dict[str, GatewayHttp], posted: list[Posted]
) -> None:
    hospital, clinic = gateways["HospitalOrg"], gateways["ClinicOrg"]
    for ssn in sorted({p.ssn for p in posted}):
        of_patient = [p for p in posted if p.ssn == ssn]
        query = f"/Patient/$everything?identifier={SSN_SYSTEM}|{ssn}&purpose=TREAT&_count=50"
        assert clinic.get(query).status_code == 403  # no consent yet
        patient_id = of_patient[0].locations[0].split("/")[1]
        granted = hospital.post("/Consent", synthetic.consent(patient_id, "ClinicMSP"))
        assert granted.status_code == 201, granted.text
        got = {f"{r['resourceType']}/{r['id']}" for r in everything(clinic, query)}
        wanted = {loc for p in of_patient for loc in p.locations if loc.split("/")[0] not in DIRECTORY_TYPES}
        assert wanted <= got, sorted(wanted - got)[:20]
        assert f"Consent/{granted.json()['id']}" in got
        # Revoked, the clinic is refused again (and the module's run on the other store starts without consent).
        revoked = hospital.put(f"/Consent/{granted.json()['id']}", granted.json() | {"status": "inactive"})
        assert revoked.status_code == 200, revoked.text
        assert clinic.get(query).status_code == 403


def submission(gateway: GatewayHttp, claim_location: str) -> dict[str, Any]:
    r = gateway.get(f"/{claim_location}/$submission")
    assert r.status_code == 200, r.text
    return {x["name"]: next(v for k, v in x.items() if k.startswith("value")) for x in r.json()["parameter"]}


CLAIMS_SAMPLE = 3  # claims a bundle whose ClaimResponse is awaited (all are filed; adjudicating all takes minutes)


def filed(hospital: GatewayHttp, location: str) -> dict[str, Any] | None:
    """The Claim's submission once the claim outbox has settled it (None while it is queued)."""
    state = submission(hospital, location)
    return state if state["state"] in ("submitted", "refused", "held") else None


def kept_response(hospital: GatewayHttp, claim_id: str) -> dict[str, Any] | None:
    """The ClaimResponse the hospital's workers keep under the Claim's own id, once the insurer answered."""
    r = hospital.get(f"/ClaimResponse/{claim_id}")
    return r.json() if r.status_code == 200 else None


def submitted_claims(hospital: GatewayHttp, posted: list[Posted]) -> list[tuple[Posted, list[str]]]:
    """Every bundle's Claims once the claim outbox settled them: every one submitted. A claim that bills what an
    earlier one billed (same patient, provider, service date and line codes) is filed as its exact duplicate, for
    the insurer to deny with CARC 18 (`test_an_exact_duplicate_bundle_claim_is_denied_with_carc_18`): the fixtures
    are one synthetic patient as two exporter releases wrote them, so the second bundle bills the first one's
    encounters again."""
    out = []
    for p in posted:
        submitted = []
        for _, location in p.of_type("Claim"):
            state = wait_for(partial(filed, hospital, location), 300, f"{location} filed")
            assert state["state"] == "submitted", state
            submitted.append(location)
        out.append((p, submitted))
    return out


def billed(claim: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """What makes two claims of one patient and provider the same claim: service date and line codes."""
    start = str((claim.get("billablePeriod") or {}).get("start") or claim["item"][0].get("servicedDate"))[:10]
    return start, tuple(sorted(str(i["productOrService"]["coding"][0]["code"]) for i in claim["item"]))


def test_an_exact_duplicate_bundle_claim_is_denied_with_carc_18(
    gateways: dict[str, GatewayHttp], posted: list[Posted], store: str
) -> None:
    """A later bundle's Claim billing what an earlier bundle's billed is answered as a payer answers an exact
    duplicate: a ClaimResponse with every line denied, CARC 18, naming the claim it duplicates."""
    hospital = gateways["HospitalOrg"]
    first, *later = [p for p in posted if p.ssn == posted[0].ssn]
    if not later:
        pytest.skip("one bundle of the patient: no claim billed twice across bundles")
    earlier: dict[tuple[str, tuple[str, ...]], str] = {}
    for c, loc in first.of_type("Claim"):
        earlier.setdefault(billed(c), loc)  # Synthea bills some services twice on one day: the first is the original
    again = next(((c, loc) for p in later for c, loc in p.of_type("Claim") if billed(c) in earlier), None)
    assert again is not None, "the second release of the patient bills none of the first one's claims again"
    claim, location = again
    wait_for(partial(filed, hospital, location), 300, f"{location} filed")
    response = wait_for(partial(kept_response, hospital, location.split("/")[1]), 300, f"the answer to {location}")
    assert {"code": {"coding": [{"system": CARC_SYSTEM, "code": "18"}]}} in response["error"], response
    # The original is the earlier bundle's claim, or the same claim filed by this module's run on the other store.
    note = response["processNote"][0]["text"]
    assert note.startswith("exact duplicate of claim "), note
    if store == TEST_STORE:
        assert submission(hospital, earlier[billed(claim)])["claimKey"] in note, note
    for item in response["item"]:
        benefit = item["adjudication"][1]
        assert benefit["amount"]["value"] == 0 and {"system": CARC_SYSTEM, "code": "18"} in benefit["reason"]["coding"]


def test_the_bundles_claims_are_filed_and_adjudicated(gateways: dict[str, GatewayHttp], posted: list[Posted]) -> None:
    hospital = gateways["HospitalOrg"]
    for _, submitted in submitted_claims(hospital, posted):
        for location in submitted[:CLAIMS_SAMPLE]:
            cid = location.split("/")[1]
            response = wait_for(partial(kept_response, hospital, cid), 300, f"the ClaimResponse to {location}")
            assert response["request"] == {"reference": location}
            assert response["outcome"] in ("complete", "partial", "error"), response


def test_an_adjudicated_bundle_claim_gets_an_explanation_of_benefit(
    gateways: dict[str, GatewayHttp], posted: list[Posted]
) -> None:
    """The insurer keeps, beside its ClaimResponse, the ExplanationOfBenefit of every claim it adjudicated (what a
    payer serves its members through the CMS Patient Access API), named by the claim's key on chain."""
    hospital, insurer = gateways["HospitalOrg"], gateways["InsurerOrg"]
    for _, submitted in submitted_claims(hospital, posted):
        for location in submitted[:CLAIMS_SAMPLE]:
            key = submission(hospital, location)["claimKey"]

            def kept_by_the_insurer(rtype: str, key: str = key) -> dict[str, Any] | None:
                r = insurer.get(f"/{rtype}/{key}")
                return r.json() if r.status_code == 200 else None

            eob = wait_for(partial(kept_by_the_insurer, "ExplanationOfBenefit"), 300, f"the EOB of {location}")
            response = wait_for(partial(kept_by_the_insurer, "ClaimResponse"), 60, f"the response to {location}")
            assert eob["claim"] == {"identifier": {"system": CLAIM_KEY_SYSTEM, "value": key}}
            assert eob["claimResponse"] == {"reference": f"ClaimResponse/{response['id']}"}
            assert eob["outcome"] == "complete" and eob["item"] and eob["total"], eob


def test_a_claim_naming_no_payer_is_filed_with_the_insurer_of_the_patients_coverage(
    gateways: dict[str, GatewayHttp], posted: list[Posted]
) -> None:
    """A Claim whose insurer and coverage name no payer of the consortium (Synthea's "NO_INSURANCE") is filed
    with the payer of the patient's Coverage the hospital holds, found through the payer directory by its payor's
    name, and the insurer answers it."""
    hospital, insurer = gateways["HospitalOrg"], gateways["InsurerOrg"]
    patient_id = posted[0].locations[0].split("/")[1]
    coverage = {
        "resourceType": "Coverage",
        "status": "active",
        "beneficiary": {"reference": f"Patient/{patient_id}"},
        "payor": [{"display": "Humana"}],  # a name of InsurerMSP in the consortium's payer directory
    }
    assert hospital.post("/Coverage", coverage).status_code == 201
    claim = synthetic.claim(patient_id, "-", [("99214", 1, "180.00")], "2025-06-17", "-")
    claim |= {"insurer": {"display": "NO_INSURANCE"}}
    claim["insurance"] = [{"sequence": 1, "focal": True, "coverage": {"display": "NO_INSURANCE"}}]
    r = hospital.post("/Claim", claim)
    assert r.status_code == 201, r.text[:2000]
    key = claim_key(r.json())

    def answered() -> dict[str, Any] | None:
        found = insurer.get(f"/ClaimResponse/{key}")
        return found.json() if found.status_code == 200 else None

    response = wait_for(answered, 300, "the insurer's ClaimResponse")
    assert response["insurer"] == {"identifier": {"system": "urn:careledger:msp", "value": "InsurerMSP"}}
    assert response["outcome"] == "complete", response


class FixedIds(Records):
    """Records that give a bundle's resources the same ids every time: two stores with the same master key then
    register the same ledger keys, as a gateway restored from an old backup would."""

    def _assign_ids(self, entries: list[Entry]) -> dict[int, tuple[str, str, int]]:
        return {e.index: (e.resource["resourceType"], f"refusal-{e.index}", 1) for e in entries}


async def post_through_own_store(network: Topology, store_path: Path, raw: bytes) -> httpx.Response:
    """POST the bundle to a gateway app in this process, as HospitalOrg, over its own store."""
    store = Store(store_path, b"r" * 32)  # every such store derives the same ledger keys from this master key
    try:
        async with connect.async_gateway(network, "HospitalOrg") as gw:
            records = FixedIds(store, Ledger(FabricTransport(gw)), b"c" * 32, network.identity_systems, HOSPITAL)
            app = create_app(Services(GatewayConfig("HospitalMSP", TOKENS), records, Sharing(records, None)))
            headers = {"Authorization": f"Bearer {local_token()}", "Content-Type": "application/fhir+json"}
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
                return await http.post("/fhir", content=raw, headers=headers, timeout=WRITE_TIMEOUT_S)
    finally:
        store.close()


def test_a_ledger_refusal_of_a_published_bundle_leaves_nothing_stored(network: Topology, tmp_path: Path) -> None:
    """The bundle is registered once by one store; a second store (same ledger keys, its own data keys, so other
    digests) sends the very same bundle: the Records contract refuses version 1 of its entries as taken, and the
    second store keeps nothing — no resource, no identifier, no patient key, no queued claim."""
    raw = bundle_files()[0].read_bytes()
    first = asyncio.run(post_through_own_store(network, tmp_path / "first.sqlite", raw))
    assert first.status_code == 200, first.text[:2000]
    refused = asyncio.run(post_through_own_store(network, tmp_path / "second.sqlite", raw))
    assert refused.status_code == 409, refused.text[:2000]
    assert refused.json()["resourceType"] == "OperationOutcome"
    with sqlite3.connect(tmp_path / "second.sqlite") as db:
        for table in ("resources", "identifiers", "patient_keys", "claim_outbox"):
            assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table
