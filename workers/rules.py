"""Claim adjudication rules, as data: an insurer's YAML (config/workers/<Org>.yaml, `adjudication`) decides.

The engine is pure: it gets the claim (public summary + private lines), the member's Coverage resources held by the
insurer and the member's earlier claim lines, and returns one outcome per line with reason codes modelled on the X12
claim adjustment reason codes (CARC):

| rule | outcome | CARC |
|---|---|---|
| an exact duplicate of another claim (the Claims contract's edit) | every line denied | 18 exact duplicate |
| a front-end edit on a line (no charge: 16 with RARC M79) | line denied | the edit's CARC |
| no Coverage of the member with this insurer | every line denied | 31 patient cannot be identified as our insured |
| no Coverage active on the service date | every line denied | 27 after coverage terminated (26: before it began) |
| provider not in network | every line denied | 242 services not provided by network providers |
| code needs prior authorisation | line denied, or the claim pended | 197 precertification/authorization absent |
| same code for the member within `window_days` in another claim | line denied | 18 exact duplicate claim/service |
| code needs a records review and the provider refused access (no consent) | line denied | 252 documentation required |
| unit price above the fee schedule | line partial at the maximum | 45 charge exceeds fee schedule/maximum allowable |

A records review (`records_review.codes`) is a consent check for record access: the worker asks the provider's
gateway for the patient's record for the purpose `records_review.purpose` (HPAYMT by default); the provider checks
the patient's consent on chain and logs the access, permit or deny, before answering.
| otherwise | approved as billed | |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

INSURED_UNKNOWN, AFTER_COVERAGE, BEFORE_COVERAGE = "31", "27", "26"
OUT_OF_NETWORK, NO_PRIOR_AUTH, DUPLICATE, OVER_FEE_SCHEDULE = "242", "197", "18", "45"
DOCUMENTATION_REQUIRED = "252"


@dataclass(frozen=True)
class Rules:
    network_providers: frozenset[str]
    fee_schedule: dict[str, int]  # code -> max unit price in cents
    prior_auth_codes: frozenset[str]
    prior_auth_action: str  # deny | pend
    duplicate_window_days: int
    retention_seconds: int
    review_codes: frozenset[str] = frozenset()
    review_purpose: str = "HPAYMT"
    preauth_pend: frozenset[str] = frozenset()  # codes a person decides on a prior-authorisation request
    preauth_deny: dict[str, str] = field(default_factory=dict)  # code -> the specific reason it is denied with

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Rules:
        prior = cfg.get("prior_authorization") or {}
        action = str(prior.get("action", "deny"))
        if action not in ("deny", "pend"):
            raise ValueError(f"prior_authorization.action is deny or pend, not {action!r}")
        return cls(
            network_providers=frozenset(cfg.get("network_providers") or []),
            fee_schedule={str(k): int(v) for k, v in (cfg.get("fee_schedule") or {}).items()},
            prior_auth_codes=frozenset(str(c) for c in prior.get("codes") or []),
            prior_auth_action=action,
            duplicate_window_days=int((cfg.get("duplicates") or {}).get("window_days", 0)),
            retention_seconds=int(cfg.get("retention_seconds") or int(cfg.get("retention_days", 30)) * 86400),
            review_codes=frozenset(str(c) for c in (cfg.get("records_review") or {}).get("codes") or []),
            review_purpose=str((cfg.get("records_review") or {}).get("purpose", "HPAYMT")),
            preauth_pend=frozenset(str(c) for c in (prior.get("requests") or {}).get("pend") or []),
            preauth_deny={str(k): str(v) for k, v in ((prior.get("requests") or {}).get("deny") or {}).items()},
        )

    def needs_review(self, lines: list[dict[str, Any]]) -> bool:
        return any(str(line["code"]) in self.review_codes for line in lines)


@dataclass(frozen=True)
class PriorLine:
    """A line of an earlier claim of the same member, as the insurer remembers it."""

    claim_id: str
    code: str
    service_date: str


@dataclass(frozen=True)
class LineDecision:
    sequence: int
    outcome: str  # approved | partial | denied
    approved_cents: int
    reasons: list[str] = field(default_factory=list)

    def as_ledger(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "outcome": self.outcome,
            "approvedCents": self.approved_cents,
            "reasons": self.reasons,
        }


@dataclass(frozen=True)
class Decision:
    lines: list[LineDecision]
    pended: bool = False  # a rule wants a person to look: nothing goes on chain yet
    note: str = ""


def _coverage_reason(coverages: list[dict[str, Any]], insurer: str, service_date: str) -> str | None:
    """None when a Coverage of this insurer is active on the date; else the CARC that says why not."""
    mine = [
        c for c in coverages if any((p.get("identifier") or {}).get("value") == insurer for p in c.get("payor") or [])
    ]
    if not mine:
        return INSURED_UNKNOWN
    reason = AFTER_COVERAGE
    for c in mine:
        period = c.get("period") or {}
        start, end = str(period.get("start") or "")[:10], str(period.get("end") or "")[:10]
        if c.get("status") != "active":
            continue
        if start and service_date < start:
            reason = BEFORE_COVERAGE
            continue
        if end and service_date > end:
            continue
        return None
    return reason


def duplicate_edit(edits: list[dict[str, Any]]) -> bool:
    """Whether the claim carries the Claims contract's whole-claim edit for an exact duplicate (CARC 18)."""
    return any(int(e.get("sequence") or 0) == 0 and str(e.get("reason")) == DUPLICATE for e in edits)


