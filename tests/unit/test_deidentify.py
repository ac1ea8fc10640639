"""De-identification on REAL Synthea R4 output (tests/data/synthea): every name, identifier, address, phone number
and original date of the input is searched for in the export; plus the Safe Harbor rules one by one, the dataset
digest, and a study's export through the records service over the in-memory ledger."""

from __future__ import annotations

import asyncio
import io
import json
import re
import zipfile
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from ledger.contracts import Ledger
from ledger.fake import FakeLedger
from records import deidentify, fhir_consent
from records.service import Custodian, Records
from records.sharing import Sharing
from records.store import Store
from tests import fhir_samples as fhir

SYNTHEA = sorted((Path(__file__).parent.parent / "data" / "synthea").glob("*.json"))
TODAY = date(2026, 11, 26)
SUBJECT = deidentify.Subject.keyed(b"p" * 32, "STUDY-1")


def resources_of(bundle: Path) -> list[dict[str, Any]]:
    return [e["resource"] for e in json.loads(bundle.read_text())["entry"]]


def walk(node: Any, key: str = "") -> list[tuple[str, Any]]:
    """Every (key, value) pair below a JSON node, values of every depth."""
    out: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append((k, v))
            out += walk(v, k)
    elif isinstance(node, list):
        for v in node:
            out.append((key, v))
            out += walk(v, key)
    return out


def identifying_strings(resources: list[dict[str, Any]]) -> dict[str, set[str]]:
    """What must not survive: names (of the patient, relatives and practitioners in displays), identifiers and
    resource ids, addresses, phone numbers, and every original date (full values as written)."""
    found: dict[str, set[str]] = {k: set() for k in ("name", "identifier", "address", "telecom", "date", "text")}
    for r in resources:
        found["identifier"].add(str(r["id"]))
        for k, v in walk(r):
            if k in ("family", "given", "prefix", "suffix") and isinstance(v, str):
                found["name"].add(v)
            elif k == "display" and isinstance(v, str) and re.search(r"[A-Za-z]+\d{2,3}\b", v):
                found["name"] |= set(re.findall(r"[A-Za-z]+\d{2,3}", v))  # Synthea's names end in digits
            elif k == "identifier" and isinstance(v, dict) and v.get("value"):
                found["identifier"].add(str(v["value"]))
            elif k in ("line", "city", "postalCode", "district") and isinstance(v, str):
                found["address"].add(v)
            elif k in ("latitude", "longitude") or (k == "valueDecimal" and isinstance(v, float) and abs(v) > 40):
                found["address"].add(str(v))
            elif k == "telecom" and isinstance(v, dict) and v.get("value"):
                found["telecom"].add(str(v["value"]))
            elif k == "valueString" and isinstance(v, str):
                found["text"].add(v)
            elif isinstance(v, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}(T.*)?", v):
                found["date"].add(v)
    return found


@pytest.mark.parametrize("bundle", SYNTHEA, ids=[b.stem for b in SYNTHEA])
def test_synthea_output_keeps_no_identifier(bundle: Path) -> None:
    resources = resources_of(bundle)
    exported = deidentify.subject_export(resources, SUBJECT, TODAY)
    text = "\n".join(json.dumps(r, ensure_ascii=False) for r in exported)
    secrets = identifying_strings(resources)
    assert len(secrets["name"]) >= 3 and len(secrets["identifier"]) > 100 and len(secrets["date"]) > 100
    assert secrets["telecom"] and secrets["address"]
    for kind, values in secrets.items():
        leaked = sorted(v for v in values if v in text)
        assert not leaked, f"{kind} in the export: {leaked[:5]}"
    assert not any(
        k in ("display", "text", "div", "note", "identifier", "name", "telecom", "meta") for k, _ in walk(exported)
    )
    # What is exported and what is not.
    types, published = {r["resourceType"] for r in exported}, {r["resourceType"] for r in resources}
    assert {"Patient", "Encounter", "Condition", "Observation", "DiagnosticReport", "CarePlan"} & published <= types
    assert not types & {"Claim", "ExplanationOfBenefit", "DocumentReference", "Provenance", "Medication"}
    patient = next(r for r in exported if r["resourceType"] == "Patient")
    assert patient["id"] == SUBJECT.pseudonym and "birthDate" in patient and "address" in patient
    (address,) = patient["address"]  # the state, and the first three digits of a ZIP code if Safe Harbor allows
    (published,) = next(r for r in resources if r["resourceType"] == "Patient")["address"]
    zip3 = deidentify.zip3(published.get("postalCode") or "")
    assert address == {"state": "MA", "country": "US"} | ({"postalCode": zip3} if zip3 else {})
    assert {e["url"] for e in patient["extension"]} == {
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity",
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
    }
    # References inside the export still resolve; nothing points outside it.
    ids = {f"{r['resourceType']}/{r['id']}" for r in exported}
    refs = [v for k, v in walk(exported) if k == "reference"]
    assert refs and all(ref in ids for ref in refs)
    assert all(
        ref == f"Patient/{SUBJECT.pseudonym}" for k, v in walk(exported) if k == "subject" for ref in [v["reference"]]
    )


