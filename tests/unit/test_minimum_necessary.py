"""Minimum necessary: a consent's resource types, categories and purpose decide exactly what a custodian releases,
for `$everything` and for element disclosures; FHIR Consent → grant carries the categories."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from ledger.contracts import Ledger
from ledger.fake import FakeLedger
from records import fhir_consent
from records.errors import FhirInvalid, Refused
from records.service import Custodian, Records
from records.sharing import Sharing, categories_of
from records.store import Store
from tests import fhir_samples as fhir

OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
KINDS = {"HospitalMSP": "provider", "ClinicMSP": "provider", "InsurerMSP": "insurer"}


def consent(
    types: list[str], categories: list[str], purpose: str = "TREAT", grantee: str = "ClinicMSP"
) -> dict[str, Any]:
    provision: dict[str, Any] = {
        "type": "permit",
        "actor": [{"reference": {"identifier": {"system": "urn:careledger:msp", "value": grantee}}}],
        "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": purpose}],
        "class": [{"system": "http://hl7.org/fhir/resource-types", "code": t} for t in types],
    }
    if categories:
        provision["code"] = [{"coding": [{"system": OBS_CATEGORY, "code": c}]} for c in categories]
    return {
        "resourceType": "Consent",
        "status": "active",
        "patient": {"reference": "Patient/p1"},
        "provision": provision,
    }


def test_consent_carries_types_and_categories_and_refuses_what_it_cannot_enforce() -> None:
    g = fhir_consent.grant(consent(["Observation"], ["laboratory"]), "k" * 64, "p" * 64, "d" * 64)
    assert (g["scope"], g["categories"]) == (["Observation"], ["laboratory"])
    whole = fhir_consent.grant(consent([], []), "k" * 64, "p" * 64, "d" * 64)
    assert (whole["scope"], whole["categories"]) == (["*"], [])
    as_class = consent(["Observation"], [])
    as_class["provision"]["class"].append({"system": OBS_CATEGORY, "code": "vital-signs"})
    assert fhir_consent.grant(as_class, "k" * 64, "p" * 64, "d" * 64)["categories"] == ["vital-signs"]
    refused: list[dict[str, Any]] = []
    loinc = consent(["Observation"], [])
    loinc["provision"]["code"] = [{"coding": [{"system": "http://loinc.org", "code": "718-7"}]}]
    refused.append(loinc)
    nested = consent([], [])
    nested["provision"]["provision"] = [{"type": "deny", "class": [{"code": "Condition"}]}]
    refused.append(nested)
    period = consent([], [])
    period["provision"]["dataPeriod"] = {"start": "2020-01-01"}
    refused.append(period)
    upper = consent(["DiagnosticReport"], [])
    upper["provision"]["code"] = [{"coding": [{"system": OBS_CATEGORY, "code": "LAB"}]}]
    refused.append(upper)
    for c in refused:
        with pytest.raises(FhirInvalid):
            fhir_consent.grant(c, "k" * 64, "p" * 64, "d" * 64)


def test_categories_in_every_shape() -> None:
    assert categories_of({"category": [{"coding": [{"code": "laboratory"}]}]}) == {"laboratory"}
    assert categories_of({"category": {"coding": [{"code": "a"}, {"code": "b"}]}}) == {"a", "b"}
    assert categories_of({"category": ["food", "medication"]}) == {"food", "medication"}
    assert categories_of({}) == set()


def record_of_mixed_kinds(n: int = 2) -> list[dict[str, Any]]:
    def obs(i: int, category: str) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": f"{category}-{i}",
            "status": "final",
            "category": [{"coding": [{"system": OBS_CATEGORY, "code": category}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
            "subject": {"reference": "Patient/p1"},
            "valueQuantity": {"value": 12.0 + i},
        }

    out = [obs(i, "laboratory") for i in range(n)] + [obs(i, "vital-signs") for i in range(n)]
    out += [
        {
            "resourceType": "Immunization",
            "id": f"imm-{i}",
            "status": "completed",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
            "patient": {"reference": "Patient/p1"},
            "occurrenceDateTime": "2025-10-01",
        }
        for i in range(n)
    ]
    out.append(
        {
            "resourceType": "Condition",
            "id": "cond-1",
            "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
        }
    )
    return out


def test_each_consent_releases_exactly_what_it_covers(tmp_path: Path) -> None:
    world = FakeLedger(KINDS)
    store = Store(tmp_path / "h.sqlite", b"h" * 32)
    hospital = Records(
        store,
        Ledger(world.member("HospitalMSP")),
        fhir.CONSORTIUM_KEY,
        fhir.MPI_SYSTEM,
        Custodian("HospitalMSP", "provider"),
    )
    sharing = Sharing(hospital, None)
    pseudonym = hospital.pseudonym_of_identifier(fhir.MPI_SYSTEM, "MPI-1")
    patient = {"resourceType": "Patient", "id": "p1", "identifier": [{"system": fhir.MPI_SYSTEM, "value": "MPI-1"}]}

    async def released(purpose: str = "TREAT") -> set[str]:
        return {f"{r['resourceType']}/{r['id']}" for r in await sharing.disclose(pseudonym, "ClinicMSP", purpose)}

    async def grant(c: dict[str, Any], cid: str) -> None:
        await hospital.ledger.grant(fhir_consent.grant(c, cid * 64, pseudonym, "d" * 64))

    async def scenario() -> None:
        for r in [patient, *record_of_mixed_kinds()]:
            assert await hospital.keep(r, pseudonym)
        with pytest.raises(Refused):
            await released()
        await grant(consent(["Observation"], ["laboratory"]), "a")
        assert await released() == {"Observation/laboratory-0", "Observation/laboratory-1"}
        with pytest.raises(Refused):  # the purpose is part of the grant
            await released("HPAYMT")
        await hospital.ledger.revoke("a" * 64, "d" * 64)
        await grant(consent(["Immunization"], []), "b")
        assert await released() == {"Immunization/imm-0", "Immunization/imm-1"}
        # Elements: only the covered resources, and only the elements asked for.
        docs = await sharing.disclose_elements(
            pseudonym, "ClinicMSP", "TREAT", {"Immunization": ["vaccineCode"], "Observation": ["value[x]"]}
        )
        assert sorted(d["resourceType"] for d in docs) == ["Immunization", "Immunization"]
        assert {e["path"] for d in docs for e in d["elements"]} == {
            "resourceType",
            "vaccineCode.coding[0].code",
            "vaccineCode.coding[0].system",
        }
        await grant(consent([], []), "c")
        everything = await released()
        assert len(everything) == 8 and "Patient/p1" in everything and "Condition/cond-1" in everything
        log = [
            (e["decision"], len(e["coverage"]))
            for e in await hospital.ledger.audit_by_patient(pseudonym, "1970-01-01T00:00:00Z", "9999-12-31T00:00:00Z")
        ]
        assert [d for d, _ in log] == ["deny", "partial", "deny", "partial", "partial", "permit"]

    asyncio.run(scenario())
    store.close()


def test_an_access_request_for_one_resource_decides_by_its_categories(tmp_path: Path) -> None:
    world = FakeLedger(KINDS)
    store = Store(tmp_path / "h.sqlite", b"h" * 32)
    hospital = Records(
        store,
        Ledger(world.member("HospitalMSP")),
        fhir.CONSORTIUM_KEY,
        fhir.MPI_SYSTEM,
        Custodian("HospitalMSP", "provider"),
    )
    pseudonym = hospital.pseudonym_of_identifier(fhir.MPI_SYSTEM, "MPI-2")

    async def scenario() -> None:
        await hospital.keep({"resourceType": "Patient", "id": "p2"}, pseudonym)
        await hospital.ledger.grant(
            fhir_consent.grant(consent(["Observation"], ["laboratory"]), "e" * 64, pseudonym, "d" * 64)
        )
        one = f"Observation/{'1' * 64}"
        lab = await hospital.ledger.record_access(pseudonym, "ClinicMSP", one, "TREAT", ["laboratory"])
        vital = await hospital.ledger.record_access(pseudonym, "ClinicMSP", one, "TREAT", ["vital-signs"])
        typ = await hospital.ledger.record_access(pseudonym, "ClinicMSP", "Observation", "TREAT")
        other = await hospital.ledger.record_access(pseudonym, "ClinicMSP", "Condition", "TREAT")
        assert [x["decision"] for x in (lab, vital, typ, other)] == ["permit", "deny", "partial", "deny"]
        assert json.dumps(typ["coverage"]) == json.dumps(
            [{"consentId": "e" * 64, "scope": ["Observation"], "categories": ["laboratory"]}]
        )

    asyncio.run(scenario())
    store.close()
