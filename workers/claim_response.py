"""The insurer's answer as FHIR: a ClaimResponse and an ExplanationOfBenefit built from the adjudication recorded on
chain (never from a fresh decision, so a retried task builds the same answer), and a PaymentReconciliation for the
payment. The ExplanationOfBenefit is what a payer serves its members through the CMS Patient Access API: the claim
as billed and as adjudicated, line by line, in one resource.

The patient is named by pseudonym only (the insurer never learns the provider's Patient id or identifiers beyond
what the Coverage says); `request` names the provider's Claim by id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from records.fhir_claim import MSP_SYSTEM, claim_response_id
from records.routes import CLAIM_KEY_SYSTEM

PSEUDONYM_SYSTEM = "urn:careledger:patient-pseudonym"

CARC_SYSTEM = "https://x12.org/codes/claim-adjustment-reason-codes"
RARC_SYSTEM = "https://x12.org/codes/remittance-advice-remark-codes"
ADJUDICATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/adjudication"


@dataclass(frozen=True)
class Edits:
    """The front-end edits a claim went on chain with (its private detail): each a CARC and, where it has one, a
    RARC, for a line or (sequence 0) the whole claim; and the claim an exact duplicate duplicates."""

    edits: list[dict[str, Any]] = field(default_factory=list)
    duplicate_of: str = ""

    def errors(self) -> list[dict[str, Any]]:
        """The edits as ClaimResponse.error: what the payer's front end found, answered with its codes."""
        out = []
        for e in self.edits:
            codes = [{"system": CARC_SYSTEM, "code": str(e["reason"])}]
            if e.get("remark"):
                codes.append({"system": RARC_SYSTEM, "code": str(e["remark"])})
            seq = int(e.get("sequence") or 0)
            out.append(({"itemSequence": seq} if seq else {}) | {"code": {"coding": codes}})
        return out

    def notes(self) -> list[dict[str, Any]]:
        if not self.duplicate_of:
            return []
        text = f"exact duplicate of claim {self.duplicate_of} (same patient, provider, service date and codes)"
        return [{"number": 1, "type": "display", "text": text}]


NO_EDITS = Edits()


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _money(cents: int, currency: str) -> dict[str, Any]:
    return {"value": cents / 100, "currency": currency}


def _org(msp: str) -> dict[str, Any]:
    return {"identifier": {"system": MSP_SYSTEM, "value": msp}}


def _common(claim: dict[str, Any], created: str) -> dict[str, Any]:
    return {
        "resourceType": "ClaimResponse",
        "id": claim_response_id(claim["claimId"]),
        "identifier": [{"system": CLAIM_KEY_SYSTEM, "value": claim["claimId"]}],
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "use": "claim",
        "patient": {"identifier": {"system": PSEUDONYM_SYSTEM, "value": claim["patient"]}},
        "created": created,
        "insurer": _org(claim["insurer"]),
        "requestor": _org(claim["provider"]),
        "request": {"reference": f"Claim/{claim['claimId']}"},
    }


def adjudicated(
    claim: dict[str, Any], lines: list[dict[str, Any]], adjudication: dict[str, Any], edits: Edits = NO_EDITS
) -> dict[str, Any]:
    """The ClaimResponse for an adjudicated claim: per item what was billed, what is paid, and why not all; the
    claim's front-end edits as its errors (an exact duplicate also as a note naming the claim it duplicates)."""
    currency = str(claim["currency"])
    billed = {int(line["sequence"]): int(line["netCents"]) for line in lines}
    items = []
    for d in adjudication["lines"]:
        seq = int(d["sequence"])
        entries: list[dict[str, Any]] = [
            {
                "category": {"coding": [{"system": ADJUDICATION_SYSTEM, "code": "submitted"}]},
                "amount": _money(billed[seq], currency),
            },
            {
                "category": {"coding": [{"system": ADJUDICATION_SYSTEM, "code": "benefit"}]},
                "amount": _money(int(d["approvedCents"]), currency),
                **(
                    {"reason": {"coding": [{"system": CARC_SYSTEM, "code": r} for r in d["reasons"]]}}
                    if d["reasons"]
                    else {}
                ),
            },
        ]
        items.append({"itemSequence": seq, "adjudication": entries})
    outcome = str(adjudication["outcome"])
    found = ({"error": errors} if (errors := edits.errors()) else {}) | (
        {"processNote": notes} if (notes := edits.notes()) else {}
    )
    return (
        found
        | _common(claim, str(claim["adjudicatedAt"])[:19] + "Z")
        | {
            "outcome": "complete",
            "disposition": f"{outcome}: {int(claim['approvedCents']) / 100:.2f} of"
            f" {int(claim['totalCents']) / 100:.2f} {currency}",
            "item": items,
            "total": [
                {
                    "category": {"coding": [{"system": ADJUDICATION_SYSTEM, "code": "submitted"}]},
                    "amount": _money(int(claim["totalCents"]), currency),
                },
                {
                    "category": {"coding": [{"system": ADJUDICATION_SYSTEM, "code": "benefit"}]},
                    "amount": _money(int(claim["approvedCents"]), currency),
                },
            ],
        }
    )


