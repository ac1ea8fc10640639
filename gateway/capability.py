"""The CapabilityStatement: exactly what this server supports, no more."""

from __future__ import annotations

from typing import Any

from records import subscriptions as sub
from records import validation as fv

SEARCH_PARAMS = [
    {"name": "patient", "type": "reference"},
    {"name": "_id", "type": "token"},
    {"name": "identifier", "type": "token"},
    {"name": "_lastUpdated", "type": "date"},
    {"name": "_count", "type": "number"},
]
INTERACTIONS = ("read", "vread", "history-instance", "create", "update", "search-type")


# Operations beyond $verify and $disclose, by resource type (docs/CONTRACTS.md, docs/SUBSCRIPTIONS.md).
TYPE_OPERATIONS: dict[str, list[dict[str, str]]] = {
    "Patient": [
        {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
        {"name": "match", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-match"},
        {"name": "link", "definition": "urn:careledger:operation:link"},
        {"name": "erase", "definition": "urn:careledger:operation:erase"},
    ],
    "Claim": [
        {"name": "submit", "definition": "http://hl7.org/fhir/us/davinci-pas/OperationDefinition/Claim-submit"},
        {"name": "submission", "definition": "urn:careledger:operation:submission"},
        {"name": "appeal", "definition": "urn:careledger:operation:appeal"},
    ],
    "ClaimResponse": [{"name": "decide", "definition": "urn:careledger:operation:decide"}],
}


def _resource(t: str) -> dict[str, Any]:
    operations = [
        {"name": "verify", "definition": "urn:careledger:operation:verify"},
        {"name": "disclose", "definition": "urn:careledger:operation:disclose"},  # docs/DISCLOSURE.md
    ]
    operations += TYPE_OPERATIONS.get(t, [])
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


def _subscription() -> dict[str, Any]:
    """Topic-based subscriptions (Subscriptions R5 Backport IG), with every topic's canonical URL for discovery (each
    org can use those for its kind of member: `GET /fhir/SubscriptionTopic`)."""
    return {
        "type": "Subscription",
        "extension": [{"url": sub.TOPIC_CANONICAL_URL, "valueCanonical": t.url} for t in sub.TOPICS],
        "supportedProfile": [sub.SUBSCRIPTION_PROFILE],
        "interaction": [
            {"code": c} for c in ("read", "vread", "history-instance", "create", "update", "delete", "search-type")
        ],
        "versioning": "versioned",
        "readHistory": True,
        "updateCreate": True,
        "searchParam": [
            {
                "name": "status",
                "definition": "http://hl7.org/fhir/SearchParameter/Subscription-status",
                "type": "token",
            },
            {"name": "url", "definition": "http://hl7.org/fhir/SearchParameter/Subscription-url", "type": "uri"},
            {
                "name": "criteria",
                "definition": "http://hl7.org/fhir/SearchParameter/Subscription-criteria",
                "type": "string",
            },
        ],
        "operation": [
            {"name": "status", "definition": sub.STATUS_OPERATION},
            {"name": "events", "definition": sub.EVENTS_OPERATION},
        ],
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
        "instantiates": [sub.SERVER_CAPABILITY],
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "security": {"service": [{"coding": [smart]}]},
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
                "resource": [_resource(t) for t in sorted(fv.STORED_TYPES - {"Binary"})]
                + [audit, binary, _subscription()],
                "operation": [
                    {"name": "verify-disclosure", "definition": "urn:careledger:operation:verify-disclosure"},
                ],
            }
        ],
    }
