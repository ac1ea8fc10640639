"""Attacks the in-memory ledger is enough to replay (tests/integration/test_attacks.py replays them all on the real
network): a self-made custodian's grant, the federation endpoint as an existence oracle, erasure against everyone's
search; and the PHI registry the scan after the integration tests relies on."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ledger.contracts import Ledger
from records import digests, synthetic
from records.errors import Refused
from records.sharing import Sharing
from tests import fhir_samples as fhir
from tests.conftest import PhiRegistry
from tests.unit.gateway_harness import Gateway


@pytest.fixture
def hospital(tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(tmp_path, "HospitalMSP")
    yield gw
    gw.close()


def visit(gw: Gateway, n: int = 3) -> tuple[str, str, list[str]]:
    """A visit posted through the app: (patient id, pseudonym, Type/id of each resource)."""
    gen = synthetic.Synthetic.seeded(None)
    mpi = gen.mpi_value()
    out: list[Any] = []

    async def post(g: Gateway) -> None:
        r = await g.post("/fhir", gen.transaction(n, mpi))
        assert r.status_code == 200, r.text
        out.append(r.json())

    gw.run(post)
    locations = [e["response"]["location"].split("/_history")[0] for e in out[0]["entry"]]
    return locations[0].split("/")[1], digests.pseudonym(fhir.CONSORTIUM_KEY, fhir.MPI_SYSTEM, mpi), locations


def grant(patient: str, grantee: str) -> dict[str, Any]:
    start = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "consentId": secrets.token_hex(32),
        "patient": patient,
        "grantee": grantee,
        "action": "read",
        "scope": ["*"],
        "purpose": "TREAT",
        "start": start,
        "end": "",
        "documentDigest": secrets.token_hex(32),
    }


def test_a_self_made_custodians_grant_does_not_open_the_real_custodians_records(hospital: Gateway) -> None:
    _, patient, held = visit(hospital)
    clinic = Ledger(hospital.world.member("ClinicMSP"))
    sharing = Sharing(hospital.records, None)
    dummy = {
        "patient": patient,
        "directory": False,
        "resourceType": "Observation",
        "resourceKey": secrets.token_hex(32),
        "version": 1,
        "digest": secrets.token_hex(32),
        "lastUpdated": "2026-01-01T00:00:00Z",
        "size": 1,
    }

    async def attack() -> None:
        await clinic.register([dummy])  # ClinicOrg makes itself a custodian
        await clinic.grant(grant(patient, "ClinicMSP"))  # and grants itself access
        with pytest.raises(Refused):
            await sharing.disclose(patient, "ClinicMSP", "TREAT")
        # The control: a grant the real custodian recorded opens its records.
        await hospital.records.ledger.grant(grant(patient, "ClinicMSP"))
        disclosed = await sharing.disclose(patient, "ClinicMSP", "TREAT")
        assert {f"{r['resourceType']}/{r['id']}" for r in disclosed} == set(held)

    asyncio.run(attack())
    decisions = [e["decision"] for e in asyncio.run(hospital.records.ledger.audit_by_patient(patient, "", ""))]
    assert decisions == ["deny", "permit"]


def test_disclose_refuses_a_held_and_an_unknown_patient_with_the_same_words(hospital: Gateway) -> None:
    _, held, _ = visit(hospital)
    unknown = digests.pseudonym(fhir.CONSORTIUM_KEY, fhir.MPI_SYSTEM, "MPI-never-seen")
    sharing = Sharing(hospital.records, None)

    async def ask(patient: str) -> str:
        with pytest.raises(Refused) as refused:
            await sharing.disclose(patient, "InsurerMSP", "TREAT")
        return str(refused.value)

    assert asyncio.run(ask(held)) == asyncio.run(ask(unknown))
    assert len(asyncio.run(hospital.records.ledger.audit_by_patient(held, "", ""))) == 1  # the held one is logged


def test_erasing_one_patient_does_not_break_search_for_everyone(hospital: Gateway) -> None:
    kept, _, _ = visit(hospital, 2)
    erased, _, _ = visit(hospital, 2)
    found: dict[str, Any] = {}

    async def scenario(g: Gateway) -> None:
        assert (await g.post(f"/fhir/Patient/{erased}/$erase", {})).status_code == 200
        assert (await g.get(f"/fhir/Patient/{erased}")).status_code == 410
        for rtype in ("Patient", "Observation"):
            r = await g.get(f"/fhir/{rtype}")
            assert r.status_code == 200, r.text
            found[rtype] = {e["resource"]["id"] for e in r.json().get("entry", [])}

    hospital.run(scenario)
    assert kept in found["Patient"] and erased not in found["Patient"]


# ----- the PHI registry ----------------------------------------------------------------------------------------------


def test_the_registry_notes_every_identifying_element_of_an_accepted_write() -> None:
    registry = PhiRegistry()
    patient = {
        "resourceType": "Patient",
        "id": "MRN-0042",
        "identifier": [{"system": "urn:mrn", "value": "MRN-0042"}],
        "name": [{"family": "Quist", "given": ["Ada", "Lou"], "text": "Ada Quist"}],
        "birthDate": "1970-01-02",
        "address": [{"line": ["1 Elm Row"], "city": "Dunmore", "postalCode": "DN1 1AA"}],
        "telecom": [{"system": "phone", "value": "+44 1 2345"}],
        "contact": [{"name": {"family": "Quist-Kin", "given": ["Bo"]}}],
    }
    body = json.dumps(patient).encode()
    registry.answered("PUT", "https://gw/fhir/Patient/MRN-0042", body, 201, b"{}")
    assert set(registry.strings) == {
        "MRN-0042",
        "Quist",
        "Ada",
        "Lou",
        "Ada Quist",
        "1970-01-02",
        "1 Elm Row",
        "Dunmore",
        "DN1 1AA",
        "+44 1 2345",
        "Quist-Kin",
        "Bo",
    }


def test_the_registry_notes_only_what_was_accepted() -> None:
    registry = PhiRegistry()
    patient = synthetic.Synthetic.seeded(1).patient()
    refused = {**patient, "name": [{"family": "Refusedname"}]}
    registry.answered("POST", "https://gw/fhir/Patient", json.dumps(refused), 422, b"{}")
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": patient, "request": {"method": "PUT", "url": "Patient/chosen-id"}},
            {"resource": refused, "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    answer = {"entry": [{"response": {"status": "201 Created"}}, {"response": {"status": "422"}}]}
    registry.answered("POST", "https://gw/fhir", json.dumps(batch), 200, json.dumps(answer).encode())
    assert patient["name"][0]["family"] in registry.strings and "chosen-id" in registry.strings
    assert "Refusedname" not in registry.strings
    with registry.paused():
        registry.answered("POST", "https://gw/fhir/Patient", json.dumps(refused), 201, b"{}")
    assert "Refusedname" not in registry.strings
