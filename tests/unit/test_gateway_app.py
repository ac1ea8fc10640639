"""The gateway's routes in process, over the in-memory ledger: status codes, OperationOutcomes, scopes, headers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fabric_gateway import CommitStatusFailed
from gateway.app import create_app
from gateway.auth import TokenPolicy
from gateway.deps import GatewayConfig, Services
from ledger.contracts import Ledger
from ledger.errors import LedgerConflict
from ledger.fake import FakeLedger
from records import synthetic
from records.service import Custodian, Records
from records.sharing import Sharing
from records.store import Query, Store
from tests import fhir_samples as fhir

ISSUER, AUDIENCE = "https://auth.test", "https://gateway.test/fhir"
KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_PEM = (
    KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
)
WRITE = "system/*.read system/*.write"


def token(scope: str = WRITE) -> dict[str, str]:
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "ehr", "scope": scope, "exp": int(time.time()) + 60}
    return {"Authorization": f"Bearer {jwt.encode(claims, KEY, algorithm='ES256')}"}


class Gateway:
    def __init__(self, world: FakeLedger, records: Records, http: httpx.AsyncClient) -> None:
        self.world = world
        self.records = records
        self.http = http

    async def post(self, path: str, body: Any, scope: str = WRITE) -> httpx.Response:
        headers = {**token(scope), "Content-Type": "application/fhir+json"}
        return await self.http.post(path, content=json.dumps(body), headers=headers)

    async def get(self, path: str, scope: str = WRITE) -> httpx.Response:
        return await self.http.get(path, headers=token(scope))


Scenario = Callable[[Gateway], Awaitable[None]]


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Callable[[Scenario], None]]:
    world = FakeLedger({"HospitalMSP": "provider", "InsurerMSP": "insurer"})
    store = Store(tmp_path / "store.sqlite", b"k" * 32)
    custodian = Custodian("HospitalMSP", "provider")
    records = Records(store, Ledger(world.member("HospitalMSP")), fhir.CONSORTIUM_KEY, fhir.MPI_SYSTEM, custodian)
    config = GatewayConfig("HospitalMSP", TokenPolicy(PUBLIC_PEM, AUDIENCE, ISSUER))
    app = create_app(Services(config, records, Sharing(records, None)))

    def go(scenario: Scenario) -> None:
        async def main() -> None:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
                await scenario(Gateway(world, records, http))

        asyncio.run(main())

    yield go
    store.close()


def stored(records: Records, rtype: str) -> int:
    return records.store.search(Query(rtype))[0]


def test_the_capability_statement_needs_no_token(run: Callable[[Scenario], None]) -> None:
    async def scenario(gw: Gateway) -> None:
        r = await gw.http.get("/fhir/metadata")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/fhir+json")
        assert r.json()["resourceType"] == "CapabilityStatement"

    run(scenario)


def test_a_transaction_is_answered_per_entry_and_reads_back(run: Callable[[Scenario], None]) -> None:
    async def scenario(gw: Gateway) -> None:
        r = await gw.post("/fhir", synthetic.Synthetic.seeded(3).transaction(4))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["type"] == "transaction-response"
        locations = [e["response"]["location"] for e in body["entry"]]
        assert all(e["response"]["status"] == "201 Created" for e in body["entry"])
        rtype, rid, _, version = locations[1].split("/")
        read = await gw.get(f"/fhir/{rtype}/{rid}")
        assert read.status_code == 200 and read.headers["etag"] == f'W/"{version}"'
        verify = await gw.get(f"/fhir/{rtype}/{rid}/$verify")
        assert verify.json()["parameter"][0] == {"name": "result", "valueBoolean": True}
        patient_id = locations[0].split("/")[1]
        found = await gw.get(f"/fhir/{rtype}?patient=Patient/{patient_id}")
        assert found.json()["total"] >= 1

    run(scenario)


def test_tokens_and_scopes_are_checked(run: Callable[[Scenario], None]) -> None:
    async def scenario(gw: Gateway) -> None:
        assert (await gw.http.get("/fhir/Patient")).status_code == 401
        r = await gw.post("/fhir", synthetic.Synthetic.seeded(4).transaction(2), scope="system/*.read")
        assert r.status_code == 403
        assert r.json()["issue"][0]["code"] == "forbidden"
        assert stored(gw.records, "Patient") == 0

    run(scenario)


def test_an_invalid_entry_is_named_and_nothing_is_stored(run: Callable[[Scenario], None]) -> None:
    async def scenario(gw: Gateway) -> None:
        bundle = synthetic.Synthetic.seeded(5).transaction(3)
        bundle["entry"][0]["resource"]["gender"] = "unknown-to-fhir"
        r = await gw.post("/fhir", bundle)
        assert r.status_code == 422
        assert r.json()["issue"][0]["expression"] == ["Bundle.entry[0].resource.gender"]
        assert stored(gw.records, "Patient") == 0

    run(scenario)


def test_a_ledger_refusal_is_a_conflict_and_leaves_nothing(run: Callable[[Scenario], None]) -> None:
    async def scenario(gw: Gateway) -> None:
        gw.world.fail_next("Records:Register", LedgerConflict("not the next version"))
        r = await gw.post("/fhir", synthetic.Synthetic.seeded(6).transaction(3))
        assert r.status_code == 409
        assert stored(gw.records, "Patient") == 0

    run(scenario)


def test_an_unknown_outcome_asks_for_a_retry(run: Callable[[Scenario], None]) -> None:
    async def scenario(gw: Gateway) -> None:
        gw.world.fail_next("Records:Register", CommitStatusFailed("commit_status", "UNAVAILABLE", "peer gone"))
        r = await gw.post("/fhir", synthetic.Synthetic.seeded(7).transaction(3))
        assert r.status_code == 504
        assert r.headers["retry-after"]
        assert stored(gw.records, "Patient") == 0

    run(scenario)


def test_member_routes_need_a_member_certificate(run: Callable[[Scenario], None]) -> None:
    async def scenario(gw: Gateway) -> None:
        r = await gw.get(f"/federation/everything/{'a' * 64}")
        assert r.status_code == 404  # this gateway was made without federation: it answers no member

    run(scenario)
