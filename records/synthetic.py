"""Synthetic FHIR R4 patients and records for the demo, the tests and the benchmarks. Nothing here is real: names
are built from syllables, identifiers are random, codes are common LOINC and SNOMED CT codes.

`transaction(n)` gives a transaction Bundle with one new Patient and n - 1 clinical resources that point at it
through `urn:uuid:` references, as an EHR would send a visit.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any

MPI_SYSTEM = "urn:oid:2.16.840.1.113883.3.4711.1"

_SYLLABLES = ["ka", "lo", "mi", "ren", "sa", "to", "vel", "qua", "zor", "bri", "den", "fy", "gal", "hu", "jor"]
_LABS = [  # LOINC code, unit, low, high
    ("718-7", "g/dL", 11.0, 17.5),  # hemoglobin
    ("2345-7", "mg/dL", 65, 140),  # glucose
    ("2160-0", "mg/dL", 0.5, 1.4),  # creatinine
    ("8867-4", "/min", 50, 110),  # heart rate
    ("8310-5", "Cel", 36.0, 38.5),  # body temperature
]
_CONDITIONS = ["44054006", "38341003", "195967001", "233604007", "40055000"]  # diabetes, hypertension, asthma, ...
_PROCEDURES = ["80146002", "73761001", "387713003"]  # appendectomy, colonoscopy, surgical procedure


@dataclass
class Synthetic:
    rng: random.Random

    @classmethod
    def seeded(cls, seed: int | None = None) -> Synthetic:
        return cls(random.Random(seed))

    def _name(self, parts: int) -> str:
        return "".join(self.rng.choice(_SYLLABLES) for _ in range(parts)).capitalize()

    def mpi_value(self) -> str:
        return f"MPI-{self.rng.randrange(10**9):09d}-{self.rng.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}"

    def patient(self, mpi_value: str | None = None) -> dict[str, Any]:
        return {
            "resourceType": "Patient",
            "identifier": [{"system": MPI_SYSTEM, "value": mpi_value or self.mpi_value()}],
            "name": [{"family": self._name(3), "given": [self._name(2)]}],
            "gender": self.rng.choice(["female", "male", "other", "unknown"]),
            "birthDate": f"{self.rng.randint(1930, 2020)}-{self.rng.randint(1, 12):02d}-{self.rng.randint(1, 28):02d}",
        }

    def clinical(self, patient_ref: str, i: int) -> dict[str, Any]:
        """The i-th clinical resource of a visit: mostly observations, some conditions, procedures, encounters."""
        kind = i % 10
        if kind == 7:
            return {
                "resourceType": "Condition",
                "clinicalStatus": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
                },
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": self.rng.choice(_CONDITIONS)}]},
                "subject": {"reference": patient_ref},
            }
        if kind == 8:
            return {
                "resourceType": "Procedure",
                "status": "completed",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": self.rng.choice(_PROCEDURES)}]},
                "subject": {"reference": patient_ref},
            }
        if kind == 9:
            return {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": patient_ref},
            }
        code, unit, low, high = self.rng.choice(_LABS)
        return {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": patient_ref},
            "valueQuantity": {"value": round(self.rng.uniform(low, high), 1), "unit": unit},
        }

    def transaction(self, n: int, mpi_value: str | None = None) -> dict[str, Any]:
        """A transaction Bundle of n entries: a new Patient and n - 1 resources about them."""
        patient_url = f"urn:uuid:{uuid.UUID(int=self.rng.getrandbits(128))}"
        entries = [
            {
                "fullUrl": patient_url,
                "resource": self.patient(mpi_value),
                "request": {"method": "POST", "url": "Patient"},
            }
        ]
        for i in range(n - 1):
            resource = self.clinical(patient_url, i)
            entries.append(
                {
                    "fullUrl": f"urn:uuid:{uuid.UUID(int=self.rng.getrandbits(128))}",
                    "resource": resource,
                    "request": {"method": "POST", "url": resource["resourceType"]},
                }
            )
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def claim(
    patient_id: str, insurer_msp: str, lines: list[tuple[str, int, str]], service_date: str, coverage: str
) -> dict[str, Any]:
    """A FHIR Claim for a Patient held by the provider; lines are (billing code, quantity, unit price)."""
    items = [
        {
            "sequence": i + 1,
            "productOrService": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": code}]},
            "servicedDate": service_date,
            "quantity": {"value": qty},
            "unitPrice": {"value": float(price), "currency": "USD"},
            "net": {"value": float(round(qty * float(price), 2)), "currency": "USD"},
        }
        for i, (code, qty, price) in enumerate(lines)
    ]
    return {
        "resourceType": "Claim",
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "use": "claim",
        "patient": {"reference": f"Patient/{patient_id}"},
        "created": f"{service_date}T12:00:00Z",
        "provider": {"display": "the submitting provider"},
        "insurer": {"identifier": {"system": "urn:careledger:msp", "value": insurer_msp}},
        "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": coverage}}],
        "billablePeriod": {"start": service_date},
        "item": items,
    }


def coverage(mpi_value: str, insurer_msp: str, start: str, end: str) -> dict[str, Any]:
    """An insurer's active Coverage of the patient with this consortium identifier, for the period [start, end]."""
    return {
        "resourceType": "Coverage",
        "status": "active",
        "beneficiary": {"identifier": {"system": MPI_SYSTEM, "value": mpi_value}},
        "payor": [{"identifier": {"system": "urn:careledger:msp", "value": insurer_msp}}],
        "period": {"start": start, "end": end},
    }


def consent(patient_id: str, grantee_msp: str, purpose: str = "TREAT") -> dict[str, Any]:
    """The patient's consent, recorded by the custodian, that another member org may read their record."""
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {
            "type": "permit",
            "actor": [
                {
                    "role": {
                        "coding": [
                            {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}
                        ]
                    },
                    "reference": {"identifier": {"system": "urn:careledger:msp", "value": grantee_msp}},
                }
            ],
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": purpose}],
        },
    }
