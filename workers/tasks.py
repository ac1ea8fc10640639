"""The tasks chain events turn into. Each runs as the org whose worker consumes it, and each is idempotent: run twice
(a redelivery after a crash, a replayed event), it has the effect of running once.

- insurer, Claims.Submitted → `adjudicate` (rules → Claims:Adjudicate → ClaimResponse kept at the insurer) and
  `notify` (Redis stream + signed webhook to the insurer's claims system);
- insurer, Claims.Adjudicated → `pay` (Claims:Pay → PaymentReconciliation);
- provider, Claims.Adjudicated → `fetch_claim_response` (from the insurer's gateway over mutual TLS, kept at the
  provider) and `notify` to the provider's EHR;
- provider, Claims.Paid / insurer, Claims.Cancelled → `notify`.

When one block moves many claims, the listener sends one task for each kind instead of one per claim
(`notify_many`, `pay_many`, and `fetch_claim_responses` per insurer), which does for each claim what its own task
would: at payer load, most of a worker's time went to receiving, running and crossing out tasks, not to the work.

Transient failures (Fabric unavailable or timing out, an MVCC conflict, the network) are retried with backoff. A
contract's CONFLICT on adjudicate or pay means an earlier run already did it: that is success.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
from typing import Any, cast

import httpx
import redis
from celery import states
from celery.exceptions import MaxRetriesExceededError
from celery.signals import task_postrun
from kombu.exceptions import OperationalError

from fabric_gateway import FabricError
from ledger.contracts import CLAIMS
from ledger.errors import LedgerConflict, LedgerNotFound
from workers import adjudication, claim_response, outbox, preauth, remittance, subscriptions
from workers.adjudication import NotYetAvailable, caught_up, keep
from workers.app import app
from workers.context import OrgContext, current

log = logging.getLogger("careledger.workers")


# A wait on the ledger that timed out is an unknown outcome, not a failure of the work: the task runs again and the
# chain's state decides what is left to do. Redis away (a task's own keys, or the broker when it sends a task) is not
# a failure of the work either.
TRANSIENT = (
    FabricError,
    TimeoutError,
    httpx.TransportError,
    redis.ConnectionError,
    redis.TimeoutError,
    OperationalError,
    NotYetAvailable,
)
# Backoff 1 s, 2 s, 4 s, 8 s, 8 s, ... (Celery's smallest factor is one second; shorter waits are explicit below).
# The purge's lock is a lease, renewed after each claim purged: a worker killed while purging holds purges up no
# longer than this (it was ten minutes, and a kill at the wrong moment stopped every purge for that long).
PURGE_LEASE_S = 30
RETRY = {"autoretry_for": TRANSIENT, "retry_backoff": True, "retry_backoff_max": 8, "retry_jitter": False}


@app.task(bind=True, name="careledger.adjudicate", max_retries=8, **RETRY)
def adjudicate(self: Any, claim: dict[str, Any]) -> str:
    """Decide a submitted claim by the insurer's rules, record the decision on chain, keep the ClaimResponse."""
    ctx = current()
    if claim["insurer"] != ctx.settings.org.msp_id or ctx.settings.rules is None:
        return "not ours"
    try:
        return adjudication.adjudicate_one(ctx, claim)
    except NotYetAvailable:  # the member's previous claim still being decided
        raise self.retry(countdown=min(0.1 * 2**self.request.retries, 0.5), max_retries=240) from None


@app.task(bind=True, name="careledger.adjudicate_batch", max_retries=8, **RETRY)
def adjudicate_batch(self: Any, claims: list[dict[str, Any]]) -> dict[str, str]:
    """Decide the claims that arrived together (one batch submission) and record them in one transaction."""
    ctx = current()
    ours = [c for c in claims if c["insurer"] == ctx.settings.org.msp_id]
    if ctx.settings.rules is None or not ours:
        return {}
    try:
        return adjudication.adjudicate_batch(ctx, ours)
    except NotYetAvailable:
        raise self.retry(countdown=min(0.1 * 2**self.request.retries, 0.5), max_retries=240) from None


