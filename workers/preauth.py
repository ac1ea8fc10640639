"""Prior authorisation, on the insurer's side, in the shape Da Vinci PAS gives it: a request (a Claim with use
`preauthorization`) is approved, denied with a specific reason, or pended for a person; every decision goes on chain
(Claims:DecidePreauth, no PHI) with the time it was due (72 hours expedited, 7 calendar days standard), and the
ClaimResponse is built from what the chain recorded. A pended request is decided later by a person through the
insurer's gateway (`ClaimResponse/{id}/$decide`), which records the same way.
"""

from __future__ import annotations

import logging
from typing import Any

from ledger.errors import LedgerConflict
from records.fhir_claim import preauth_ref
from workers import claim_response, rules
from workers.adjudication import caught_up, coverages_of, keep, load_lines, member_locks
from workers.context import OrgContext

log = logging.getLogger("careledger.workers")

UNDECIDED = {"submitted", "appealed"}


def decision_body(ctx: OrgContext, claim_id: str, decision: str, reason: str = "") -> dict[str, Any]:
    assert ctx.settings.rules is not None
    body: dict[str, Any] = {"decision": decision, "reason": reason, "retentionSeconds": 0}
    if decision == "approved":
        body["preAuthRef"] = preauth_ref(claim_id)
    if decision != "pended":
        body["retentionSeconds"] = ctx.settings.rules.retention_seconds
    return body


def decide(ctx: OrgContext, claim: dict[str, Any]) -> str:
    """Decide a new (or appealed) request by the rules and record it, unless the chain has moved on; keep the
    ClaimResponse the chain's state gives."""
    assert ctx.settings.rules is not None
    caught_up(ctx, claim)
    with member_locks(ctx, {claim["patient"]}):
        on_chain = ctx.run(ctx.ledger.claim(claim["claimId"]))
        if on_chain["status"] in UNDECIDED:
            loaded = load_lines(ctx, on_chain)
            if isinstance(loaded, str):
                return loaded
            verdict = rules.decide_preauth(
                ctx.settings.rules, on_chain, loaded.lines, coverages_of(ctx, claim["patient"])
            )
            body = decision_body(ctx, claim["claimId"], verdict.decision, verdict.reason)
            try:
                on_chain = ctx.run(ctx.ledger.decide_preauth(claim["claimId"], body)).result
            except LedgerConflict:  # decided meanwhile (a rerun, a person): the chain's state stands
                on_chain = ctx.run(ctx.ledger.claim(claim["claimId"]))
        return answer(ctx, on_chain)


def answer(ctx: OrgContext, on_chain: dict[str, Any]) -> str:
    """Keep the ClaimResponse to a request as the chain has it now."""
    keep(ctx, claim_response.preauth(on_chain), on_chain["patient"])
    state = str(on_chain.get("outcome") or on_chain["status"])
    log.info("prior authorisation", extra={"claim": on_chain["claimId"], "state": state})
    return state
