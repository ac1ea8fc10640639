"""Prior authorisation, on the insurer's side, in the shape Da Vinci PAS gives it: a request (a Claim with use
`preauthorization`) is approved, denied with a specific reason, or pended for a person; every decision goes on chain
(Claims:DecidePreauth, no PHI) with the time it was due (72 hours expedited, 7 calendar days standard), and the
ClaimResponse is built from what the chain recorded. A pended request is decided later by a person through the
insurer's gateway (`ClaimResponse/{id}/$decide`), which records the same way.

Requests that arrive together (one block) are decided together: their lines read in one Claims:LinesBatch, their
decisions recorded in one Claims:DecidePreauthBatch. Each decision names how many decisions the request had when it
was made (`decisionsSeen`), so a rerun of the task (a redelivery, a replayed block) after the chain has moved on is
refused for that request and answered as the chain has it, never recorded twice.
"""

from __future__ import annotations

import logging
from typing import Any

from ledger.errors import LedgerConflict, refused
from records.fhir_claim import preauth_ref
from workers import claim_response, rules
from workers.adjudication import caught_up, coverages_of, keep, load_lines, load_lines_batch, member_locks
from workers.context import OrgContext

log = logging.getLogger("careledger.workers")

UNDECIDED = {"submitted", "appealed"}


def decision_body(
    ctx: OrgContext, claim_id: str, decision: str, reason: str = "", seen: int | None = None
) -> dict[str, Any]:
    """The decision as the contract takes it; `seen`: record it only if the request still has that many decisions."""
    assert ctx.settings.rules is not None
    body: dict[str, Any] = {"decision": decision, "reason": reason, "retentionSeconds": 0}
    if seen is not None:
        body["decisionsSeen"] = seen
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
            seen = len(on_chain.get("decisions") or [])
            body = decision_body(ctx, claim["claimId"], verdict.decision, verdict.reason, seen)
            try:
                on_chain = ctx.run(ctx.ledger.decide_preauth(claim["claimId"], body)).result
            except LedgerConflict:  # decided meanwhile (a rerun, a person): the chain's state stands
                on_chain = ctx.run(ctx.ledger.claim(claim["claimId"]))
        return answer(ctx, on_chain)


def decide_batch(ctx: OrgContext, claims: list[dict[str, Any]]) -> dict[str, str]:
    """Decide requests that arrived together (new or appealed, as their events showed them) and record every
    decision in ONE transaction; returns each request's state (or why it was not decided here)."""
    assert ctx.settings.rules is not None
    if not claims:
        return {}
    caught_up(ctx, claims[0])
    states: dict[str, str] = {}
    with member_locks(ctx, {c["patient"] for c in claims}):
        bodies: dict[str, dict[str, Any]] = {}
        for claim, loaded in zip(claims, load_lines_batch(ctx, claims), strict=True):
            if isinstance(loaded, str):
                states[claim["claimId"]] = loaded
                continue
            coverages = coverages_of(ctx, claim["patient"])
            verdict = rules.decide_preauth(ctx.settings.rules, claim, loaded.lines, coverages)
            seen = len(claim.get("decisions") or [])
            bodies[claim["claimId"]] = decision_body(ctx, claim["claimId"], verdict.decision, verdict.reason, seen)
        if not bodies:
            return states
        result = ctx.run(ctx.ledger.decide_preauth_batch(bodies)).result
        keeping: list[tuple[dict[str, Any], str]] = []
        unexpected: list[Exception] = []
        try:
            for r in result["results"]:
                if r["status"] != "refused":
                    states[r["claimId"]] = answer(ctx, r["claim"], keeping)
                elif r["code"] == "CONFLICT":  # decided meanwhile (a rerun, a person): the chain's state stands
                    log.info("prior authorisation decided meanwhile", extra={"claim": r["claimId"]})
                    states[r["claimId"]] = answer(ctx, ctx.run(ctx.ledger.claim(r["claimId"])), keeping)
                else:  # a decision this worker should not have made: the others are answered, then the task fails
                    unexpected.append(refused(r["code"], r["message"]))
        finally:  # the answers made so far are kept even when a later one has to be tried again
            ctx.run(ctx.records.keep_many(keeping))
        if unexpected:
            raise unexpected[0]
    return states


def answer(ctx: OrgContext, on_chain: dict[str, Any], keeping: list[tuple[dict[str, Any], str]] | None = None) -> str:
    """Keep the ClaimResponse to a request as the chain has it now (`keeping`: add it there, for the caller to keep
    with the others of its batch)."""
    response = claim_response.preauth(on_chain)
    if keeping is not None:
        keeping.append((response, on_chain["patient"]))
    else:
        keep(ctx, response, on_chain["patient"])
    state = str(on_chain.get("outcome") or on_chain["status"])
    log.info("prior authorisation", extra={"claim": on_chain["claimId"], "state": state})
    return state