def _coverage(reference: str) -> dict[str, Any]:
    """The provider's reference to the Coverage, as the claim's detail carries it: `Coverage/<id>`, or
    `system|value` of the member identifier."""
    if reference.startswith("Coverage/") and "/" not in reference[len("Coverage/") :]:
        return {"reference": reference}
    system, bar, value = reference.partition("|")
    if bar and system and value:
        return {"identifier": {"system": system, "value": value}}
    return {"display": reference or "coverage of record"}


def _amount(code: str, cents: int, currency: str) -> dict[str, Any]:
    return {"category": {"coding": [{"system": ADJUDICATION_SYSTEM, "code": code}]}, "amount": _money(cents, currency)}


def explanation_of_benefit(
    claim: dict[str, Any],
    lines: list[dict[str, Any]],
    adjudication: dict[str, Any],
    coverage: str,
    edits: Edits = NO_EDITS,
) -> dict[str, Any]:
    """The ExplanationOfBenefit of an adjudicated claim: each line's code, billed and allowed amounts and the
    reasons (CARC) for any difference, the totals, and the payment due."""
    currency = str(claim["currency"])
    by_seq = {int(line["sequence"]): line for line in lines}
    items = []
    for d in adjudication["lines"]:
        line = by_seq[int(d["sequence"])]
        benefit = _amount("benefit", int(d["approvedCents"]), currency)
        if d["reasons"]:
            benefit["reason"] = {"coding": [{"system": CARC_SYSTEM, "code": r} for r in d["reasons"]]}
        items.append(
            {
                "sequence": int(d["sequence"]),
                "productOrService": {"coding": [{"code": str(line["code"])}]},
                "servicedDate": str(claim["serviceDate"])[:10],
                "quantity": {"value": int(line.get("quantity") or 1)},
                "net": _money(int(line["netCents"]), currency),
                "adjudication": [_amount("submitted", int(line["netCents"]), currency), benefit],
            }
        )
    response = adjudicated(claim, lines, adjudication, edits)
    return ({"processNote": response["processNote"]} if "processNote" in response else {}) | {
        "resourceType": "ExplanationOfBenefit",
        "id": response["id"],
        "identifier": response["identifier"],
        "status": "active",
        "type": response["type"],
        "use": "claim",
        "patient": response["patient"],
        "billablePeriod": {"start": str(claim["serviceDate"])[:10]},
        "created": response["created"],
        "insurer": response["insurer"],
        "provider": response["requestor"],
        "claim": {"identifier": {"system": CLAIM_KEY_SYSTEM, "value": claim["claimId"]}},
        "claimResponse": {"reference": f"ClaimResponse/{response['id']}"},
        "outcome": "complete",
        "disposition": response["disposition"],
        "insurance": [{"focal": True, "coverage": _coverage(coverage)}],
        "item": items,
        "total": [
            _amount("submitted", int(claim["totalCents"]), currency),
            _amount("benefit", int(claim["approvedCents"]), currency),
        ],
        "payment": {"amount": _money(int(claim["approvedCents"]), currency)},
    }