def line_edits(edits: list[dict[str, Any]]) -> dict[int, list[str]]:
    """The CARCs of the front-end edits on each line (sequence > 0), by line."""
    out: dict[int, list[str]] = {}
    for e in edits:
        if int(e.get("sequence") or 0) > 0:
            out.setdefault(int(e["sequence"]), []).append(str(e["reason"]))
    return out


def _days_apart(a: str, b: str) -> int:
    return abs((date.fromisoformat(a) - date.fromisoformat(b)).days)


def decide(
    rules: Rules,
    claim: dict[str, Any],
    lines: list[dict[str, Any]],
    coverages: list[dict[str, Any]],
    history: list[PriorLine],
    records_disclosed: bool | None = None,
    edits: list[dict[str, Any]] | None = None,
) -> Decision:
    """Adjudicate a claim: `claim` is the ledger's public summary, `lines` the private lines; `records_disclosed`
    says whether the provider let the insurer read the patient's record (None: nobody asked); `edits` the front-end
    edits the claim went on chain with (CARC, RARC; sequence 0 for the whole claim)."""
    service_date = str(claim["serviceDate"])

    def all_denied(reason: str, note: str) -> Decision:
        return Decision([LineDecision(int(x["sequence"]), "denied", 0, [reason]) for x in lines], note=note)

    if duplicate_edit(edits or []):
        return all_denied(DUPLICATE, "an exact duplicate of a claim filed before")
    if (reason := _coverage_reason(coverages, str(claim["insurer"]), service_date)) is not None:
        return all_denied(reason, "no active coverage on the service date")
    if rules.network_providers and claim["provider"] not in rules.network_providers:
        return all_denied(OUT_OF_NETWORK, f"{claim['provider']} is not in network")
    decided: list[LineDecision] = []
    edited = line_edits(edits or [])
    for line in lines:
        seq, code, qty = int(line["sequence"]), str(line["code"]), int(line["quantity"])
        billed = int(line["netCents"])
        if seq in edited:  # what the front end found (a line without a charge) is answered as such
            decided.append(LineDecision(seq, "denied", 0, edited[seq]))
            continue
        if code in rules.prior_auth_codes:
            if rules.prior_auth_action == "pend":
                return Decision([], pended=True, note=f"code {code} needs prior authorisation: pended for review")
            decided.append(LineDecision(seq, "denied", 0, [NO_PRIOR_AUTH]))
            continue
        if code in rules.review_codes and records_disclosed is not True:
            decided.append(LineDecision(seq, "denied", 0, [DOCUMENTATION_REQUIRED]))
            continue
        if any(
            p.code == code
            and p.claim_id != claim["claimId"]
            and _days_apart(p.service_date, service_date) <= rules.duplicate_window_days
            for p in history
        ):
            decided.append(LineDecision(seq, "denied", 0, [DUPLICATE]))
            continue
        maximum = rules.fee_schedule.get(code)
        if maximum is not None and int(line["unitPriceCents"]) > maximum:
            allowed = qty * maximum
            if allowed > 0:
                decided.append(LineDecision(seq, "partial", allowed, [OVER_FEE_SCHEDULE]))
            else:
                decided.append(LineDecision(seq, "denied", 0, [OVER_FEE_SCHEDULE]))
            continue
        decided.append(LineDecision(seq, "approved", billed))
    return Decision(decided)


@dataclass(frozen=True)
class PreauthDecision:
    decision: str  # approved | denied | pended
    reason: str  # a specific reason code for a denial (CARC-style), "" otherwise
    note: str


def decide_preauth(
    rules: Rules, claim: dict[str, Any], lines: list[dict[str, Any]], coverages: list[dict[str, Any]]
) -> PreauthDecision:
    """A prior-authorisation request: denied with a specific reason (no coverage on the service date, out of
    network, a code the insurer does not authorise), pended for a person (codes that need clinical review), or
    approved. Every denial names its reason, as payers must."""
    if (reason := _coverage_reason(coverages, str(claim["insurer"]), str(claim["serviceDate"]))) is not None:
        return PreauthDecision("denied", reason, "no active coverage on the service date")
    if rules.network_providers and claim["provider"] not in rules.network_providers:
        return PreauthDecision("denied", OUT_OF_NETWORK, f"{claim['provider']} is not in network")
    codes = [str(line["code"]) for line in lines]
    if denied := [c for c in codes if c in rules.preauth_deny]:
        return PreauthDecision("denied", rules.preauth_deny[denied[0]], f"code {denied[0]} is not authorised")
    if pended := [c for c in codes if c in rules.preauth_pend]:
        return PreauthDecision("pended", "", f"code {pended[0]} needs clinical review")
    return PreauthDecision("approved", "", "authorised")