@app.task(bind=True, name="careledger.decide_preauth", max_retries=8, **RETRY)
def decide_preauth(self: Any, claim: dict[str, Any]) -> str:
    """Decide a prior-authorisation request (new or appealed) by the rules and record the decision on chain."""
    ctx = current()
    if claim["insurer"] != ctx.settings.org.msp_id or ctx.settings.rules is None:
        return "not ours"
    try:
        return preauth.decide(ctx, claim)
    except NotYetAvailable:
        raise self.retry(countdown=min(0.1 * 2**self.request.retries, 0.5), max_retries=240) from None


@app.task(bind=True, name="careledger.decide_preauth_batch", max_retries=8, **RETRY)
def decide_preauth_batch(self: Any, claims: list[dict[str, Any]]) -> dict[str, str]:
    """Decide the prior-authorisation requests of one block and record the decisions in one transaction."""
    ctx = current()
    ours = [c for c in claims if c["insurer"] == ctx.settings.org.msp_id]
    if ctx.settings.rules is None or not ours:
        return {}
    try:
        return preauth.decide_batch(ctx, ours)
    except NotYetAvailable:
        raise self.retry(countdown=min(0.1 * 2**self.request.retries, 0.5), max_retries=240) from None


@app.task(bind=True, name="careledger.keep_preauth", max_retries=8, **RETRY)
def keep_preauth(self: Any, claim: dict[str, Any]) -> str:
    """Keep the ClaimResponse to a request a person decided (the decision is on chain already)."""
    ctx = current()
    caught_up(ctx, claim)
    return preauth.answer(ctx, ctx.run(ctx.ledger.claim(claim["claimId"])))


@app.task(bind=True, name="careledger.pay", max_retries=8, **RETRY)
def pay(self: Any, claim: dict[str, Any]) -> str:
    """Pay an approved or partly approved claim once: in the provider's next remittance (batch mode), or now with
    a payment reference derived from the claim id, which the contract refuses to pay twice."""
    ctx = current()
    if claim["insurer"] != ctx.settings.org.msp_id or claim["outcome"] == "denied":
        return "nothing to pay"
    caught_up(ctx, claim)
    if ctx.settings.remittance.mode == "batch":
        if ctx.run(ctx.ledger.claim(claim["claimId"]))["status"] == "paid":  # a repeat after its payment
            return "paid already"
        remittance.queue(ctx, claim)
        return "queued for the next remittance"
    return _pay_now(ctx, claim)


@app.task(bind=True, name="careledger.pay_many", max_retries=8, **RETRY)
def pay_many(self: Any, claims: list[dict[str, Any]]) -> str:
    """`pay` for the claims one block adjudicated. In batch mode they are queued together, without reading each
    back from the chain first: a repeat that queues a claim paid since is refused by the next remittance's payment,
    and the chain's state then takes it off the queue (workers.remittance). Paid one by one, each is a `pay` task."""
    ctx = current()
    payable = [c for c in claims if c["insurer"] == ctx.settings.org.msp_id and c["outcome"] != "denied"]
    if not payable:
        return "nothing to pay"
    if ctx.settings.remittance.mode == "batch":
        remittance.queue(ctx, *payable)
        return f"{len(payable)} queued for the next remittance"
    msp, queue = ctx.settings.org.msp_id, ctx.settings.queue
    for claim in payable:  # paid one by one: each its own task, so one that cannot be paid holds up no other
        outbox.publish(ctx.redis, msp, queue, "careledger.pay", [claim], f"{self.request.id}:{claim['claimId']}")
    return f"{len(payable)} sent to be paid"


