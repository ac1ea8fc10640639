"""The tasks chain events turn into. Each runs as the org whose worker consumes it, and each is idempotent: run twice
(a redelivery after a crash, a replayed event), it has the effect of running once.

- insurer, Claims.Submitted → `adjudicate` (rules → Claims:Adjudicate → ClaimResponse kept at the insurer) and
  `notify` (Redis stream + signed webhook to the insurer's claims system);
- insurer, Claims.Adjudicated → `pay` (Claims:Pay → PaymentReconciliation);
- provider, Claims.Adjudicated → `fetch_claim_response` (from the insurer's gateway over mutual TLS, kept at the
  provider) and `notify` to the provider's EHR;
- provider, Claims.Paid / insurer, Claims.Cancelled → `notify`.

Transient failures (Fabric unavailable or timing out, an MVCC conflict, the network) are retried with backoff. A
contract's CONFLICT on adjudicate or pay means an earlier run already did it: that is success.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import redis
from celery import states
from celery.signals import task_postrun

from fabric_gateway import FabricError
from ledger.contracts import CLAIMS
from ledger.errors import LedgerConflict, LedgerNotFound
from records import disclosure
from records.store import Query
from workers import claim_response, outbox, rules
from workers.app import app
from workers.context import OrgContext, current

log = logging.getLogger("careledger.workers")


class NotYetAvailable(Exception):
    """What the task needs is not there yet (the insurer is still storing its answer): try again shortly."""


MEMBER_LOCK_S = 10
TRANSIENT = (FabricError, httpx.TransportError, redis.ConnectionError, NotYetAvailable)
# Backoff 1 s, 2 s, 4 s, 8 s, 8 s, ... (Celery's smallest factor is one second; shorter waits are explicit below).
RETRY = {"autoretry_for": TRANSIENT, "retry_backoff": True, "retry_backoff_max": 8, "retry_jitter": False}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def keep(ctx: OrgContext, resource: dict[str, Any], patient: str) -> bool:
    """Keep a resource this org made (ClaimResponse, PaymentReconciliation) through the org's records service."""
    return ctx.run(ctx.records.keep(resource, patient))


# ----- insurer ------------------------------------------------------------------------------------------------------


def _coverages(ctx: OrgContext, patient: str) -> list[dict[str, Any]]:
    _, found = ctx.records.store.search(Query("Coverage", patient=patient, count=500))
    return [json.loads(s.content) for s in found]


def _history(ctx: OrgContext, patient: str) -> list[rules.PriorLine]:
    raw: dict[bytes, bytes] = ctx.redis.hgetall(ctx.settings.keys.claim_lines(patient))  # type: ignore[assignment]
    out = []
    for field, value in raw.items():
        line = json.loads(value)
        out.append(rules.PriorLine(field.decode().split("#")[0], line["code"], line["serviceDate"]))
    return out