def pended(claim: dict[str, Any], note: str, created: str) -> dict[str, Any]:
    """A ClaimResponse saying the claim waits for review; nothing is on chain for it yet."""
    return _common(claim, created) | {"outcome": "queued", "disposition": note}


def payment(claim: dict[str, Any], payment_ref: str, created: str) -> dict[str, Any]:
    """The PaymentReconciliation of a paid claim."""
    return {
        "resourceType": "PaymentReconciliation",
        "id": claim["claimId"],  # the claim key: a PaymentReconciliation per claim paid on its own
        "identifier": [{"system": CLAIM_KEY_SYSTEM, "value": claim["claimId"]}],
        "status": "active",
        "created": created,
        "paymentIssuer": _org(claim["insurer"]),
        "requestor": _org(claim["provider"]),
        "outcome": "complete",
        "disposition": f"payment {payment_ref} for claim {claim['claimId']}",
        "paymentDate": created[:10],
        "paymentAmount": _money(int(claim["approvedCents"]), str(claim["currency"])),
        "paymentIdentifier": {"system": "urn:careledger:payment", "value": payment_ref},
        "detail": [
            {
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/payment-type", "code": "payment"}]
                },
                "request": {"reference": f"Claim/{claim['claimId']}"},
                "response": {"reference": f"ClaimResponse/{claim_response_id(claim['claimId'])}"},
                "amount": _money(int(claim["approvedCents"]), str(claim["currency"])),
            }
        ],
    }


def remittance(payment: dict[str, Any], created: str) -> dict[str, Any]:
    """The PaymentReconciliation of one batch payment (Claims:PayBatch): one payment to one provider, one detail
    per claim paid, a total that is the sum of the details."""
    currency = str(payment.get("currency") or "USD")
    ref = str(payment["paymentRef"])
    return {
        "resourceType": "PaymentReconciliation",
        "id": ref,
        "identifier": [{"system": "urn:careledger:payment", "value": ref}],
        "status": "active",
        "created": created,
        "paymentIssuer": _org(payment["insurer"]),
        "requestor": _org(payment["provider"]),
        "outcome": "complete",
        "disposition": f"payment {ref}: {len(payment['lines'])} claims",
        "paymentDate": str(payment.get("paidAt") or created)[:10],
        "paymentAmount": _money(int(payment["totalCents"]), currency),
        "paymentIdentifier": {"system": "urn:careledger:payment", "value": ref},
        "detail": [
            {
                "identifier": {"system": CLAIM_KEY_SYSTEM, "value": line["claimId"]},
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/payment-type", "code": "payment"}]
                },
                "response": {"reference": f"ClaimResponse/{claim_response_id(line['claimId'])}"},
                "amount": _money(int(line["amountCents"]), currency),
            }
            for line in payment["lines"]
        ],
    }


PREAUTH_DUE = "urn:careledger:preauth-due"  # when the payer's decision was (or is) due, by the request's priority


def preauth(claim: dict[str, Any]) -> dict[str, Any]:
    """The ClaimResponse to a prior-authorisation request, as the chain has it: queued while pended or under
    appeal, complete once decided (approved with its authorisation number, or denied with its reason)."""
    decided = claim["status"] == "decided"
    response = _common(claim, str(claim.get("decidedAt") or claim["submittedAt"])[:19] + "Z") | {
        "use": "preauthorization",
        "outcome": "complete" if decided else "queued",
        "extension": [{"url": PREAUTH_DUE, "valueDateTime": str(claim.get("dueAt") or "")[:19] + "Z"}],
    }
    if not decided:
        return response | {"disposition": f"{claim['status']}: a decision is due by {claim.get('dueAt', '')[:19]}Z"}
    approved = claim.get("outcome") == "approved"
    if approved:
        return response | {"disposition": "approved", "preAuthRef": str(claim.get("preAuthRef") or "")}
    reason = {"coding": [{"system": CARC_SYSTEM, "code": str(claim.get("denialReason") or "")}]}
    return response | {"disposition": "denied", "error": [{"code": reason}]}
