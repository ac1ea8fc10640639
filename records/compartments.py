"""Which resources belong to a patient, and through which element (after the FHIR R4 Patient compartment).

A resource of a type listed here is filed under the patient its element names and registered on chain under that
patient's pseudonym. Any other type (Organization, Practitioner, Location, Medication, definitions, ...) is the
custodian's own directory record: stored here, registered on chain by digest only, under no patient. A type marked
`either` is a patient's when its element names one (a Device implanted in a patient), else a directory record.
"""

from __future__ import annotations

from typing import Any

DIRECTORY = "org-directory"  # what a custodian files its directory records under, in its store (never on chain)

# type -> the elements that may name the patient, in the order they are tried
PATIENT_ELEMENTS: dict[str, tuple[str, ...]] = {
    "Patient": (),
    "Account": ("subject",),
    "AdverseEvent": ("subject",),
    "AllergyIntolerance": ("patient",),
    "Appointment": ("participant.actor",),
    "AppointmentResponse": ("actor",),
    "BodyStructure": ("patient",),
    "CarePlan": ("subject",),
    "CareTeam": ("subject",),
    "ChargeItem": ("subject",),
    "Claim": ("patient",),
    "ClaimResponse": ("patient",),
    "ClinicalImpression": ("subject",),
    "Communication": ("subject",),
    "CommunicationRequest": ("subject",),
    "Composition": ("subject",),
    "Condition": ("subject",),
    "Consent": ("patient",),
    "Coverage": ("beneficiary",),
    "CoverageEligibilityRequest": ("patient",),
    "CoverageEligibilityResponse": ("patient",),
    "DetectedIssue": ("patient",),
    "Device": ("patient",),
    "DeviceRequest": ("subject",),
    "DeviceUseStatement": ("subject",),
    "DiagnosticReport": ("subject",),
    "DocumentManifest": ("subject",),
    "DocumentReference": ("subject",),
    "Encounter": ("subject",),
    "EnrollmentRequest": ("candidate",),
    "EpisodeOfCare": ("patient",),
    "ExplanationOfBenefit": ("patient",),
    "FamilyMemberHistory": ("patient",),
    "Flag": ("subject",),
    "Goal": ("subject",),
    "GuidanceResponse": ("subject",),
    "ImagingStudy": ("subject",),
    "Immunization": ("patient",),
    "ImmunizationEvaluation": ("patient",),
    "ImmunizationRecommendation": ("patient",),
    "Invoice": ("subject",),
    "List": ("subject",),
    "Media": ("subject",),
    "MedicationAdministration": ("subject",),
    "MedicationDispense": ("subject",),
    "MedicationRequest": ("subject",),
    "MedicationStatement": ("subject",),
    "MolecularSequence": ("patient",),
    "NutritionOrder": ("patient",),
    "Observation": ("subject",),
    "Procedure": ("subject",),
    "Provenance": ("target",),
    "QuestionnaireResponse": ("subject",),
    "RelatedPerson": ("patient",),
    "RequestGroup": ("subject",),
    "ResearchSubject": ("individual",),
    "RiskAssessment": ("subject",),
    "ServiceRequest": ("subject",),
    "Specimen": ("subject",),
    "SupplyDelivery": ("patient",),
    "Task": ("for",),
    "VisionPrescription": ("patient",),
}

# Types that belong to a patient only when they name one; otherwise they are directory records.
EITHER = frozenset({"Device", "Provenance", "Appointment", "AppointmentResponse", "List", "Account", "ChargeItem"})


def in_compartment(resource_type: str) -> bool:
    return resource_type in PATIENT_ELEMENTS


def patient_references(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """The Reference values a resource's compartment elements hold, in order (lists and nested paths flattened)."""
    out: list[dict[str, Any]] = []
    for path in PATIENT_ELEMENTS.get(str(resource.get("resourceType")), ()):
        nodes: list[Any] = [resource]
        for step in path.split("."):
            nodes = [v for n in nodes if isinstance(n, dict) for v in _as_list(n.get(step))]
        out += [n for n in nodes if isinstance(n, dict)]
    return out


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]
