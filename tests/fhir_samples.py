"""Synthetic FHIR R4 inputs shared by tests. Every name, identifier and birth date here is invented; the PHI scan
looks for exactly these strings on the ledger."""

from __future__ import annotations

from typing import Any

MPI_SYSTEM = "urn:oid:2.16.840.1.113883.3.4711.1"  # the consortium's master patient index (synthetic)
CONSORTIUM_KEY = b"test-consortium-pseudonym-key-32b"

PATIENTS: list[dict[str, Any]] = [
    {
        "resourceType": "Patient",
        "id": "pat-jane",
        "identifier": [{"system": MPI_SYSTEM, "value": "MPI-70931-QX"}],
        "name": [{"family": "Quenneville", "given": ["Jane", "Ottilie"]}],
        "gender": "female",
        "birthDate": "1961-04-23",
    },
    {
        "resourceType": "Patient",
        "id": "pat-omar",
        "identifier": [{"system": MPI_SYSTEM, "value": "MPI-88412-ZR"}],
        "name": [{"family": "Tarkington-Valdez", "given": ["Omar"]}],
        "gender": "male",
        "birthDate": "1987-11-02",
    },
]


def observation(patient_id: str, obs_id: str, loinc: str, value: float, unit: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "valueQuantity": {"value": value, "unit": unit},
    }


def phi_strings() -> list[str]:
    """Every patient name part, identifier value and birth date above."""
    out: list[str] = []
    for p in PATIENTS:
        out += [i["value"] for i in p["identifier"]]
        for n in p["name"]:
            out += [n["family"], *n["given"]]
        out.append(p["birthDate"])
    return out
