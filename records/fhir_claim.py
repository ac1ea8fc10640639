"""A FHIR Claim as the Claims contract takes it: a public summary and private lines.

The summary (claim id, patient pseudonym, insurer MSP, service date, currency, total, keyed digest of the FHIR Claim)
goes on the claims channel; the lines (codes, quantities, prices) and the coverage reference travel as transient data
into the provider-insurer private collection, with a random salt because Fabric writes unsalted hashes of private
values into blocks. The FHIR Claim itself stays with the provider.

How the Claim names things the ledger needs:
- the insurer: `Claim.insurer.identifier` with system `urn:careledger:msp` and the insurer's MSP id as value;
- the billed codes: `Claim.item.productOrService.coding[0].code`;
- the service date: `Claim.billablePeriod.start`, else the first item's `servicedDate`;
- the coverage: `Claim.insurance[0].coverage` (reference, or identifier system|value).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from records.errors import FhirInvalid, Issue

MSP_SYSTEM = "urn:careledger:msp"


@dataclass(frozen=True)
class ClaimForLedger:
    submission: dict[str, Any]
    detail: dict[str, Any]  # transient "claim"


def _cents(value: Any, where: str) -> int:
    try:
        amount = Decimal(str(value)) * 100
    except InvalidOperation:
        raise FhirInvalid([Issue("value", where, f"{value!r} is not an amount")]) from None
    if amount != amount.to_integral_value():
        raise FhirInvalid([Issue("value", where, f"{value} has more than two decimals")])
    return int(amount)


def insurer_msp(claim: dict[str, Any]) -> str:
    ident = (claim.get("insurer") or {}).get("identifier") or {}
    if ident.get("system") != MSP_SYSTEM or not ident.get("value"):
        raise FhirInvalid(
            [Issue("required", "Claim.insurer.identifier", f"name the insurer by its MSP id (system {MSP_SYSTEM})")]
        )
    return str(ident["value"])


def _service_date(claim: dict[str, Any]) -> str:
    start = str((claim.get("billablePeriod") or {}).get("start") or "")
    if not start:
        items = claim.get("item") or [{}]
        start = str(items[0].get("servicedDate") or "")
    if not start:
        raise FhirInvalid(
            [Issue("required", "Claim.billablePeriod.start", "a claim needs a service date (or item.servicedDate)")]
        )
    return start[:10]


def _coverage(claim: dict[str, Any]) -> str:
    insurance = claim.get("insurance") or [{}]
    coverage = insurance[0].get("coverage") or {}
    if coverage.get("reference"):
        return str(coverage["reference"])
    ident = coverage.get("identifier") or {}
    if ident.get("value"):
        return f"{ident.get('system', '')}|{ident['value']}"
    raise FhirInvalid([Issue("required", "Claim.insurance[0].coverage", "the claim must name its coverage")])


def _lines(claim: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    lines: list[dict[str, Any]] = []
    currencies: set[str] = set()
    for i, item in enumerate(claim.get("item") or []):
        where = f"Claim.item[{i}]"
        codings = (item.get("productOrService") or {}).get("coding") or []
        if not codings or not codings[0].get("code"):
            raise FhirInvalid([Issue("required", f"{where}.productOrService.coding", "a billed line needs a code")])
        quantity = Decimal(str((item.get("quantity") or {}).get("value", 1)))
        if quantity != quantity.to_integral_value() or quantity < 1:
            raise FhirInvalid([Issue("value", f"{where}.quantity", "quantities are whole numbers of at least 1")])
        price = item.get("unitPrice") or {}
        if "value" not in price:
            raise FhirInvalid([Issue("required", f"{where}.unitPrice", "a billed line needs a unit price")])
        currencies.add(str(price.get("currency") or ""))
        unit = _cents(price["value"], f"{where}.unitPrice.value")
        net = item.get("net")
        net_cents = _cents(net["value"], f"{where}.net.value") if net else int(quantity) * unit
        if net_cents != int(quantity) * unit:
            raise FhirInvalid([Issue("invariant", f"{where}.net", "net is not quantity x unitPrice")])
        lines.append(
            {
                "sequence": int(item["sequence"]),
                "code": str(codings[0]["code"]),
                "quantity": int(quantity),
                "unitPriceCents": unit,
                "netCents": net_cents,
            }
        )
    if not lines:
        raise FhirInvalid([Issue("required", "Claim.item", "a claim bills at least one item")])
    if len(currencies) != 1 or "" in currencies:
        raise FhirInvalid(
            [Issue("value", "Claim.item.unitPrice.currency", "every line names one and the same currency")]
        )
    return lines, currencies.pop()


def for_ledger(claim: dict[str, Any], claim_id: str, patient: str, digest: str) -> ClaimForLedger:
    """The Claims:Submit arguments for a validated FHIR Claim, or FhirInvalid naming what is missing."""
    if claim.get("status") != "active":
        raise FhirInvalid([Issue("value", "Claim.status", "a new claim is submitted with status active")])
    lines, currency = _lines(claim)
    total = sum(line["netCents"] for line in lines)
    if claim.get("total") and _cents(claim["total"].get("value"), "Claim.total.value") != total:
        raise FhirInvalid([Issue("invariant", "Claim.total", "total is not the sum of the items' net amounts")])
    submission = {
        "claimId": claim_id,
        "patient": patient,
        "insurer": insurer_msp(claim),
        "serviceDate": _service_date(claim),
        "currency": currency,
        "totalCents": total,
        "digest": digest,
    }
    if claim.get("use") == "preauthorization":  # a prior-authorisation request: due in 72 h (expedited) or 7 days
        submission |= {"use": "preauthorization", "priority": preauth_priority(claim)}
    detail = {"claimId": claim_id, "lines": lines, "coverage": _coverage(claim), "salt": os.urandom(32).hex()}
    return ClaimForLedger(submission, detail)


EXPEDITED = frozenset({"stat", "urgent"})  # Claim.priority codes (processpriority) a payer must answer within 72 h


def preauth_priority(claim: dict[str, Any]) -> str:
    """expedited or standard, from Claim.priority (http://terminology.hl7.org/CodeSystem/processpriority)."""
    codes = {c.get("code") for c in (claim.get("priority") or {}).get("coding") or []}
    return "expedited" if codes & EXPEDITED else "standard"


def preauth_ref(claim_key: str) -> str:
    """The authorisation number an approved request carries: derived from the request, so a rerun gives the same."""
    return "PA-" + hashlib.sha256(claim_key.encode()).hexdigest()[:16].upper()


def claim_response_id(claim_key: str) -> str:
    """The id of the insurer's ClaimResponse to a claim: the claim's key on chain (64-hex, a valid FHIR id), which
    is all the insurer knows of the claim. The provider keeps it as ClaimResponse/<its own Claim id>."""
    return claim_key
