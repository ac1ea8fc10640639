"""Search and $everything pages over HTTP, in process, on SQLite and on PostgreSQL: next links carry a cursor, every
resource comes once however the record grows meanwhile, and $everything brings the other custodians' part on its
first page only."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.app import create_app
from gateway.auth import TokenPolicy
from gateway.deps import GatewayConfig, Services
from ledger.contracts import Ledger
from ledger.fake import FakeLedger
from records import synthetic
from records import validation as fv
from records.federation import Disclosed
from records.service import Custodian, Records, now_instant
from records.sharing import Sharing
from records.store import Row
from tests import fhir_samples as fhir
from tests.stores import Stores

ISSUER, AUDIENCE = "https://auth.test", "https://gateway.test/fhir"
KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_PEM = (
    KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
)
OWN = 1200  # Observations of the patient besides the first visit


def headers() -> dict[str, str]:
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "ehr", "scope": "system/*.read", "exp": int(time.time()) + 300}
    return {"Authorization": f"Bearer {jwt.encode(claims, KEY, algorithm='ES256')}"}


class OtherCustodian:
    """Stands in for the member gateways: the clinic discloses three resources, and we count how often it is asked."""

    def __init__(self) -> None:
        self.asked = 0
        self.resources = [{"resourceType": "Observation", "id": f"clinic-{i}", "status": "final"} for i in range(3)]

    async def everything(self, custodians: dict[str, str], purpose: str) -> list[Disclosed]:
        self.asked += 1
        assert list(custodians) == ["ClinicMSP"]
        return [Disclosed("ClinicMSP", "https://clinic.test", self.resources)]


class Hospital:
    def __init__(self, records: Records, clinic: OtherCustodian, patient_id: str, pseudonym: str) -> None:
        self.records = records
        self.clinic = clinic
        self.patient_id = patient_id
        self.pseudonym = pseudonym
        self.added = 0

    def add_observation(self, rid: str) -> None:
        """A resource created while a client pages (straight into the store: the ledger is not the point here)."""
        content = json.dumps({"resourceType": "Observation", "id": rid, "status": "final"}).encode()
        self.records.store.stage(rid, [Row("Observation", rid, 1, self.pseudonym, now_instant(), content)])
        self.records.store.commit(rid, f"tx-{rid}")


@pytest.fixture
def hospital(stores: Stores) -> Iterator[Hospital]:
    world = FakeLedger({"HospitalMSP": "provider", "ClinicMSP": "provider"})
    hospital = Records(
        stores.open(b"h" * 32, "hospital"),
        Ledger(world.member("HospitalMSP")),
        fhir.CONSORTIUM_KEY,
        fhir.MPI_SYSTEM,
        Custodian("HospitalMSP", "provider"),
    )
    clinic = Records(
        stores.open(b"c" * 32, "clinic"),
        Ledger(world.member("ClinicMSP")),
        fhir.CONSORTIUM_KEY,
        fhir.MPI_SYSTEM,
        Custodian("ClinicMSP", "provider"),
    )
    gen = synthetic.Synthetic.seeded(11)
    mpi = gen.mpi_value()
    visit = fv.transaction_entries(fv.envelope(json.dumps(gen.transaction(10, mpi)).encode()))
    patient = asyncio.run(hospital.transaction(visit))[0]
    clinic_visit = fv.transaction_entries(fv.envelope(json.dumps(gen.transaction(2, mpi)).encode()))
    asyncio.run(clinic.transaction(clinic_visit))  # the ledger now lists both as the patient's custodians
    pseudonym = hospital.pseudonym_of_identifier(fhir.MPI_SYSTEM, mpi)
    found = Hospital(hospital, OtherCustodian(), patient.id, pseudonym)
    for i in range(0, OWN, 400):
        rows = [
            Row("Observation", f"obs-{n:05d}", 1, pseudonym, now_instant(), _observation(f"obs-{n:05d}"))
            for n in range(i, i + 400)
        ]
        found.records.store.stage(f"bulk-{i}", rows)
        found.records.store.commit(f"bulk-{i}", "tx-bulk")
    yield found
    hospital.store.close()
    clinic.store.close()


def _observation(rid: str) -> bytes:
    return json.dumps({"resourceType": "Observation", "id": rid, "status": "final"}).encode()


def call(hospital: Hospital, paths: list[str] | None = None, follow: str | None = None, between: Any = None) -> Any:
    """GET each path; with `follow`, GET it and then every next link, calling `between()` after each page."""
    sharing = Sharing(hospital.records, hospital.clinic)  # type: ignore[arg-type]
    config = GatewayConfig("HospitalMSP", TokenPolicy(PUBLIC_PEM, AUDIENCE, ISSUER))
    app = create_app(Services(config, hospital.records, sharing))

    async def main() -> Any:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            if paths is not None:
                return [await http.get(p, headers=headers()) for p in paths]
            pages = []
            url: str | None = follow
            while url is not None:
                r = await http.get(url, headers=headers())
                assert r.status_code == 200, r.text
                pages.append(r.json())
                links = {link["relation"]: link["url"] for link in r.json()["link"]}
                assert links["self"].startswith("http://gw/fhir/")
                url = links.get("next")
                if url is not None and between is not None:
                    between()
            return pages

    return asyncio.run(main())


def ids(page: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in page["entry"] if e["search"]["mode"] == "match"]


def test_search_pages_follow_next_links_while_the_record_grows(hospital: Hospital) -> None:
    def add() -> None:
        hospital.add_observation(f"added-{hospital.added}")
        hospital.added += 1

    pages = call(hospital, follow=f"/fhir/Observation?patient=Patient/{hospital.patient_id}&_count=100", between=add)
    seen = [i for p in pages for i in ids(p)]
    assert len(seen) == len(set(seen))
    assert {f"obs-{n:05d}" for n in range(OWN)} | {f"added-{n}" for n in range(hospital.added)} <= set(seen)
    assert hospital.added == len(pages) - 1 and seen[-hospital.added :] == [f"added-{n}" for n in range(hospital.added)]
    assert pages[0]["total"] == len(seen) - hospital.added  # what matched when the first page was read
    assert all(len(ids(p)) == 100 for p in pages[:-1])


def test_offsets_and_foreign_cursors_are_refused(hospital: Hospital) -> None:
    offset, garbage = call(hospital, ["/fhir/Observation?_offset=100", "/fhir/Observation?_cursor=not-ours"])
    assert offset.status_code == 400 and "next link" in offset.json()["issue"][0]["diagnostics"]
    assert garbage.status_code == 400 and garbage.json()["issue"][0]["expression"] == ["_cursor"]


def test_everything_is_paged_and_the_other_custodians_part_comes_on_the_first_page(hospital: Hospital) -> None:
    pages = call(hospital, follow=f"/fhir/Patient/{hospital.patient_id}/$everything?_count=250")
    own_total = OWN + 10
    assert len(pages) == 5 and hospital.clinic.asked == 1
    first, *later = pages
    assert first["total"] == own_total + 3
    assert [e["fullUrl"] for e in first["entry"][-3:]] == [
        f"https://clinic.test/fhir/Observation/clinic-{i}" for i in range(3)
    ]
    assert len(first["entry"]) == 250 + 3
    assert all("total" not in p for p in later)
    own = [e["fullUrl"] for p in pages for e in p["entry"] if e["fullUrl"].startswith("http://gw/")]
    assert len(own) == len(set(own)) == own_total
    assert "_count=250" in first["link"][1]["url"] and "_cursor=" in first["link"][1]["url"]


def test_everything_pages_hold_100_resources_unless_asked_and_1000_at_most(hospital: Hospital) -> None:
    default, too_many = call(
        hospital,
        [
            f"/fhir/Patient/{hospital.patient_id}/$everything",
            f"/fhir/Patient/{hospital.patient_id}/$everything?_count=1001",
        ],
    )
    assert default.status_code == 200 and len(default.json()["entry"]) == 100 + 3
    assert too_many.status_code == 400