def _pay_now(ctx: OrgContext, claim: dict[str, Any]) -> str:
    """Pay one claim now, with a payment reference derived from its id, which the contract refuses to pay twice."""
    ref = f"PAY-{claim['claimId']}"
    try:
        paid = ctx.run(ctx.ledger.pay(claim["claimId"], ref)).result
    except (LedgerConflict, LedgerNotFound):
        # Done already, or not payable: decided by the claim's state on chain, never by the refusal's wording.
        paid = ctx.run(ctx.ledger.claim(claim["claimId"]))
        if paid["status"] == "adjudicated":
            raise NotYetAvailable("the claim is adjudicated and not paid yet: try again") from None
        if paid["status"] != "paid" or paid["paymentRef"] != ref:
            log.warning("claim not paid here", extra={"claim": claim["claimId"], "status": paid["status"]})
            return f"not paid: {paid['status']}"
    keep(ctx, claim_response.payment(paid, ref, claim_response.now()), claim["patient"])
    return ref


@app.task(bind=True, name="careledger.remit", max_retries=8, **RETRY)
def remit(self: Any) -> list[str]:
    """One remittance cycle: each provider whose queued claims are due is paid in one transaction."""
    ctx = current()
    return remittance.remit_due(ctx) if ctx.settings.rules is not None else []


@app.task(bind=True, name="careledger.purge_due", max_retries=3, **RETRY)
def purge_due(self: Any) -> int:
    """Purge the private lines of every claim of this org whose retention has passed (the summary stays)."""
    ctx = current()
    # One purge at a time (a lease that expires unless renewed): a purge still running when the next period starts (a
    # backlog after an outage) would otherwise be joined by another that purges the same claims, and another, each
    # holding a worker thread. A lease lost meanwhile (a read slower than the lease) ends this run; a claim purged by
    # both is refused the second time, which is taken as done below.
    lock = ctx.redis.lock(ctx.settings.keys.purge_lock, timeout=PURGE_LEASE_S, blocking_timeout=0)
    if not lock.acquire():
        return 0
    try:
        due = ctx.run(ctx.ledger.due_for_purge(claim_response.now()))
        for n, claim in enumerate(due):
            try:
                lock.reacquire()  # the lease renewed; lost (it ran out and another purge took it): leave the rest to it
            except redis.exceptions.LockError:
                return n
            try:
                ctx.run(ctx.ledger.purge_lines(claim["claimId"]))
            except (LedgerConflict, LedgerNotFound) as e:  # purged meanwhile by the other party
                log.info("claim not purged here", extra={"claim": claim["claimId"], "why": e.message})
        return len(due)
    finally:
        with contextlib.suppress(redis.exceptions.LockError):  # it expired: another purge may hold it now
            lock.release()


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
    if not _final(claim, r.json()):  # the insurer is still keeping it
        raise self.retry(countdown=0.1 * 2**self.request.retries, max_retries=10)
    answer = _answer_here(ctx, claim, r.json())
    if isinstance(answer, str):
        return answer
    response, patient, notice = answer
    keep(ctx, response, patient)
    msp, queue = ctx.settings.org.msp_id, ctx.settings.queue
    outbox.publish(ctx.redis, msp, queue, "careledger.notify", [_answered(claim), notice, delivery_id], delivery_id)
    return "kept"


CLAIM_RESPONSES_PER_REQUEST = 100  # what the insurer's gateway answers in one request


