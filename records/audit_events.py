"""The on-chain access log (Audit contract entries) rendered as FHIR R4 AuditEvents.

One entry is one decision a custodian logged in the same transaction that checked consent: who asked (accessor),
who holds the data (custodian), for what purpose, permit or deny and why. The Fabric transaction id is kept as an
entity identifier, so anyone on the channel can find the entry in the ledger.
"""

from __future__ import annotations

from typing import Any

from records.fhir_claim import MSP_SYSTEM

FABRIC_TX_SYSTEM = "urn:careledger:fabric-tx"
PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
CONSENT_KEY_SYSTEM = "urn:careledger:consent"  # a consent's key on chain


def _who(accessor: str) -> dict[str, Any]:
    if accessor.startswith("practitioner:"):
        system, _, value = accessor.removeprefix("practitioner:").partition("|")
        return {"identifier": {"system": system, "value": value}, "type": "Practitioner"}
    return {"identifier": {"system": MSP_SYSTEM, "value": accessor}, "type": "Organization"}


def _consent(key: str, reference: str | None) -> list[dict[str, Any]]:
    if reference is not None:
        return [{"what": {"reference": reference, "identifier": {"system": CONSENT_KEY_SYSTEM, "value": key}}}]
    return [{"what": {"identifier": {"system": CONSENT_KEY_SYSTEM, "value": key}}}] if key else []


def audit_event(entry: dict[str, Any], patient_reference: str, consent_reference: str | None) -> dict[str, Any]:
    """One AuditEvent for one ledger audit entry; `patient_reference` is the patient as this gateway knows it, and
    `consent_reference` the Consent it holds that the decision rests on (None when it holds none: the consent is
    then named by its key on chain)."""
    permitted = entry["decision"] in ("permit", "partial")
    return {
        "resourceType": "AuditEvent",
        "id": entry["txId"],
        "type": {
            "system": "http://dicom.nema.org/resources/ontology/DCM",
            "code": "110110",
            "display": "Patient Record",
        },
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}],
        "action": "R",
        "recorded": entry["at"],
        "outcome": "0" if permitted else "4",
        "outcomeDesc": f"{entry['decision']}: {entry['reason']}",
        "purposeOfEvent": [{"coding": [{"system": PURPOSE_SYSTEM, "code": entry["purpose"]}]}],
        "agent": [
            {"who": _who(entry["accessor"]), "requestor": True},
            {"who": _who(entry["custodian"]), "requestor": False},
        ],
        "source": {"observer": _who(entry["custodian"])},
        "entity": [
            {
                "what": {"reference": patient_reference},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
                "description": entry["resource"],
            },
            {
                "what": {"identifier": {"system": FABRIC_TX_SYSTEM, "value": entry["txId"]}},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "4"},
            },
            *_consent(entry.get("consentId") or "", consent_reference),
        ],
    }
