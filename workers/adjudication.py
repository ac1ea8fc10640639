"""The insurer's side of a claim: decide it by the rules (workers.rules), record the decision on chain, keep the
ClaimResponse built from what the chain recorded. Claims that arrive together (one batch submission) are decided
together and recorded in ONE transaction; one claim the contract refuses never fails the others.

Everything here is idempotent: a decision already on chain is read, not made again, so a task that runs twice (a
redelivery, a replayed event) has the effect of running once.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from ledger.contracts import CLAIMS
from ledger.errors import LedgerConflict, LedgerNotFound, LedgerRefused, refused
from records import disclosure
from records.store import Query
from workers import claim_response, rules
from workers.context import OrgContext

log = logging.getLogger("careledger.workers")

MEMBER_LOCK_S = 10


class NotYetAvailable(Exception):
    """What the task needs is not there yet (another decision on the member, an answer still being stored): try
    again shortly."""


def caught_up(ctx: OrgContext, claim: dict[str, Any]) -> None:
    """Wait until both parties' peers have the block of the event that woke us, so what we endorse or read there
    sees the claim as the event showed it (instead of retrying what is only a peer a block behind)."""
    block = int(claim.get("eventBlock") or 0)
    if block:
        ctx.run(ctx.ledger.wait_for_block(CLAIMS, block, [claim["provider"], claim["insurer"]]))


def keep(ctx: OrgContext, resource: dict[str, Any], patient: str) -> bool:
    """Keep a resource this org made (ClaimResponse, PaymentReconciliation) through the org's records service."""
    return ctx.run(ctx.records.keep(resource, patient))


def coverages_of(ctx: OrgContext, patient: str) -> list[dict[str, Any]]:
    _, found = ctx.records.store.search(Query("Coverage", patient=patient, count=500))
    return [json.loads(s.content) for s in found]


def _history(ctx: OrgContext, patient: str) -> list[rules.PriorLine]:
    raw: dict[bytes, bytes] = ctx.redis.hgetall(ctx.settings.keys.claim_lines(patient))  # type: ignore[assignment]
    out = []
    for name, value in raw.items():
        line = json.loads(value)
        out.append(rules.PriorLine(name.decode().split("#")[0], line["code"], line["serviceDate"]))
    return out


def _remember(ctx: OrgContext, claim: dict[str, Any], lines: list[dict[str, Any]]) -> None:
    mapping = {
        f"{claim['claimId']}#{line['sequence']}": json.dumps(
            {"code": line["code"], "serviceDate": claim["serviceDate"]}
        )
        for line in lines
    }
    ctx.redis.hset(ctx.settings.keys.claim_lines(claim["patient"]), mapping=cast(Any, mapping))


# What a records review reads of the patient's record: these elements of these types, never whole resources.
REVIEW_ELEMENTS = (
    "Observation.code",
    "Observation.status",
    "Observation.value[x]",
    "Observation.effective[x]",
    "Procedure.code",
    "Procedure.status",
    "Procedure.performed[x]",
)


def _records_disclosed(ctx: OrgContext, claim: dict[str, Any]) -> bool:
    """Ask the provider for the elements a review needs (REVIEW_ELEMENTS), for the review purpose. The provider
    decides on the patient's consent on chain and logs the access either way (403: no consent), then answers with
    disclosure documents of only those elements. Each must prove its elements against the root it names; the
    insurer is not on the providers channel, so the root's match with the chain is the provider's word, logged."""
    assert ctx.settings.rules is not None
    url = f"{ctx.member_url(claim['provider'])}/federation/disclosures/{claim['patient']}"
    params = {"purpose": ctx.settings.rules.review_purpose, "element": list(REVIEW_ELEMENTS)}
    r = ctx.members.get(url, params=params)
    if r.status_code == 403:
        return False
    if r.status_code != 200:
        r.raise_for_status()
        raise NotYetAvailable(f"the provider answered {r.status_code}")
    documents = r.json().get("disclosures") or []
    checked = [disclosure.verify(d) for d in documents]
    log.info(
        "records review",
        extra={"claim": claim["claimId"], "resources": len(documents), "verified": sum(c.ok for c in checked)},
    )
    # Nothing disclosed is no documentation: a review passes on records that prove themselves, never on none.
    return bool(checked) and all(c.ok for c in checked)