@app.task(bind=True, name="careledger.fetch_claim_responses", max_retries=10, **RETRY)
def fetch_claim_responses(self: Any, items: list[list[Any]]) -> str:
    """`fetch_claim_response` for the claims one block answered from one insurer, each as [claim, delivery id]:
    their responses in one request, their notifications in one task. Those not answered yet are asked for again,
    alone; those answered are not fetched twice."""
    ctx = current()
    ours = [(dict(c), str(d)) for c, d in items if c["provider"] == ctx.settings.org.msp_id]
    responses: dict[str, dict[str, Any]] = {}
    msp, queue = ctx.settings.org.msp_id, ctx.settings.queue
    handed_off: set[str] = set()
    for start in range(0, len(ours), CLAIM_RESPONSES_PER_REQUEST):
        part = ours[start : start + CLAIM_RESPONSES_PER_REQUEST]
        url = f"{ctx.member_url(part[0][0]['insurer'])}/federation/claim-responses"
        r = ctx.members.get(url, params={"claim": [c["claimId"] for c, _ in part]})
        if 400 <= r.status_code < 500:  # an insurer's gateway without this form (an older one), or one refusing it:
            for claim, delivery_id in part:  # each claim fetched on its own, as it was before
                args = [claim, delivery_id]
                outbox.publish(ctx.redis, msp, queue, "careledger.fetch_claim_response", args, f"{delivery_id}:alone")
                handed_off.add(delivery_id)
            continue
        r.raise_for_status()
        for entry in r.json().get("entry") or []:
            responses[str(entry["resource"]["request"]["reference"]).removeprefix("Claim/")] = entry["resource"]
    keeping: list[tuple[dict[str, Any], str]] = []
    notices: list[list[Any]] = []
    later: list[list[Any]] = []
    for claim, delivery_id in ours:
        if delivery_id in handed_off:
            continue
        response = responses.get(claim["claimId"])
        try:
            if response is None or not _final(claim, response):
                raise NotYetAvailable("not answered yet")
            answer = _answer_here(ctx, claim, response)
        except NotYetAvailable:
            later.append([claim, delivery_id])
            continue
        if not isinstance(answer, str):
            keeping.append(answer[:2])
            notices.append([_answered(claim), answer[2], delivery_id])
    ctx.run(ctx.records.keep_many(keeping))  # one write to the store for all of them
    if notices:
        task_id = "notify-many:" + hashlib.sha256("|".join(n[2] for n in notices).encode()).hexdigest()[:32]
        outbox.publish(ctx.redis, msp, queue, "careledger.notify_many", [notices], task_id)
    if later:
        raise self.retry(args=[later], countdown=0.1 * 2**self.request.retries, max_retries=10)
    return f"kept {len(notices)}"


def _final(claim: dict[str, Any], response: dict[str, Any]) -> bool:
    """Whether the response is the answer the event announced (a prior authorisation decided, not still queued)."""
    return not (claim.get("status") == "decided" and response.get("outcome") == "queued")


def _answered(claim: dict[str, Any]) -> str:
    return "Claims.PreauthDecided" if claim.get("use") == "preauthorization" else "Claims.Adjudicated"


def _answer_here(
    ctx: OrgContext, claim: dict[str, Any], response: dict[str, Any]
) -> tuple[dict[str, Any], str, dict[str, Any]] | str:
    """The insurer's response to one of this provider's claims as kept here, the patient it is filed under and the
    EHR's notification of it; or why nothing is kept. NotYetAvailable: the Claim is not committed here yet."""
    local = ctx.records.by_ledger_key("Claim", claim["claimId"])
    if local is None:
        if ctx.records.store.is_erased(claim["patient"]):
            return "not a claim held here"  # its patient was erased since
        # Filed here and on chain, but its write not settled here yet (its outcome was unknown to the gateway,
        # whose reconciler commits it as soon as the ledger answers): ask again shortly.
        raise NotYetAvailable("the Claim is not committed here yet")
    # Kept as ClaimResponse/<the provider's own Claim id>, pointing at that Claim, so the EHR finds it by its id.
    kept = {**response, "id": local.id, "request": {"reference": f"Claim/{local.id}"}}
    kept.pop("meta", None)
    return kept, local.patient, {**claim, "claim": f"Claim/{local.id}", "claimResponse": f"ClaimResponse/{local.id}"}


@app.task(bind=True, name="careledger.fetch_payment", max_retries=10, **RETRY)
def fetch_payment(self: Any, payment: dict[str, Any], delivery_id: str) -> str:
    """Fetch the insurer's PaymentReconciliation of a batch payment to this provider, keep it, and tell the EHR."""
    ctx = current()
    url = f"{ctx.member_url(payment['insurer'])}/federation/payments/{payment['paymentRef']}"
    r = ctx.members.get(url)
    if r.status_code == 404:  # the insurer keeps it right after the commit that woke us: ask again very soon
        raise self.retry(countdown=0.1 * 2**self.request.retries, max_retries=10)
    r.raise_for_status()
    reconciliation = r.json()
    reconciliation.pop("meta", None)
    keep(ctx, reconciliation, remittance.DIRECTORY)
    summary = {**payment, "paymentReconciliation": f"PaymentReconciliation/{reconciliation['id']}"}
    msp, queue = ctx.settings.org.msp_id, ctx.settings.queue
    outbox.publish(ctx.redis, msp, queue, "careledger.notify", ["Claims.PaidBatch", summary, delivery_id], delivery_id)
    return "kept"


