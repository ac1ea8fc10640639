"""The CapabilityStatement: exactly what this server supports, no more."""

from __future__ import annotations

from typing import Any

from records import validation as fv

SEARCH_PARAMS = [
    {"name": "patient", "type": "reference"},
    {"name": "_id", "type": "token"},
    {"name": "identifier", "type": "token"},
    {"name": "_lastUpdated", "type": "date"},
    {"name": "_count", "type": "number"},
]
INTERACTIONS = ("read", "vread", "history-instance", "create", "update", "search-type")


def _resource(t: str) -> dict[str, Any]:
    operations = [
        {"name": "verify", "definition": "urn:careledger:operation:verify"},
        {"name": "disclose", "definition": "urn:careledger:operation:disclose"},  # docs/DISCLOSURE.md
    ]
    if t == "Patient":
        operations += [
            {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
            {"name": "erase", "definition": "urn:careledger:operation:erase"},
        ]
    return {
        "type": t,
        "interaction": [{"code": c} for c in INTERACTIONS],
        "versioning": "versioned",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalUpdate": False,
        "searchParam": SEARCH_PARAMS,
        "operation": operations,
    }


def capability_statement(org: str) -> dict[str, Any]:
    audit = {
        "type": "AuditEvent",
        "interaction": [{"code": "search-type"}],
        "searchParam": [{"name": "patient", "type": "reference"}],
    }
    binary = {  # streamed content, stored as encrypted blobs (docs/BLOBS.md); the patient in X-Security-Context
        "type": "Binary",
        "interaction": [{"code": "create"}, {"code": "read"}],
        "operation": [{"name": "verify", "definition": "urn:careledger:operation:verify"}],
    }
    smart = {"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-25",
        "kind": "instance",
        "software": {"name": "CareLedger FHIR gateway"},
        "implementation": {"description": f"CareLedger gateway of {org}"},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "security": {"service": [{"coding": [smart]}]},
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
                "resource": [_resource(t) for t in sorted(fv.PATIENT_ELEMENT)] + [audit, binary],
                "operation": [
                    {"name": "verify-disclosure", "definition": "urn:careledger:operation:verify-disclosure"},
                ],
            }
        ],
    }