def _remember(ctx: OrgContext, claim: dict[str, Any], lines: list[dict[str, Any]]) -> None:
    mapping: dict[str, str] = {
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
    return all(c.ok for c in checked)


@contextlib.contextmanager
def member_lock(ctx: OrgContext, patient: str) -> Iterator[None]:
    """One decision per member at a time, so that near-duplicate claims cannot pass each other. The lock expires by
    itself after MEMBER_LOCK_S: a worker killed while holding it delays the member's other claims by at most that
    long. Should a decision ever take longer, the worst case is a near-duplicate decided in parallel, never a second
    adjudication: the contract refuses that."""
    lock = ctx.redis.lock(ctx.settings.keys.member_lock(patient), timeout=MEMBER_LOCK_S, blocking_timeout=0.5)
    if not lock.acquire():  # do not hold a worker thread while waiting: the task is retried shortly instead
        raise NotYetAvailable("another decision on this member is under way")
    try:
        yield
    finally:
        with contextlib.suppress(redis.exceptions.LockError):  # it expired: someone else may hold it now
            lock.release()


def _decide_on_chain(
    ctx: OrgContext, submitted: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None] | str:
    """Decide the claim and record the decision, unless the chain has one already. `submitted` is the claim as the
    Submitted event showed it; if it has moved on since (a rerun), recording refuses and the chain's state is read.
    Returns the claim as the chain now has it, its lines and the recorded decision (None: read it from the chain),
    or a word saying why there is nothing more to do."""
    assert ctx.settings.rules is not None
    claim_id = submitted["claimId"]
    on_chain = submitted
    try:
        lines = ctx.run(ctx.ledger.claim_lines(claim_id))["lines"]
    except LedgerNotFound as e:
        if "purged" in e.message:
            return f"{on_chain['status']}; its lines are purged"  # long settled
        # The event came from a committed block, so the claim exists: the peer that answered is a block behind.
        raise NotYetAvailable(e.message) from None
    if on_chain["status"] == "submitted":
        patient = on_chain["patient"]
        disclosed = _records_disclosed(ctx, on_chain) if ctx.settings.rules.needs_review(lines) else None
        decision = rules.decide(
            ctx.settings.rules, on_chain, lines, _coverages(ctx, patient), _history(ctx, patient), disclosed
        )
        if decision.pended:
            keep(ctx, claim_response.pended(on_chain, decision.note, _now()), patient)
            return "pended"
        body = {
            "lines": [d.as_ledger() for d in decision.lines],
            "retentionSeconds": ctx.settings.rules.retention_seconds,
        }
        try:
            on_chain = ctx.run(ctx.ledger.adjudicate(claim_id, body)).result
            recorded: dict[str, Any] | None = {"outcome": on_chain["outcome"], "lines": body["lines"]}
        except LedgerConflict:  # adjudicated by an earlier run, or cancelled: what the chain says stands
            on_chain, recorded = ctx.run(ctx.ledger.claim(claim_id)), None
        except LedgerNotFound as e:  # the other org's endorsing peer has not committed the claim's block yet
            raise NotYetAvailable(e.message) from None
    else:
        recorded = None
    if on_chain["status"] == "cancelled":
        return "cancelled"
    _remember(ctx, on_chain, lines)
    return on_chain, lines, recorded


@app.task(bind=True, name="careledger.adjudicate", max_retries=8, **RETRY)
def adjudicate(self: Any, claim: dict[str, Any]) -> str:
    """Decide a submitted claim by the insurer's rules, record the decision on chain, keep the ClaimResponse. The
    ClaimResponse is built from what the chain recorded, so a rerun builds the same one."""
    ctx = current()
    if claim["insurer"] != ctx.settings.org.msp_id or ctx.settings.rules is None:
        return "not ours"
    try:
        with member_lock(ctx, claim["patient"]):
            result = _decide_on_chain(ctx, claim)
    except NotYetAvailable:  # a peer a block behind, or the member's previous claim still being decided
        raise self.retry(countdown=min(0.1 * 2**self.request.retries, 0.5), max_retries=240) from None
    if isinstance(result, str):
        log.info("claim not adjudicated here", extra={"claim": claim["claimId"], "why": result})
        return result
    on_chain, lines, adjudication = result
    if adjudication is None:
        adjudication = ctx.run(ctx.ledger.adjudication(claim["claimId"]))
    keep(ctx, claim_response.adjudicated(on_chain, lines, adjudication), claim["patient"])
    log.info("claim adjudicated", extra={"claim": claim["claimId"], "outcome": on_chain["outcome"]})
    return str(on_chain["outcome"])


@app.task(bind=True, name="careledger.pay", max_retries=8, **RETRY)
def pay(self: Any, claim: dict[str, Any]) -> str:
    """Pay an approved or partly approved claim once: the payment reference is derived from the claim id, and the
    contract refuses a second payment."""
    ctx = current()
    if claim["insurer"] != ctx.settings.org.msp_id or claim["outcome"] == "denied":
        return "nothing to pay"
    ref = f"PAY-{claim['claimId']}"
    try:
        paid = ctx.run(ctx.ledger.pay(claim["claimId"], ref)).result
    except LedgerConflict:  # paid by an earlier run
        paid = ctx.run(ctx.ledger.claim(claim["claimId"]))
    except LedgerNotFound as e:  # an endorsing peer is a block behind the event that woke us
        raise NotYetAvailable(e.message) from None
    keep(ctx, claim_response.payment(paid, ref, _now()), claim["patient"])
    return ref


# ----- provider -----------------------------------------------------------------------------------------------------


@app.task(bind=True, name="careledger.fetch_claim_response", max_retries=10, **RETRY)
def fetch_claim_response(self: Any, claim: dict[str, Any], delivery_id: str) -> str:
    """Fetch the insurer's ClaimResponse to one of this provider's claims, keep it, and tell the EHR."""
    ctx = current()
    if claim["provider"] != ctx.settings.org.msp_id:
        return "not ours"
    url = f"{ctx.member_url(claim['insurer'])}/federation/claim-responses/{claim['claimId']}"
    r = ctx.members.get(url)
    if r.status_code == 404:  # the insurer stores it right after the commit that woke us: ask again very soon
        raise self.retry(countdown=0.1 * 2**self.request.retries, max_retries=10)
    r.raise_for_status()
    local = ctx.records.by_ledger_key("Claim", claim["claimId"])
    if local is None:
        return "not a claim held here"  # its patient was erased since
    # Kept as ClaimResponse/<the provider's own Claim id>, pointing at that Claim, so the EHR finds it by its id.
    response = {**r.json(), "id": local.id, "request": {"reference": f"Claim/{local.id}"}}
    response.pop("meta", None)
    keep(ctx, response, local.patient)
    summary = {**claim, "claim": f"Claim/{local.id}", "claimResponse": f"ClaimResponse/{local.id}"}
    msp, queue = ctx.settings.org.msp_id, ctx.settings.queue
    outbox.publish(
        ctx.redis, msp, queue, "careledger.notify", ["Claims.Adjudicated", summary, delivery_id], delivery_id
    )
    return "kept"


# ----- notifications ------------------------------------------------------------------------------------------------


def signature(secret: bytes, body: bytes) -> str:
    """The X-CareLedger-Signature header: HMAC-SHA-256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@app.task(bind=True, name="careledger.notify", max_retries=8, **RETRY)
def notify(self: Any, event: str, claim: dict[str, Any], delivery_id: str) -> str:
    """Put the event on the org's Redis stream (once per delivery id) and hand it to webhook delivery."""
    ctx = current()
    marker = ctx.settings.keys.done(f"stream:{delivery_id}")
    if ctx.redis.set(marker, 1, nx=True):
        ctx.redis.xadd(
            ctx.settings.keys.stream(CLAIMS),
            {"event": event, "claimId": claim["claimId"], "delivery": delivery_id, "claim": json.dumps(claim)},
        )
    if ctx.settings.webhook.url:
        msp, queue = ctx.settings.org.msp_id, ctx.settings.queue
        outbox.publish(
            ctx.redis, msp, queue, "careledger.deliver", [event, claim, delivery_id], f"{delivery_id}:webhook"
        )
    return "notified"


@app.task(bind=True, name="careledger.deliver", max_retries=None, acks_late=True)
def deliver(self: Any, event: str, claim: dict[str, Any], delivery_id: str) -> str:
    """POST the event to the org's webhook: signed, retried with doubling backoff, dead-lettered after the configured
    number of attempts. Receivers can drop repeats by X-CareLedger-Delivery (a crash right after a successful POST
    repeats it); a delivery that succeeded is not sent again by this task."""
    ctx = current()
    hook = ctx.settings.webhook
    marker = ctx.settings.keys.done(f"webhook:{delivery_id}")
    if ctx.redis.exists(marker):
        return "delivered before"
    body = json.dumps({"event": event, "delivery": delivery_id, "claim": claim}, sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "X-CareLedger-Event": event,
        "X-CareLedger-Delivery": delivery_id,
        "X-CareLedger-Signature": signature(hook.secret, body),
    }
    attempt = self.request.retries + 1
    try:
        r = ctx.webhooks.post(hook.url, content=body, headers=headers)
        r.raise_for_status()
    except httpx.HTTPError as e:
        if attempt >= hook.max_attempts:
            dead = {"delivery": delivery_id, "event": event, "url": hook.url, "attempts": attempt, "error": str(e)}
            ctx.redis.lpush(ctx.settings.keys.dead_letters, json.dumps(dead | {"claim": claim}))
            log.warning("webhook dead-lettered", extra={"delivery": delivery_id, "attempts": attempt})
            return "dead-lettered"
        raise self.retry(countdown=hook.backoff_seconds * 2 ** (attempt - 1), exc=e) from None
    ctx.redis.set(marker, 1)
    return f"delivered after {attempt} attempt(s)"


@task_postrun.connect
def _settled(task_id: str | None = None, state: str | None = None, retval: Any = None, **_: Any) -> None:
    """A task that finished (not one that will run again after a retry) leaves the org's outbox."""
    if task_id is None or state not in (states.SUCCESS, states.FAILURE):
        return
    ctx = current()
    outbox.settle(ctx.redis, ctx.settings.org.msp_id, task_id, repr(retval) if state == states.FAILURE else None)