# ----- notifications ------------------------------------------------------------------------------------------------


def signature(secret: bytes, body: bytes) -> str:
    """The X-CareLedger-Signature header: HMAC-SHA-256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@app.task(bind=True, name="careledger.notify", max_retries=8, **RETRY)
def notify(self: Any, event: str, claim: dict[str, Any], delivery_id: str) -> str:
    """Put the event on the org's Redis stream (once per delivery id) and hand it to webhook delivery."""
    return _notify(current(), [(event, claim, delivery_id)])


@app.task(bind=True, name="careledger.notify_many", max_retries=8, **RETRY)
def notify_many(self: Any, items: list[list[Any]]) -> str:
    """`notify` for the events of one block (or one batch of answers), each as [event, claim, delivery id]."""
    return _notify(current(), [(str(event), dict(claim), str(delivery)) for event, claim, delivery in items])


def _notify(ctx: OrgContext, items: list[tuple[str, dict[str, Any], str]]) -> str:
    markers = [ctx.settings.keys.done(f"stream:{delivery_id}") for _, _, delivery_id in items]
    stream = ctx.settings.keys.stream(CLAIMS)

    def append_once(pipe: redis.client.Pipeline) -> None:
        # Each marker and its entry in one MULTI/EXEC: a connection lost (or Redis killed) between the two would
        # otherwise leave the marker without its entry, and every rerun would skip the entry for good.
        done = pipe.mget(markers)
        pipe.multi()
        for (event, claim, delivery_id), marker, was in zip(items, markers, done, strict=True):
            if was is None:
                entry = {"event": event, "claimId": claim.get("claimId", ""), "delivery": delivery_id}
                pipe.set(marker, 1)
                pipe.xadd(stream, cast(Any, entry | {"claim": json.dumps(claim)}))

    ctx.redis.transaction(append_once, *markers)
    msp, queue = ctx.settings.org.msp_id, ctx.settings.queue
    live = subscriptions.live(ctx)  # read once for all the events
    for event, claim, delivery_id in items:
        if ctx.settings.webhook.url:
            args = [event, claim, delivery_id]
            outbox.publish(ctx.redis, msp, queue, "careledger.deliver", args, f"{delivery_id}:webhook")
        subscriptions.announce(ctx, event, claim, delivery_id, live)  # FHIR topic-based subscriptions
    return "notified"


# Redis or the broker away while a webhook delivery reads or sets its marker, or sends its retry: tried again.
REDIS_AWAY = (redis.ConnectionError, redis.TimeoutError, OperationalError)


@app.task(
    bind=True,
    name="careledger.deliver",
    max_retries=None,
    acks_late=True,
    autoretry_for=REDIS_AWAY,
    retry_backoff=True,
    retry_backoff_max=8,
    retry_jitter=False,
)
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


def can_still_succeed(error: Any) -> bool:
    """A failure that says nothing about the work: the ledger, a member's gateway or Redis was not there, or not
    yet, for longer than the task's retries lasted."""
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code >= 500
    return isinstance(error, (*TRANSIENT, MaxRetriesExceededError))


@task_postrun.connect
def _settled(task_id: str | None = None, state: str | None = None, retval: Any = None, **_: Any) -> None:
    """A task that finished (not one that will run again after a retry) leaves the org's outbox. One that gave up
    on something that can still succeed stays there: the listener sends it again (outbox.sweep)."""
    if task_id is None or state not in (states.SUCCESS, states.FAILURE):
        return
    ctx = current()
    if state == states.FAILURE and can_still_succeed(retval):
        log.warning("task gave up for now; it is sent again later", extra={"task": task_id, "error": repr(retval)})
        return
    outbox.settle(ctx.redis, ctx.settings.org.msp_id, task_id, repr(retval) if state == states.FAILURE else None)