def test_dates_move_by_one_secret_offset_per_subject_and_study() -> None:
    resources = resources_of(SYNTHEA[0])
    exported = deidentify.subject_export(resources, SUBJECT, TODAY)
    before = {r["id"]: r for r in resources}
    moved = {r["id"]: r for r in exported}
    enc = [r for r in resources if r["resourceType"] == "Encounter"][:5]
    for r in enc:
        new = moved[SUBJECT.resource_id("Encounter", r["id"])]
        old_start = date.fromisoformat(r["period"]["start"][:10])
        assert (date.fromisoformat(new["period"]["start"][:10]) - old_start).days == SUBJECT.offset_days
        assert new["period"]["start"][10:] == r["period"]["start"][10:]  # time of day and zone kept
    assert len(before) >= len(moved)
    other = deidentify.Subject.keyed(b"p" * 32, "STUDY-2")
    assert (
        other.pseudonym != SUBJECT.pseudonym
        and deidentify.Subject.keyed(b"q" * 32, "STUDY-1").pseudonym != SUBJECT.pseudonym
    )
    assert -365 <= SUBJECT.offset_days <= -1
    assert deidentify.shift("2020-03", -10) == "2020-02" and deidentify.shift("1950", -400) == "1950"


def test_safe_harbor_rules_one_by_one() -> None:
    assert deidentify.zip3("02115") == "021"
    assert deidentify.zip3("03601-1234") == "000"  # 036: 20,000 people or fewer
    assert deidentify.zip3("89301") == "000"
    assert deidentify.zip3("SW1A 1AA") is None
    patient = resources_of(SYNTHEA[0])[0] | {"birthDate": "1930-05-01"}
    patient["address"][0]["postalCode"] = "69201"
    old = deidentify.deidentify(patient, SUBJECT, {}, TODAY)
    assert old is not None and "birthDate" not in old
    assert {"url": deidentify.AGE_90_OR_OLDER, "valueBoolean": True} in old["extension"]
    assert old["address"][0]["postalCode"] == "000"
    died_at_89 = patient | {"birthDate": "1930-05-01", "deceasedDateTime": "2020-01-01T00:00:00Z"}
    young = deidentify.deidentify(died_at_89, SUBJECT, {}, TODAY)
    assert young is not None and young["birthDate"] != "1930-05-01" and "deceasedDateTime" in young
    condition = {
        "resourceType": "Condition",
        "id": "c1",
        "subject": {"reference": "Patient/p"},
        "onsetAge": {"value": 93, "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"},
        "note": [{"text": "seen by Dr. Smith"}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1", "display": "x"}], "text": "x"},
    }
    done = deidentify.deidentify(condition, SUBJECT, {"Patient/p": "Patient/" + SUBJECT.pseudonym}, TODAY)
    assert done == {
        "resourceType": "Condition",
        "id": SUBJECT.resource_id("Condition", "c1"),
        "subject": {"reference": "Patient/" + SUBJECT.pseudonym},
        "onsetAge": {"value": 90, "comparator": ">=", "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]},
    }
    assert deidentify.deidentify({"resourceType": "DocumentReference", "id": "d"}, SUBJECT, {}, TODAY) is None


def test_the_dataset_digest_covers_every_byte_and_the_zip_reads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exported = deidentify.subject_export(resources_of(SYNTHEA[0]), SUBJECT, TODAY)
    files = deidentify.ndjson_files(exported)
    assert "Patient.ndjson" in files and all(f.endswith(b"\n") for f in files.values())
    digest = deidentify.dataset_digest("STUDY-1", "v1", files)
    assert digest == deidentify.dataset_digest("STUDY-1", "v1", deidentify.ndjson_files(list(reversed(exported))))
    changed = dict(files) | {"Patient.ndjson": files["Patient.ndjson"].replace(b"male", b"mala")}
    assert deidentify.dataset_digest("STUDY-1", "v1", changed) != digest
    assert deidentify.dataset_digest("STUDY-1", "v2", files) != digest
    data = deidentify.write_zip("STUDY-1", "v1", files)
    assert data == deidentify.write_zip("STUDY-1", "v1", files)  # the same content, the same bytes
    assert deidentify.read_zip(data) == ("STUDY-1", "v1", files)
    (tmp_path / "e.zip").write_bytes(data)
    assert deidentify.main(["digest", str(tmp_path / "e.zip")]) == 0
    assert json.loads(capsys.readouterr().out)["digest"] == digest


def research_consent(grantee: str, types: list[str]) -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "status": "active",
        "provision": {
            "type": "permit",
            "actor": [{"reference": {"identifier": {"system": "urn:careledger:msp", "value": grantee}}}],
            "purpose": [{"code": "HRESCH"}],
            "class": [{"system": "http://hl7.org/fhir/resource-types", "code": t} for t in types],
        },
    }


def test_a_study_export_follows_enrolment_and_research_consent(tmp_path: Path) -> None:
    """The sponsor (here the custodian itself) gets only enrolled subjects, only under HRESCH consents, only what
    the consent covers; the digest is anchored once and a copy verifies."""
    world = FakeLedger({"HospitalMSP": "provider", "ClinicMSP": "provider"})
    store = Store(tmp_path / "h.sqlite", b"h" * 32)
    hospital = Records(
        store,
        Ledger(world.member("HospitalMSP")),
        fhir.CONSORTIUM_KEY,
        fhir.MPI_SYSTEM,
        Custodian("HospitalMSP", "provider"),
    )
    sharing = Sharing(hospital, None)
    synthea = resources_of(SYNTHEA[0])
    wanted = [r for r in synthea if r["resourceType"] in ("Patient", "Condition", "Observation")][:30]

    async def scenario() -> None:
        subjects = []
        for n in range(3):
            pseudonym = hospital.pseudonym_of_identifier(fhir.MPI_SYSTEM, f"MPI-R{n}")
            pid = f"{wanted[0]['id'][:20]}-{n}"
            for r in wanted:
                text = json.dumps(r).replace(f"urn:uuid:{wanted[0]['id']}", f"Patient/{pid}")
                assert await hospital.keep({**json.loads(text), "id": f"{r['id'][:20]}-{n}"}, pseudonym)
            subjects.append(pseudonym)
        await hospital.ledger.register_study("STUDY-1", "ab" * 32)
        # Subject 0: a whole-record research consent; subject 1: Conditions only; subject 2: not enrolled.
        for n, types in ((0, []), (1, ["Condition", "ResearchSubject"])):
            grant = fhir_consent.grant(research_consent("HospitalMSP", types), f"{n}" * 64, subjects[n], "d" * 64)
            await hospital.ledger.grant(grant)
            await hospital.ledger.enrol("STUDY-1", subjects[n], f"{n}" * 64)
        assert await sharing.research_export("STUDY-1", "ClinicMSP") == []  # not the consented sponsor
        dataset = await sharing.research_dataset("STUDY-1")
        patients = [r for r in dataset if r["resourceType"] == "Patient"]
        assert len(patients) == 1  # subject 1's consent does not cover Patient
        by_subject: dict[str, set[str]] = {}
        for r in dataset:
            ref = r["id"] if r["resourceType"] == "Patient" else r["subject"]["reference"].split("/")[1]
            by_subject.setdefault(ref, set()).add(r["resourceType"])
        assert sorted(map(sorted, by_subject.values())) == [["Condition"], ["Condition", "Observation", "Patient"]]
        assert not set(subjects) & {r["id"] for r in dataset}
        files = deidentify.ndjson_files(dataset)
        digest = deidentify.dataset_digest("STUDY-1", "v1", files)
        await hospital.ledger.anchor_dataset("STUDY-1", "v1", digest)
        assert (await hospital.ledger.verify_dataset("STUDY-1", "v1", digest))["match"]
        assert not (await hospital.ledger.verify_dataset("STUDY-1", "v1", "00" * 32))["match"]

    asyncio.run(scenario())
    store.close()


def test_dataset_routes(tmp_path: Path) -> None:
    from tests.unit.gateway_harness import Gateway

    gw = Gateway(tmp_path)

    async def scenario(g: Gateway) -> None:
        records = g.records
        pseudonym = records.pseudonym_of_identifier(fhir.MPI_SYSTEM, "MPI-Z")
        for r in [r for r in resources_of(SYNTHEA[0]) if r["resourceType"] in ("Patient", "Condition")][:10]:
            await records.keep(r, pseudonym)
        await records.ledger.register_study("S-2", "cd" * 32)
        await records.ledger.grant(
            fhir_consent.grant(research_consent("HospitalMSP", []), "9" * 64, pseudonym, "d" * 64)
        )
        await records.ledger.enrol("S-2", pseudonym, "9" * 64)
        assert (await g.post("/research/studies/S-2/datasets/v1", b"", scope="system/Patient.read")).status_code == 403
        made = await g.post("/research/studies/S-2/datasets/v1", b"")
        assert made.status_code == 200, made.text
        assert made.headers["content-type"] == "application/zip"
        names = zipfile.ZipFile(io.BytesIO(made.content)).namelist()
        assert "manifest.json" in names and "Patient.ndjson" in names
        again = await g.post("/research/studies/S-2/datasets/v1", b"")
        assert again.status_code == 409  # a version is anchored once
        ok = await g.post(
            "/research/studies/S-2/datasets/v1/$verify", made.content, **{"Content-Type": "application/zip"}
        )
        assert ok.status_code == 200 and ok.json()["parameter"][0]["valueBoolean"] is True
        assert ok.json()["parameter"][2]["valueString"] == made.headers["x-dataset-digest"]
        _, _, files = deidentify.read_zip(made.content)
        files["Patient.ndjson"] = files["Patient.ndjson"].replace(b'"male"', b'"female"')
        forged = deidentify.write_zip("S-2", "v1", files)
        bad = await g.post("/research/studies/S-2/datasets/v1/$verify", forged, **{"Content-Type": "application/zip"})
        assert bad.json()["parameter"][0]["valueBoolean"] is False
        junk = await g.post("/research/studies/S-2/datasets/v1/$verify", b"not a zip")
        assert junk.status_code == 422

    try:
        gw.run(scenario)
    finally:
        gw.close()
