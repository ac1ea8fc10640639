"""The FHIR gateway's HTTP API, in process, on the real network: bundles, validation, verify, erase, tokens. Each test
runs with the custodian store in SQLite and in PostgreSQL (the test network's own cluster)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from consortium import connect
from consortium.topology import Topology
from gateway.app import create_app
from gateway.auth import TokenPolicy
from gateway.deps import GatewayConfig, Services
from ledger.contracts import Ledger
from ledger.transport import FabricTransport
from network import postgres_server
from records.service import Custodian, Records
from records.sharing import Sharing
from tests import fhir_samples as fhir
from tests.stores import Stores

pytestmark = pytest.mark.network
DATABASE = "gateway_tests"  # one schema per test in it

ISSUER, AUDIENCE = "https://auth.hospital.test", "https://fhir.hospital.test"
SIGNING_KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_PEM = (
    SIGNING_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def token(scope: str = "system/*.read system/*.write") -> str:
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "ehr-1", "scope": scope, "exp": int(time.time()) + 300}
    return jwt.encode(claims, SIGNING_KEY, algorithm="ES256")


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, network: Topology, tmp_path: Path) -> Iterator[Stores]:
    pg = None
    if request.param == "postgresql":
        postgres_server.ensure_databases(network, [DATABASE])
        pg = network
    found = Stores(request.param, tmp_path, pg, DATABASE)
    yield found
    found.cleanup()


@dataclass
class Stack:
    http: httpx.AsyncClient
    records: Records
    stores: Stores

    def rows(self) -> int:
        """The resource rows in the store, read behind its back."""
        return int(self.stores.sql("SELECT COUNT(*) FROM resources")[0][0])

    async def post(self, path: str, body: Any, scope: str | None = None) -> httpx.Response:
        headers = {
            "Authorization": f"Bearer {token(scope) if scope else token()}",
            "Content-Type": "application/fhir+json",
        }
        return await self.http.post(path, content=json.dumps(body), headers=headers)

    async def get(self, path: str) -> httpx.Response:
        return await self.http.get(path, headers={"Authorization": f"Bearer {token()}"})


@asynccontextmanager
async def hospital_gateway(network: Topology, stores: Stores) -> AsyncIterator[Stack]:
    store = stores.open()
    async with connect.async_gateway(network, "HospitalOrg") as gw:
        custodian = Custodian("HospitalMSP", "provider")
        records = Records(store, Ledger(FabricTransport(gw)), fhir.CONSORTIUM_KEY, fhir.MPI_SYSTEM, custodian)
        config = GatewayConfig("HospitalMSP", TokenPolicy(PUBLIC_PEM, AUDIENCE, ISSUER))
        app = create_app(Services(config, records, Sharing(records, None)))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            yield Stack(http, records, stores)
    store.close()


def run(network: Topology, stores: Stores, scenario: Callable[[Stack], Awaitable[None]]) -> None:
    async def main() -> None:
        async with hospital_gateway(network, stores) as stack:
            await scenario(stack)

    asyncio.run(main())


def synthetic_bundle(n_observations: int, mpi_value: str | None = None) -> dict[str, Any]:
    """A transaction: one new Patient and n Observations/Conditions pointing at it through urn:uuid references."""
    patient = json.loads(json.dumps(fhir.PATIENTS[0]))
    patient.pop("id")
    patient["identifier"][0]["value"] = mpi_value or f"MPI-{uuid.uuid4().hex[:10]}"
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    entries: list[dict[str, Any]] = [
        {"fullUrl": patient_url, "resource": patient, "request": {"method": "POST", "url": "Patient"}}
    ]
    for i in range(n_observations):
        if i % 3 == 2:
            resource = {
                "resourceType": "Condition",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
                "subject": {"reference": patient_url},
            }
        else:
            resource = fhir.observation("x", "x", "718-7", 12.0 + i / 10, "g/dL")
            resource.pop("id")
            resource["subject"] = {"reference": patient_url}
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def test_transaction_bundle_of_100_commits_atomically_and_reads_back(network: Topology, stores: Stores) -> None:
    async def scenario(s: Stack) -> None:
        bundle = synthetic_bundle(99)
        r = await s.post("/fhir", bundle)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/fhir+json")
        out = r.json()
        assert out["type"] == "transaction-response" and len(out["entry"]) == 100
        assert all(e["response"]["status"] == "201 Created" for e in out["entry"])
        patient_loc = out["entry"][0]["response"]["location"]
        obs_loc = out["entry"][1]["response"]["location"]
        obs = await s.get("/fhir/" + obs_loc.split("/_history")[0])
        assert obs.status_code == 200 and obs.headers["etag"] == 'W/"1"'
        assert obs.json()["subject"]["reference"] == patient_loc.split("/_history")[0]  # urn:uuid resolved
        # Every entry is in the ledger's index, in one transaction.
        patient_id = patient_loc.split("/")[1]
        stored = s.records.read("Patient", patient_id)
        assert stored is not None
        page = await s.records.ledger.evaluate("providers", "Records:PatientIndex", stored.patient, "1000", "")
        assert len(page["records"]) == 100 and len({rec["txId"] for rec in page["records"]}) == 1

    run(network, stores, scenario)


def test_a_bundle_with_one_bad_entry_commits_nothing(network: Topology, stores: Stores) -> None:
    async def scenario(s: Stack) -> None:
        cases = [
            (
                "gender",
                lambda b: b["entry"][0]["resource"].update(gender="xyz"),
                422,
                "Bundle.entry[0].resource.gender",
            ),
            (
                "status",
                lambda b: b["entry"][5]["resource"].update(status="finished"),
                422,
                "Bundle.entry[5].resource.status",
            ),
            (
                "dangling",
                lambda b: b["entry"][7]["resource"].update(subject={"reference": "urn:uuid:nowhere"}),
                422,
                "Bundle.entry[7].resource.subject.reference",
            ),
            (
                "duplicate fullUrl",
                lambda b: b["entry"][3].update(fullUrl=b["entry"][2]["fullUrl"]),
                422,
                "Bundle.entry[3].fullUrl",
            ),
            (
                "unknown type",
                lambda b: b["entry"][4].update(resource={"resourceType": "Spaceship"}),
                422,
                "Bundle.entry[4].resource.resourceType",
            ),
            ("bundle type", lambda b: b.update(type="nonsense"), 422, "Bundle.type"),
        ]
        for name, mutate, status, expression in cases:
            bundle = synthetic_bundle(9)
            mutate(bundle)
            r = await s.post("/fhir", bundle)
            assert r.status_code == status, (name, r.text)
            outcome = r.json()
            assert outcome["resourceType"] == "OperationOutcome", name
            assert outcome["issue"][0]["expression"] == [expression], (name, outcome)
        assert s.rows() == 0

        # The ledger refusing (a PUT of another org's resource id would be one; here: a registered version reused)
        # also leaves nothing: the staged rows are discarded.
        first = await s.post("/fhir", synthetic_bundle(2))
        assert first.status_code == 200
        count = s.rows()
        obs_id = first.json()["entry"][1]["response"]["location"].split("/")[1]
        s.stores.sql("DELETE FROM resources WHERE id = ?", (obs_id,))
        obs = fhir.observation("x", obs_id, "718-7", 1.0, "g/dL")
        obs["subject"] = {"reference": first.json()["entry"][0]["response"]["location"].split("/_history")[0]}
        put = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"resource": obs, "request": {"method": "PUT", "url": f"Observation/{obs_id}"}}],
        }
        r = await s.post("/fhir", put)
        assert r.status_code == 409, r.text  # version 1 is registered with another digest
        assert s.rows() == count - 1

    run(network, stores, scenario)


def test_verify_catches_tampering_and_erase_makes_content_unreadable(network: Topology, stores: Stores) -> None:
    async def scenario(s: Stack) -> None:
        r = await s.post("/fhir", synthetic_bundle(2))
        locs = [e["response"]["location"].split("/_history")[0] for e in r.json()["entry"]]
        ok = await s.get(f"/fhir/{locs[1]}/$verify")
        assert ok.json()["parameter"][0]["valueBoolean"] is True

        # Someone with database access flips a byte of a ciphertext.
        rtype, rid = locs[1].split("/")
        ((ct,),) = s.stores.sql("SELECT ciphertext FROM resources WHERE type = ? AND id = ?", (rtype, rid))
        ct = bytes(ct)
        s.stores.sql("UPDATE resources SET ciphertext = ? WHERE id = ?", (bytes([ct[0] ^ 1]) + ct[1:], rid))
        bad = await s.get(f"/fhir/{locs[1]}/$verify")
        assert bad.json()["parameter"][0]["valueBoolean"] is False
        assert "changed in the store" in bad.json()["parameter"][1]["valueString"]

        # An insider with the keys re-encrypts changed content: the ledger digest still catches it.
        from records.store import Row

        stored = s.records.read(*locs[2].split("/"))
        assert stored is not None
        changed = json.loads(stored.content) | {"status": "entered-in-error"}
        s.stores.sql("DELETE FROM resources WHERE id = ?", (stored.id,))
        s.records.store.stage(
            "forged",
            [Row(stored.type, stored.id, 1, stored.patient, stored.last_updated, json.dumps(changed).encode())],
        )
        s.records.store.commit("forged", "forged")
        forged = await s.get(f"/fhir/{locs[2]}/$verify")
        assert forged.json()["parameter"][0]["valueBoolean"] is False

        erased = await s.post(f"/fhir/{locs[0]}/$erase", {})
        assert erased.status_code == 200, erased.text
        gone = await s.get(f"/fhir/{locs[0]}")
        assert gone.status_code == 410 and gone.json()["resourceType"] == "OperationOutcome"
        assert (await s.get(f"/fhir/{locs[2]}")).status_code == 410

    run(network, stores, scenario)


def test_tokens_and_scopes(network: Topology, stores: Stores) -> None:
    async def scenario(s: Stack) -> None:
        no_token = await s.http.post("/fhir", content=json.dumps(synthetic_bundle(1)))
        assert no_token.status_code == 401 and no_token.json()["issue"][0]["code"] == "login"
        read_only = await s.post("/fhir", synthetic_bundle(1), scope="system/*.read")
        assert read_only.status_code == 403
        v2 = await s.post("/fhir", synthetic_bundle(1), scope="system/*.cruds")
        assert v2.status_code == 200
        forged = jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "scope": "system/*.write", "exp": int(time.time()) + 60},
            ec.generate_private_key(ec.SECP256R1()),
            algorithm="ES256",
        )
        r = await s.http.post(
            "/fhir", content=json.dumps(synthetic_bundle(1)), headers={"Authorization": f"Bearer {forged}"}
        )
        assert r.status_code == 401
        meta = await s.http.get("/fhir/metadata")
        assert meta.json()["resourceType"] == "CapabilityStatement"

    run(network, stores, scenario)
