"""A FHIR Consent as the Consent contract takes it: a grant of read access, or the revocation of one.

A Consent with status `active` and a `permit` provision becomes a grant; the same Consent updated to `inactive`
(or `rejected`, `entered-in-error`) revokes it. The custodian acts for the patient, so the grant carries the keyed
digest of the FHIR Consent resource as the signed document's digest. What the provision says:
- who: `provision.actor[].reference.identifier` — an org by MSP id (system `urn:careledger:msp`), or a practitioner
  by any identifier system (`practitioner:<system>|<value>` on chain);
- why: `provision.purpose[].code` (HL7 v3 PurposeOfUse: TREAT, ETREAT, HPAYMT, HRESCH, ...);
- what: `provision.class[].code` resource types (system http://hl7.org/fhir/resource-types); none means all;
- when: `provision.period`, else from `dateTime` (or now) without end.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from records.errors import FhirInvalid, Issue
from records.fhir_claim import MSP_SYSTEM

REVOKING_STATUSES = frozenset({"inactive", "rejected", "entered-in-error"})


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
    scope = sorted({str(c.get("code")) for c in provision.get("class") or [] if c.get("code")}) or ["*"]
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
        "purpose": purposes[0],
        "start": start_at,
        "end": end,
        "documentDigest": digest,
    }


def revokes(consent: dict[str, Any]) -> bool:
    return consent.get("status") in REVOKING_STATUSES
