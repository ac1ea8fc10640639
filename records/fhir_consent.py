"""A FHIR Consent as the Consent contract takes it: a grant of read access, or the revocation of one.

A Consent with status `active` and a `permit` provision becomes a grant; the same Consent updated to `inactive`
(or `rejected`, `entered-in-error`) revokes it. The custodian acts for the patient, so the grant carries the keyed
digest of the FHIR Consent resource as the signed document's digest. What the provision says:
- who: `provision.actor[].reference.identifier` — an org by MSP id (system `urn:careledger:msp`), or a practitioner
  by any identifier system (`practitioner:<system>|<value>` on chain);
- why: `provision.purpose[].code` (HL7 v3 PurposeOfUse: TREAT, ETREAT, HPAYMT, HRESCH, ...);
- what: resource types and categories, both from `provision.class` (Coding) and `provision.code` (CodeableConcept):
  codings of system http://hl7.org/fhir/resource-types are resource types (none: every type); codings of a FHIR
  category code system (`CATEGORY_SYSTEMS`: observation, condition, medication request, care plan, allergy
  categories, ...) are categories, and limit the grant to resources that carry one of them in `category`;
- when: `provision.period`, else from `dateTime` (or now) without end.

Minimum necessary: a restriction the contract cannot enforce is refused, never dropped, because dropping it would
widen the grant. So a class or code of any other system (a profile, a LOINC code), nested provisions, `data`,
`dataPeriod` and `securityLabel` are answered 422 not-supported.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from records.errors import FhirInvalid, Issue
from records.fhir_claim import MSP_SYSTEM

REVOKING_STATUSES = frozenset({"inactive", "rejected", "entered-in-error"})
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
# Code systems whose codes are FHIR `category` codes; a grant limited to them releases only resources of those
# categories (the contract compares codes, as `category[].coding[].code` carries them).
CATEGORY_SYSTEMS = frozenset(
    {
        "http://terminology.hl7.org/CodeSystem/observation-category",  # laboratory, vital-signs, imaging, ...
        "http://terminology.hl7.org/CodeSystem/condition-category",  # problem-list-item, encounter-diagnosis
        "http://hl7.org/fhir/us/core/CodeSystem/condition-category",  # health-concern
        "http://terminology.hl7.org/CodeSystem/medicationrequest-category",  # inpatient, outpatient, community, ...
        "http://terminology.hl7.org/CodeSystem/medication-statement-category",
        "http://hl7.org/fhir/allergy-intolerance-category",  # food, medication, environment, biologic
        "http://hl7.org/fhir/us/core/CodeSystem/careplan-category",  # assess-plan
        "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",  # clinical-note
        "urn:careledger:category",  # the consortium's own categories (e.g. immunization)
    }
)
CATEGORY_CODE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")  # what the contract accepts
UNSUPPORTED_PROVISION = ("provision", "data", "dataPeriod", "securityLabel")


def _instant(value: str, where: str) -> str:
    """A FHIR dateTime as the RFC 3339 instant the contract wants; a bare date means its start in UTC."""
    text = value.replace("Z", "+00:00")
    try:
        t = datetime.fromisoformat(text) if "T" in text else datetime.fromisoformat(text + "T00:00:00+00:00")
    except ValueError:
        raise FhirInvalid([Issue("value", where, f"{value!r} is not a date-time")]) from None
    if t.tzinfo is None:
        raise FhirInvalid([Issue("value", where, f"{value!r} has no time zone")])
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _grantee(provision: dict[str, Any]) -> str:
    for i, actor in enumerate(provision.get("actor") or []):
        ident = (actor.get("reference") or {}).get("identifier") or {}
        if not ident.get("value"):
            continue
        if ident.get("system") == MSP_SYSTEM:
            return str(ident["value"])
        if ident.get("system"):
            return f"practitioner:{ident['system']}|{ident['value']}"
        raise FhirInvalid([Issue("required", f"Consent.provision.actor[{i}].reference.identifier.system", "")])
    raise FhirInvalid(
        [Issue("required", "Consent.provision.actor", "name the grantee by identifier (an MSP id or a practitioner)")]
    )


def grant(consent: dict[str, Any], consent_id: str, patient: str, digest: str) -> dict[str, Any]:
    """The Consent:Grant argument for an active, permitting FHIR Consent."""
    if consent.get("status") != "active":
        raise FhirInvalid([Issue("value", "Consent.status", "a new consent is active; revoke by updating its status")])
    provision = consent.get("provision") or {}
    if provision.get("type", "permit") != "permit":
        raise FhirInvalid([Issue("not-supported", "Consent.provision.type", "only permit provisions are supported")])
    purposes = [str(p.get("code")) for p in provision.get("purpose") or [] if p.get("code")]
    if len(purposes) != 1:
        raise FhirInvalid([Issue("required", "Consent.provision.purpose", "name exactly one purpose of use")])
    scope, categories = _scope_and_categories(provision)
    period = provision.get("period") or {}
    start = period.get("start") or consent.get("dateTime")
    start_at = (
        _instant(str(start), "Consent.provision.period.start")
        if start
        else datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    end = _instant(str(period["end"]), "Consent.provision.period.end") if period.get("end") else ""
    return {
        "consentId": consent_id,
        "patient": patient,
        "grantee": _grantee(provision),
        "action": "read",
        "scope": scope,
        "categories": categories,
        "purpose": purposes[0],
        "start": start_at,
        "end": end,
        "documentDigest": digest,
    }


def _scope_and_categories(provision: dict[str, Any]) -> tuple[list[str], list[str]]:
    """What the provision reaches: resource types (["*"]: every type) and category codes ([]: every category)."""
    for name in UNSUPPORTED_PROVISION:
        if provision.get(name):
            raise FhirInvalid(
                [Issue("not-supported", f"Consent.provision.{name}", "the grant could not enforce it: refused")]
            )
    codings = [(f"Consent.provision.class[{i}]", c) for i, c in enumerate(provision.get("class") or [])]
    for i, concept in enumerate(provision.get("code") or []):
        codings += [(f"Consent.provision.code[{i}].coding[{j}]", c) for j, c in enumerate(concept.get("coding") or [])]
    types: set[str] = set()
    categories: set[str] = set()
    for where, coding in codings:
        system, code = str(coding.get("system") or ""), str(coding.get("code") or "")
        if not code:
            raise FhirInvalid([Issue("required", f"{where}.code", "a class or code names what it grants")])
        if system == RESOURCE_TYPES and where.startswith("Consent.provision.class"):
            types.add(code)
        elif system in CATEGORY_SYSTEMS:
            if not CATEGORY_CODE.match(code):
                raise FhirInvalid(
                    [Issue("value", f"{where}.code", f"{code!r} is not a category code the ledger keeps")]
                )
            categories.add(code)
        else:
            raise FhirInvalid(
                [
                    Issue(
                        "not-supported",
                        f"{where}.system",
                        f"{system or 'no system'}: a grant names resource types ({RESOURCE_TYPES}) and categories"
                        " (FHIR category code systems) only",
                    )
                ]
            )
    if len(categories) > 32:
        raise FhirInvalid([Issue("too-costly", "Consent.provision", "at most 32 categories")])
    return sorted(types) or ["*"], sorted(categories)


def revokes(consent: dict[str, Any]) -> bool:
    return consent.get("status") in REVOKING_STATUSES