@contextlib.contextmanager
def member_locks(ctx: OrgContext, patients: set[str]) -> Iterator[None]:
    """One decision per member at a time, so that near-duplicate claims cannot pass each other. Locks are taken in
    one order (no two tasks wait on each other) and expire by themselves after MEMBER_LOCK_S: a worker killed while
    holding one delays the member's other claims by at most that long. Should a decision ever take longer, the worst
    case is a near-duplicate decided in parallel, never a second adjudication: the contract refuses that."""
    held: list[Any] = []
    try:
        for patient in sorted(patients):
            lock = ctx.redis.lock(ctx.settings.keys.member_lock(patient), timeout=MEMBER_LOCK_S, blocking_timeout=0.5)
            if not lock.acquire():  # do not hold a worker thread while waiting: the task is retried shortly instead
                raise NotYetAvailable("another decision on this member is under way")
            held.append(lock)
        yield
    finally:
        for lock in held:
            with contextlib.suppress(redis.exceptions.LockError):  # it expired: someone else may hold it now
                lock.release()


@dataclass
class Pending:
    """A submitted claim being decided: as the event showed it, its lines, and the decision once made."""

    claim: dict[str, Any]
    lines: list[dict[str, Any]]
    coverage: str = ""  # the provider's reference to the Coverage, as the claim's private detail has it
    edits: list[dict[str, Any]] = field(default_factory=list)  # front-end edits on chain (CARC 16, 18, ...)
    duplicate_of: str = ""  # the claim this one exactly duplicates, as the Claims contract found
    decision: rules.Decision | None = None


def _pending(claim: dict[str, Any], detail: dict[str, Any]) -> Pending:
    edits = list(detail.get("edits") or [])
    return Pending(
        claim, detail["lines"], str(detail.get("coverage") or ""), edits, str(detail.get("duplicateOf") or "")
    )


def _not_loaded(refusal: LedgerRefused) -> str:
    """What a refused read of a claim's lines means here: a word saying why there is nothing to decide, or the
    exception the task acts on. NOT_FOUND is one code for three cases the contract tells apart only in its message:
    purged after retention (long settled), and the claim or its lines not on this peer yet (try again shortly).
    Any other refusal is raised as it is."""
    if isinstance(refusal, LedgerNotFound):
        if "purged" in refusal.message:
            return "its lines are purged"  # long settled
        raise NotYetAvailable(refusal.message) from None
    raise refusal


def load_lines(ctx: OrgContext, claim: dict[str, Any]) -> Pending | str:
    """The claim's lines, or a word saying why there is nothing to decide."""
    try:
        detail = ctx.run(ctx.ledger.claim_lines(claim["claimId"]))
    except LedgerNotFound as e:
        return _not_loaded(e)
    return _pending(claim, detail)


def load_lines_batch(ctx: OrgContext, claims: list[dict[str, Any]]) -> list[Pending | str]:
    """Each claim's lines, or the word load_lines would give, from ONE Claims:LinesBatch read (instead of one
    endorsed read per claim). Each result's code and message become the refusal load_lines would have caught, and
    are decided the same way, claim by claim in order: the first claim not there yet raises NotYetAvailable, as the
    loop of single reads did."""
    ids = list(dict.fromkeys(c["claimId"] for c in claims))  # the contract refuses an id asked twice
    results = {r["claimId"]: r for r in ctx.run(ctx.ledger.claim_lines_batch(ids))}
    loaded: list[Pending | str] = []
    for claim in claims:
        r = results[claim["claimId"]]
        if r.get("detail") is not None:
            loaded.append(_pending(claim, r["detail"]))
        else:
            loaded.append(_not_loaded(refused(r["code"], r["message"])))
    return loaded


def _decide(ctx: OrgContext, claims: list[Pending]) -> None:
    """Decide each claim by the rules, in order; a claim decided earlier in the same batch counts as history for
    the ones after it (so near-duplicates within one batch are caught too)."""
    assert ctx.settings.rules is not None
    for p in claims:
        patient = p.claim["patient"]
        disclosed = _records_disclosed(ctx, p.claim) if ctx.settings.rules.needs_review(p.lines) else None
        history = _history(ctx, patient) + [
            rules.PriorLine(q.claim["claimId"], str(line["code"]), str(q.claim["serviceDate"]))
            for q in claims
            if q is not p and q.decision is not None and q.claim["patient"] == patient
            for line in q.lines
        ]
        p.decision = rules.decide(
            ctx.settings.rules, p.claim, p.lines, coverages_of(ctx, patient), history, disclosed, p.edits
        )


def _ledger_body(ctx: OrgContext, decision: rules.Decision) -> dict[str, Any]:
    assert ctx.settings.rules is not None
    return {"lines": [d.as_ledger() for d in decision.lines], "retentionSeconds": ctx.settings.rules.retention_seconds}


