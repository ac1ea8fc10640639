"""A FHIR Claim as the Claims contract takes it: a public summary and private lines.

The summary (claim id, patient pseudonym, insurer MSP, service date, currency, total, keyed digest of the FHIR Claim)
goes on the claims channel; the lines (codes, quantities, prices) and the coverage reference travel as transient data
into the provider-insurer private collection, with a random salt because Fabric writes unsalted hashes of private
values into blocks. The FHIR Claim itself stays with the provider.

How the Claim names things the ledger needs:
- the insurer, through the consortium's payer directory (names and identifiers of each insurer MSP; an identifier
  with system `urn:careledger:msp` names the MSP itself), found in this order: `Claim.insurer` (identifier,
  conditional reference, display, or a reference to an Organization held here or contained); the focal insurance's
  `coverage` (the same, or a Coverage it references — contained, held here, or in the same bundle — by its payor);
  else the patient's own Coverages held here (active, covering the service date, by `order`), by their payor;
- the billed codes: `Claim.item.productOrService.coding[0].code`;
- the service date: `Claim.billablePeriod.start`, else the first item's `servicedDate`;
- the coverage: `Claim.insurance[0].coverage` (reference, or identifier system|value).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, DecimalException
from typing import Any

from records.errors import FhirInvalid, Issue

MSP_SYSTEM = "urn:careledger:msp"


@dataclass(frozen=True)
class ClaimForLedger:
    submission: dict[str, Any]
    detail: dict[str, Any]  # transient "claim"


HALF_CENT = Decimal("0.005")  # amounts closer than this are the same amount in cents
LARGEST = Decimal(1_000_000_000)  # the Claims contract takes amounts up to a billion (in cents: 10^11)


def _amount(value: Any, where: str) -> Decimal:
    """An amount as the exact decimal it was written as. R4 allows any precision in Money.value, and exporters write
    sums of binary floats (Synthea's 2021 releases put totals such as 410.20000000000005 in one Claim in ten)."""
    try:
        amount = Decimal(str(value))
    except DecimalException:
        raise FhirInvalid([Issue("value", where, f"{value!r} is not an amount")]) from None
    if not amount.is_finite():
        raise FhirInvalid([Issue("value", where, f"{value!r} is not an amount")])
    if abs(amount) > LARGEST:
        raise FhirInvalid([Issue("value", where, f"{value} is more than the claims channel takes ({LARGEST:,})")])
    return amount


def _cents(amount: Decimal) -> int:
    """Whole cents, rounded half to even: the ledger and the remittance keep cents, as an X12 835 does."""
    return int((amount * 100).to_integral_value(ROUND_HALF_EVEN))


@dataclass(frozen=True)
class PayerDirectory:
    """How claims name their payer, and which member it is: names and identifiers per insurer MSP (from the
    consortium definition's `payers`). An MSP id under the system urn:careledger:msp always names itself."""

    names: dict[str, str] = field(default_factory=dict)  # payer name (folded case) -> MSP id
    identifiers: dict[str, str] = field(default_factory=dict)  # "system|value" -> MSP id

    @classmethod
    def of(cls, payers: dict[str, Any]) -> PayerDirectory:
        names = {str(n).casefold(): msp for msp, spec in payers.items() for n in (spec or {}).get("names") or []}
        idents = {str(i): msp for msp, spec in payers.items() for i in (spec or {}).get("identifiers") or []}
        return cls(names, idents)

    def by_identifier(self, ident: dict[str, Any]) -> str | None:
        if ident.get("system") == MSP_SYSTEM and ident.get("value"):
            return str(ident["value"])
        return self.identifiers.get(f"{ident.get('system', '')}|{ident.get('value', '')}")

    def by_reference(self, ref: dict[str, Any]) -> str | None:
        """A payer named by identifier, logical or conditional reference (Organization?identifier=s|v), or display."""
        found = self.by_identifier(ref.get("identifier") or {})
        reference = str(ref.get("reference") or "")
        if found is None and "?identifier=" in reference:
            system, _, value = reference.split("?identifier=", 1)[1].partition("|")
            found = self.by_identifier({"system": system, "value": value})
        if found is None and ref.get("display"):
            found = self.names.get(str(ref["display"]).casefold())
        return found

    def by_organization(self, org: dict[str, Any]) -> str | None:
        """A payer's Organization resource: by any of its identifiers, else its name or an alias."""
        for ident in org.get("identifier") or []:
            if (found := self.by_identifier(ident)) is not None:
                return found
        names = [org.get("name"), *(org.get("alias") or [])]
        return next(
            (self.names[n.casefold()] for n in names if isinstance(n, str) and n.casefold() in self.names), None
        )


Resource = dict[str, Any]


@dataclass(frozen=True)
class HeldHere:
    """What the custodian holds that a claim may point at, looked up only when the claim's own names give no payer:
    `resource("Type/id")` (held here, or written in the same bundle), and `coverages()` of the claim's patient."""

    resource: Callable[[str], Resource | None] = lambda reference: None
    coverages: Callable[[], list[Resource]] = list


NOTHING_HELD = HeldHere()


def _target(ref: dict[str, Any], claim: Resource, held: HeldHere, rtype: str) -> Resource | None:
    """The resource of `rtype` a literal reference names: contained in the claim (#id), or held here (Type/id)."""
    reference = str(ref.get("reference") or "")
    if reference.startswith("#"):
        found = next((c for c in claim.get("contained") or [] if c.get("id") == reference[1:]), None)
    elif reference.startswith(f"{rtype}/") and reference.count("/") == 1:
        found = held.resource(reference)
    else:
        return None
    return found if found is not None and found.get("resourceType") == rtype else None


def _payer(ref: dict[str, Any], claim: Resource, payers: PayerDirectory, held: HeldHere) -> str | None:
    """The member insurer a reference to an organisation names: by its own words, else by the Organization it
    references."""
    found = payers.by_reference(ref)
    if found is None and (org := _target(ref, claim, held, "Organization")) is not None:
        found = payers.by_organization(org)
    return found


def _coverage_payer(coverage: Resource, claim: Resource, payers: PayerDirectory, held: HeldHere) -> str | None:
    return next((m for p in coverage.get("payor") or [] if (m := _payer(p, claim, payers, held)) is not None), None)


def _in_force_first(coverages: list[Resource], service_date: str) -> list[Resource]:
    """Active coverages, those whose period covers the service date first, then by `order` (1: primary)."""

    def rank(c: Resource) -> tuple[bool, int]:
        period = c.get("period") or {}
        start, end = str(period.get("start") or "")[:10], str(period.get("end") or "")[:10]
        covers = bool(service_date) and (not start or start <= service_date) and (not end or service_date <= end)
        order = c.get("order")
        return (not covers, order if isinstance(order, int) else 1_000_000)

    return sorted((c for c in coverages if c.get("status") == "active"), key=rank)


def insurer_msp(claim: Resource, payers: PayerDirectory, held: HeldHere = NOTHING_HELD) -> str | None:
    """The member insurer a claim is for: from Claim.insurer, else the focal insurance's coverage (by its own
    words, or the Coverage it references, by payor), else the patient's Coverages held here (by payor); None when
    nothing names a payer of the consortium."""
    found = _payer(claim.get("insurer") or {}, claim, payers, held)
    insurance = sorted(claim.get("insurance") or [], key=lambda i: not i.get("focal"))
    for ins in insurance:
        ref = ins.get("coverage") or {}
        found = found or _payer(ref, claim, payers, held)
        if found is None and (coverage := _target(ref, claim, held, "Coverage")) is not None:
            found = _coverage_payer(coverage, claim, payers, held)
    if found is None:
        service_date = _service_date_or_none(claim)
        for coverage in _in_force_first(held.coverages(), service_date):
            if (found := _coverage_payer(coverage, claim, payers, held)) is not None:
                break
    return found


def _service_date_or_none(claim: Resource) -> str:
    start = str((claim.get("billablePeriod") or {}).get("start") or "")
    return (start or str(((claim.get("item") or [{}])[0]).get("servicedDate") or ""))[:10]


def _service_date(claim: dict[str, Any]) -> str:
    start = _service_date_or_none(claim)
    if not start:
        raise FhirInvalid(
            [Issue("required", "Claim.billablePeriod.start", "a claim needs a service date (or item.servicedDate)")]
        )
    return start


def _coverage(claim: dict[str, Any]) -> str:
    """The claim's coverage as the insurer can look it up: a reference or system|value; "none" when the claim names
    it by display only (the insurer finds the member's Coverage by the patient instead)."""
    insurance = claim.get("insurance") or [{}]
    coverage = insurance[0].get("coverage") or {}
    if coverage.get("reference") and "?" not in str(coverage["reference"]):
        return str(coverage["reference"])[:128]
    ident = coverage.get("identifier") or {}
    if ident.get("value"):
        return f"{ident.get('system', '')}|{ident['value']}"[:128]
    return "none"


MISSING_CHARGE = ("16", "M79")  # CARC 16 claim lacks information; RARC M79 missing/incomplete/invalid charge
TOTAL_MISMATCH = ("16", "M54")  # RARC M54 missing/incomplete/invalid total charges


def _line(item: dict[str, Any], where: str) -> tuple[dict[str, Any], Decimal, str]:
    """One billed line (net, else quantity x unitPrice x factor), its exact amount, and its currency. The amounts are
    compared exactly and rounded to cents only once: the unit price goes on chain only when quantity times its cents
    is the line's cents (the contract checks that), so a unit price of a fraction of a cent is billed right."""
    codings = (item.get("productOrService") or {}).get("coding") or []
    if not codings or not codings[0].get("code"):
        raise FhirInvalid([Issue("required", f"{where}.productOrService.coding", "a billed line needs a code")])
    quantity = _amount((item.get("quantity") or {}).get("value", 1), f"{where}.quantity.value")
    if quantity != quantity.to_integral_value() or quantity < 1:
        raise FhirInvalid([Issue("value", f"{where}.quantity", "quantities are whole numbers of at least 1")])
    price, net = item.get("unitPrice") or {}, item.get("net") or {}
    unit = _amount(price["value"], f"{where}.unitPrice.value") if "value" in price else None
    factor = _amount(item.get("factor", 1), f"{where}.factor")
    priced = None if unit is None else quantity * unit * factor
    exact = _amount(net["value"], f"{where}.net.value") if "value" in net else (priced or Decimal(0))
    if priced is not None and abs(exact - priced) >= HALF_CENT:
        raise FhirInvalid([Issue("invariant", f"{where}.net", "net is not quantity x unitPrice x factor")])
    net_cents = _cents(exact)
    unit_cents = _cents(unit) if unit is not None else 0
    line = {
        "sequence": int(item["sequence"]),
        "code": str(codings[0]["code"])[:32],
        "quantity": int(quantity),
        "unitPriceCents": unit_cents if unit_cents * int(quantity) == net_cents else 0,
        "netCents": net_cents,
    }
    return line, exact, str(net.get("currency") or price.get("currency") or "")


def _lines(claim: dict[str, Any]) -> tuple[list[dict[str, Any]], Decimal, str, list[dict[str, Any]]]:
    """The billed lines, the exact sum of their amounts, their currency, and the front-end edits a payer would
    answer (a line without a charge, a total its lines do not add up to) — edits, not refusals: R4 allows both."""
    lines: list[dict[str, Any]] = []
    edits: list[dict[str, Any]] = []
    currencies: set[str] = set()
    exact_sum = Decimal(0)
    for i, item in enumerate(claim.get("item") or []):
        line, exact, currency = _line(item, f"Claim.item[{i}]")
        lines.append(line)
        exact_sum += exact
        if currency:
            currencies.add(currency)
        if line["netCents"] <= 0:
            edits.append({"sequence": line["sequence"], "reason": MISSING_CHARGE[0], "remark": MISSING_CHARGE[1]})
    if not lines:
        raise FhirInvalid([Issue("required", "Claim.item", "a claim bills at least one item")])
    total = claim.get("total") or {}
    if total.get("currency"):
        currencies.add(str(total["currency"]))
    if len(currencies) > 1:
        raise FhirInvalid([Issue("value", "Claim.item.net.currency", "every amount names one and the same currency")])
    return lines, exact_sum, currencies.pop() if currencies else "USD", edits


def for_ledger(
    claim: dict[str, Any],
    claim_id: str,
    patient: str,
    digest: str,
    payers: PayerDirectory,
    held: HeldHere = NOTHING_HELD,
) -> ClaimForLedger | None:
    """The Claims:Submit arguments for a validated FHIR Claim; None when it names no payer of the consortium (it is
    then kept, not submitted). What R4 forbids is refused (FhirInvalid); what a payer's front end would answer (no
    charge on a line, a total that is not the sum of the lines) travels as edits the insurer's rules answer."""
    if claim.get("status") != "active":
        raise FhirInvalid([Issue("value", "Claim.status", "a new claim is submitted with status active")])
    insurer = insurer_msp(claim, payers, held)
    if insurer is None:
        return None
    lines, exact_sum, currency, edits = _lines(claim)
    total = sum(line["netCents"] for line in lines)  # what the contract checks the total against
    if claim.get("total") and "value" in claim["total"]:
        billed = _amount(claim["total"]["value"], "Claim.total.value")
        if abs(billed - exact_sum) >= HALF_CENT:
            total = _cents(billed)
            edits.append({"sequence": 0, "reason": TOTAL_MISMATCH[0], "remark": TOTAL_MISMATCH[1]})
    submission = {
        "claimId": claim_id,
        "patient": patient,
        "insurer": insurer,
        "serviceDate": _service_date(claim),
        "currency": currency,
        "totalCents": total,
        "digest": digest,
    }
    if claim.get("use") == "preauthorization":  # a prior-authorisation request: due in 72 h (expedited) or 7 days
        submission |= {"use": "preauthorization", "priority": preauth_priority(claim)}
    detail: dict[str, Any] = {
        "claimId": claim_id,
        "lines": lines,
        "coverage": _coverage(claim),
        "salt": os.urandom(32).hex(),
    }
    if edits:
        detail["edits"] = edits
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