def _answer(
    ctx: OrgContext,
    on_chain: dict[str, Any],
    p: Pending,
    recorded: dict[str, Any] | None = None,
    keeping: list[tuple[dict[str, Any], str]] | None = None,
) -> str:
    """Keep the ClaimResponse and the ExplanationOfBenefit built from what the chain recorded (`recorded`: the
    decision this run recorded; None: read it from the chain), never from a fresh decision. `keeping`: add them
    there, for the caller to keep with the others of its batch."""
    if on_chain["status"] == "cancelled":
        return "cancelled"
    if on_chain["status"] == "submitted":
        raise NotYetAvailable("the claim is still submitted on chain: try again")
    if recorded is None:
        try:
            recorded = ctx.run(ctx.ledger.adjudication(on_chain["claimId"]))
        except LedgerNotFound as e:
            if on_chain.get("linesPurged"):  # decided by an earlier run, and its retention has passed since
                return "its lines are purged"
            raise NotYetAvailable(e.message) from None
    _remember(ctx, on_chain, p.lines)
    edits = claim_response.Edits(p.edits, p.duplicate_of)
    response = claim_response.adjudicated(on_chain, p.lines, recorded, edits)
    eob = claim_response.explanation_of_benefit(on_chain, p.lines, recorded, p.coverage, edits)
    if keeping is not None:
        keeping += [(response, on_chain["patient"]), (eob, on_chain["patient"])]
    else:
        keep(ctx, response, on_chain["patient"])
        keep(ctx, eob, on_chain["patient"])
    log.info("claim adjudicated", extra={"claim": on_chain["claimId"], "outcome": on_chain["outcome"]})
    return str(on_chain["outcome"])


def adjudicate_one(ctx: OrgContext, claim: dict[str, Any]) -> str:
    """Decide one submitted claim and record it with Claims:Adjudicate, unless the chain has a decision already."""
    caught_up(ctx, claim)
    with member_locks(ctx, {claim["patient"]}):
        loaded = load_lines(ctx, claim)
        if isinstance(loaded, str):
            return loaded
        _decide(ctx, [loaded])
        assert loaded.decision is not None
        if loaded.decision.pended:
            keep(ctx, claim_response.pended(claim, loaded.decision.note, claim_response.now()), claim["patient"])
            return "pended"
        body = _ledger_body(ctx, loaded.decision)
        try:
            on_chain = ctx.run(ctx.ledger.adjudicate(claim["claimId"], body)).result
        except LedgerConflict:  # adjudicated by an earlier run, or cancelled: the chain's state says which
            return _answer(ctx, ctx.run(ctx.ledger.claim(claim["claimId"])), loaded)
        return _answer(ctx, on_chain, loaded, {"outcome": on_chain["outcome"], "lines": body["lines"]})


def adjudicate_batch(ctx: OrgContext, claims: list[dict[str, Any]]) -> dict[str, str]:
    """Decide claims that arrived together: their lines read in ONE Claims:LinesBatch, every decision recorded in
    ONE Claims:AdjudicateBatch transaction; returns each claim's outcome (or why it was not adjudicated here)."""
    if not claims:
        return {}
    caught_up(ctx, claims[0])
    outcomes: dict[str, str] = {}
    with member_locks(ctx, {c["patient"] for c in claims}):
        loaded: list[Pending] = []
        for claim, found in zip(claims, load_lines_batch(ctx, claims), strict=True):
            if isinstance(found, str):
                outcomes[claim["claimId"]] = found
            else:
                loaded.append(found)
        _decide(ctx, loaded)
        for p in loaded:
            assert p.decision is not None
            if p.decision.pended:
                keep(ctx, claim_response.pended(p.claim, p.decision.note, claim_response.now()), p.claim["patient"])
                outcomes[p.claim["claimId"]] = "pended"
        to_record = {p.claim["claimId"]: p for p in loaded if p.claim["claimId"] not in outcomes}
        if to_record:
            bodies = {cid: _ledger_body(ctx, p.decision) for cid, p in to_record.items() if p.decision}
            result = ctx.run(ctx.ledger.adjudicate_batch(bodies)).result
            keeping: list[tuple[dict[str, Any], str]] = []
            try:
                for r in result["results"]:
                    cid, pending = r["claimId"], to_record[r["claimId"]]
                    if r["status"] == "adjudicated":
                        recorded = {"outcome": r["claim"]["outcome"], "lines": bodies[cid]["lines"]}
                        outcomes[cid] = _answer(ctx, r["claim"], pending, recorded, keeping)
                    else:  # refused: an earlier run (or a cancel) came first, and the chain's state says which
                        log.info("claim refused in batch", extra={"claim": cid, "code": r["code"]})
                        outcomes[cid] = _answer(ctx, ctx.run(ctx.ledger.claim(cid)), pending, keeping=keeping)
            finally:  # the answers made so far are kept even when a later claim has to be tried again
                ctx.run(ctx.records.keep_many(keeping))
    return outcomes
