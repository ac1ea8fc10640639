"""Topic-based subscriptions at an org's workers: which chain events reach which Subscription, event numbers, the
rest-hook channel (handshake, event notifications with retries, heartbeats) and the status the server keeps.

- `announce` (called by `workers.tasks.notify` for every claim event of the org) hands the event to `on_event` when
  some live subscription of the org has one of its topics.
- `on_event` makes the focus (what a subscriber is told about: see `records.subscriptions.TOPICS`), and for each
  subscription whose filters match: gives the event its number (once: a Lua script increments the subscription's
  counter only for an event it has not numbered yet, so a rerun gets the same number), builds the notification,
  keeps it (so `$events` can replay it) and sends `deliver` for it. Events are numbered and kept for a subscription
  that is requested or in error too (the IG: the count goes on), but sent only while it is active.
- `deliver` POSTs one kept notification, retried with doubling backoff; after CARELEDGER_SUBSCRIPTION_ATTEMPTS failed
  attempts the subscription's status becomes `error` (with the reason in `Subscription.error`) and nothing more is
  sent until the client asks for it again (`requested` or `active`), which starts with a handshake.
- `tick` runs every CARELEDGER_SUBSCRIPTION_TICK seconds (default 2; the listener process's `ticker` thread sends
  it): a handshake for every `requested` subscription, a heartbeat for every active one with a heartbeatPeriod that
  was sent nothing for that long, and `off` for one whose `end` has passed.

The counters and the channel's state live in Redis (`consortium.redis_keys`); everything a client can read (the
Subscription with its status, the kept notifications) lives in the org's store, where the gateway reads it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import httpx
import redis

from fabric_gateway import FabricError
from records import subscriptions as sub
from records.service import now_instant
from records.store import Stored
from workers import outbox
from workers.app import app
from workers.context import OrgContext, current
from workers.settings import WorkerSettings

log = logging.getLogger("careledger.subscriptions")

ATTEMPTS = int(os.environ.get("CARELEDGER_SUBSCRIPTION_ATTEMPTS") or 6)  # per notification, then status error
BACKOFF_S = float(os.environ.get("CARELEDGER_SUBSCRIPTION_BACKOFF") or 1.0)  # doubled after every failed attempt
BACKOFF_MAX_S = 30.0  # a waiting retry's message keeps its lease (workers.app), so it is not sent again meanwhile
TICK_S = float(os.environ.get("CARELEDGER_SUBSCRIPTION_TICK") or 2.0)
EVENT_MARKER_S = 30 * 24 * 3600  # how long an event's number is remembered against reruns of its task
HANDSHAKE_PENDING_S = 900  # a handshake on its way (retries included) is not sent again before it finished or this

EVENT_TASK = "careledger.subscriptions.event"
DELIVER_TASK = "careledger.subscriptions.deliver"
HANDSHAKE_TASK = "careledger.subscriptions.handshake"
HEARTBEAT_TASK = "careledger.subscriptions.heartbeat"
TICK_TASK = "careledger.subscriptions.tick"

TRANSIENT = (FabricError, TimeoutError, redis.ConnectionError)
RETRY = {"autoretry_for": TRANSIENT, "retry_backoff": True, "retry_backoff_max": 8, "retry_jitter": False}

F = TypeVar("F", bound=Callable[..., Any])


def task(**options: Any) -> Callable[[F], F]:
    """Celery's task decorator, typed (it is untyped): the function stays the function for the type checker."""
    return cast(Callable[[F], F], app.task(**options))


class NotYetAvailable(Exception):
    """What the notification is about is not kept here yet: try again shortly."""


# ----- numbering --------------------------------------------------------------------------------------------------

# KEYS[1]: the event's number for this subscription; KEYS[2]: the subscription's counter; ARGV[1]: how long the
# event's number is remembered. One event gets one number however often its task runs, and numbers only grow.
NUMBER_ONCE = """
local n = redis.call('GET', KEYS[1])
if n then return tonumber(n) end
n = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], n, 'EX', ARGV[1])
return n
"""


def number(ctx: OrgContext, subscription_id: str, event_id: str) -> int:
    """The event's number in the subscription: the next one the first time, the same one on every rerun. A counter
    lost with Redis starts again from the notifications kept in the store, never reusing a number."""
    keys = ctx.settings.keys
    counter = keys.subscription_events(subscription_id)
    if not ctx.redis.exists(counter):
        ctx.redis.set(counter, sub.events_kept(ctx.records, subscription_id), nx=True)
    marker = keys.subscription_event(subscription_id, event_id)
    # A registered script runs by EVALSHA (loading it once), which the org's Redis user may run; plain EVAL it may not.
    script = ctx.redis.register_script(NUMBER_ONCE)
    return int(cast(Any, script(keys=[marker, counter], args=[EVENT_MARKER_S])))


# ----- what an event is about ---------------------------------------------------------------------------------------

CLAIM_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]}
PRIORITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/processpriority"
PAYMENT_SYSTEM = "urn:careledger:payment"


def instant(text: Any) -> str:
    """A chain time (RFC 3339, up to nanoseconds) as a FHIR instant; now when there is none."""
    if not text:
        return now_instant()
    value = datetime.fromisoformat(str(text).replace("Z", "+00:00")).astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _money(cents: int, currency: str) -> dict[str, Any]:
    return {"value": cents / 100, "currency": currency}


def _patient(pseudonym: str) -> dict[str, Any]:
    return {"identifier": {"system": sub.PSEUDONYM_SYSTEM, "value": pseudonym}}


def claim_from_chain(claim: dict[str, Any]) -> dict[str, Any]:
    """The claim as the claims channel records it, as a FHIR Claim: no lines (they stay in the private collection),
    the coverage only named there."""
    key = str(claim["claimId"])
    priority = "stat" if claim.get("priority") == "expedited" else "normal"
    return {
        "resourceType": "Claim",
        "id": key,
        "identifier": [sub.claim_identifier(key)],
        "status": "cancelled" if claim.get("status") == "cancelled" else "active",
        "type": CLAIM_TYPE,
        "use": claim.get("use") or "claim",
        "patient": _patient(str(claim["patient"])),
        "billablePeriod": {"start": str(claim.get("serviceDate") or "")[:10]} if claim.get("serviceDate") else {},
        "created": instant(claim.get("submittedAt")),
        "insurer": sub.msp_reference(str(claim["insurer"])),
        "provider": sub.msp_reference(str(claim["provider"])),
        "priority": {"coding": [{"system": PRIORITY_SYSTEM, "code": priority}]},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "named in the claim's private detail"}}],
        "total": _money(int(claim.get("totalCents") or 0), str(claim.get("currency") or "USD")),
    }


def payment_at_provider(claim: dict[str, Any], local: Stored) -> dict[str, Any]:
    """A PaymentReconciliation for the provider, under its own Claim id, from the payment the chain recorded (a
    Claims.Paid claim, or one claim of a Claims.PaidBatch payment)."""
    ref = str(claim.get("paymentRef") or "")
    cents = int(claim.get("paidCents") or claim.get("amountCents") or claim.get("approvedCents") or 0)
    currency = str(claim.get("currency") or "USD")
    paid_at = instant(claim.get("paidAt"))
    return {
        "resourceType": "PaymentReconciliation",
        "id": local.id,
        "identifier": [{"system": PAYMENT_SYSTEM, "value": ref}, sub.claim_identifier(str(claim["claimId"]))],
        "status": "active",
        "created": paid_at,
        "paymentIssuer": sub.msp_reference(str(claim["insurer"])),
        "requestor": sub.msp_reference(str(claim["provider"])),
        "outcome": "complete",
        "disposition": f"payment {ref} for claim {claim['claimId']}",
        "paymentDate": paid_at[:10],
        "paymentAmount": _money(cents, currency),
        "paymentIdentifier": {"system": PAYMENT_SYSTEM, "value": ref},
        "detail": [
            {
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/payment-type", "code": "payment"}]
                },
                "request": {"reference": f"Claim/{local.id}"},
                "response": {"reference": f"ClaimResponse/{local.id}"},
                "amount": _money(cents, currency),
            }
        ],
    }


def latest_decision(claim: dict[str, Any]) -> dict[str, Any]:
    decisions = claim.get("decisions") or []
    if decisions:
        return dict(decisions[-1])
    decision = "pended" if claim.get("status") == "pended" else str(claim.get("outcome") or "")
    return {"decision": decision, "reason": claim.get("denialReason") or "", "preAuthRef": claim.get("preAuthRef")}


def preauth_response(claim: dict[str, Any], local: Stored) -> dict[str, Any]:
    """A ClaimResponse (use preauthorization) for the provider, under its own Claim id, from the insurer's latest
    decision on the request as the chain recorded it."""
    last = latest_decision(claim)
    decision, reason = str(last.get("decision") or ""), str(last.get("reason") or "")
    response: dict[str, Any] = {
        "resourceType": "ClaimResponse",
        "id": local.id,
        "identifier": [sub.claim_identifier(str(claim["claimId"]))],
        "status": "active",
        "type": CLAIM_TYPE,
        "use": "preauthorization",
        "patient": _patient(str(claim["patient"])),
        "created": instant(last.get("at") or claim.get("decidedAt")),
        "insurer": sub.msp_reference(str(claim["insurer"])),
        "requestor": sub.msp_reference(str(claim["provider"])),
        "request": {"reference": f"Claim/{local.id}"},
        "outcome": "queued" if decision == "pended" else "complete",
        "disposition": decision + (f": {reason}" if reason else ""),
    }
    if decision == "approved" and last.get("preAuthRef"):
        response["preAuthRef"] = str(last["preAuthRef"])
    return response


@dataclass(frozen=True)
class Happened:
    """One event as this org's subscriptions see it: the facts filters look at, when, and the resources."""

    facts: dict[str, str]
    timestamp: str
    focus: sub.Focus
    context: tuple[sub.Focus, ...] = ()


def _base(ctx: OrgContext) -> str:
    return f"{ctx.member_url(ctx.settings.org.msp_id)}/fhir"


def _local_claim(ctx: OrgContext, claim: dict[str, Any]) -> Stored | None:
    key = claim.get("claimId")
    return ctx.records.by_ledger_key("Claim", str(key)) if key else None


def _held(ctx: OrgContext, rtype: str, rid: str) -> Stored | None:
    return ctx.records.store.read(rtype, rid)


def happened(ctx: OrgContext, topic: sub.Topic, claim: dict[str, Any]) -> Happened | None:
    """What the event is, for one of its topics; None when it concerns nothing held here (an erased patient's)."""
    base = _base(ctx)
    facts = {k: str(claim[k]) for k in ("insurer", "provider", "patient") if claim.get(k)}
    if topic.code == "claim-submitted":
        key = str(claim["claimId"])
        focus = sub.Focus(
            "Claim", f"urn:careledger:claim:{key}", claim_from_chain(claim), None, sub.claim_identifier(key)
        )
        return Happened(facts, instant(claim.get("submittedAt")), focus)
    local = _local_claim(ctx, claim)
    if local is None:
        return None
    facts["patient"] = local.patient
    context = (sub.Focus.held(base, local),)
    if topic.code == "claim-adjudicated":
        response = _held(ctx, "ClaimResponse", local.id)
        if response is None:
            raise NotYetAvailable(f"ClaimResponse/{local.id} is not kept yet")
        facts["outcome"] = str(claim.get("outcome") or "")
        return Happened(facts, instant(claim.get("adjudicatedAt")), sub.Focus.held(base, response), context)
    if topic.code == "payment-issued":
        ctx.run(ctx.records.keep(payment_at_provider(claim, local), local.patient))
        payment = _held(ctx, "PaymentReconciliation", local.id)
        assert payment is not None
        return Happened(facts, instant(claim.get("paidAt")), sub.Focus.held(base, payment), context)
    if topic.code == "preauth-decided":
        last = latest_decision(claim)
        ctx.run(ctx.records.keep(preauth_response(claim, local), local.patient))
        response = _held(ctx, "ClaimResponse", local.id)
        assert response is not None
        facts["decision"] = str(last.get("decision") or "")
        when = last.get("at") or claim.get("appealDecidedAt") or claim.get("decidedAt")
        return Happened(facts, instant(when), sub.Focus.held(base, response), context)
    raise ValueError(f"no focus for topic {topic.code}")


# ----- from chain events to notifications ---------------------------------------------------------------------------


def live(ctx: OrgContext) -> list[sub.Subscription]:
    """The org's live subscriptions."""
    return [s for s in sub.all_subscriptions(ctx.records) if s.live]


def _live(ctx: OrgContext, topics: list[sub.Topic]) -> list[sub.Subscription]:
    return [s for s in live(ctx) if s.topic in topics]


def announce(
    ctx: OrgContext,
    event: str,
    claim: dict[str, Any],
    delivery_id: str,
    subscribed: list[sub.Subscription] | None = None,
) -> None:
    """Hand a claim event to the org's subscriptions, as a task of its own (a subscriber's trouble never holds up the
    org's stream or webhook). Nothing when no live subscription has one of the event's topics. `subscribed`: the
    live subscriptions, when the caller read them already (for many events)."""
    msp = ctx.settings.org.msp_id
    if event == "Claims.PaidBatch" and "claimId" not in claim:  # one payment of many claims: an event per claim
        shared = {k: v for k, v in claim.items() if k != "lines"}
        subscribed = live(ctx) if subscribed is None else subscribed
        for line in claim.get("lines") or []:
            announce(ctx, event, {**shared, **line}, f"{delivery_id}:{line['claimId']}", subscribed)
        return
    topics = sub.topics_of_event(event, claim, msp)
    if topics and any(s.topic in topics for s in (live(ctx) if subscribed is None else subscribed)):
        args = [event, claim, delivery_id]
        outbox.publish(ctx.redis, msp, ctx.settings.queue, EVENT_TASK, args, f"{delivery_id}:subscriptions")


@task(bind=True, name=EVENT_TASK, max_retries=10, **RETRY)
def on_event(self: Any, event: str, claim: dict[str, Any], delivery_id: str) -> str:
    """Number, keep and send the notification of one event to every live subscription of its topics that matches."""
    ctx = current()
    msp, queue = ctx.settings.org.msp_id, ctx.settings.queue
    topics = sub.topics_of_event(event, claim, msp)
    base = _base(ctx)
    sent = 0
    for topic in topics:
        subscriptions = _live(ctx, [topic])
        if not subscriptions:
            continue
        try:
            what = happened(ctx, topic, claim)
        except NotYetAvailable:
            raise self.retry(countdown=min(0.2 * 2**self.request.retries, 5)) from None
        if what is None:
            continue
        for s in subscriptions:
            if not sub.matches(ctx.records, s, what.facts):
                continue
            n = number(ctx, s.id, delivery_id)
            if ctx.records.store.head("Bundle", sub.notification_id(s.id, n)) is None:  # not kept by an earlier run
                happening = sub.Event(n, what.timestamp, what.focus, what.context)
                bundle = sub.notification(s, base, "event-notification", n, [happening])
                ctx.run(sub.keep_notification(ctx.records, s.id, n, sub.for_keeping(bundle)))
            outbox.publish(ctx.redis, msp, queue, DELIVER_TASK, [s.id, n], f"{msp}:subscription:{s.id}:{n}")
            sent += 1
    return f"{sent} notification(s)"


# ----- the rest-hook channel ----------------------------------------------------------------------------------------


def post(ctx: OrgContext, s: sub.Subscription, bundle: dict[str, Any]) -> str | None:
    """POST a notification to the subscription's endpoint; None when it was accepted (2xx), else why not."""
    body = json.dumps(bundle, separators=(",", ":"), ensure_ascii=False).encode()
    headers = {**dict(s.channel.headers), "Content-Type": sub.PAYLOAD}
    try:
        r = ctx.webhooks.post(s.channel.endpoint, content=body, headers=headers, timeout=s.channel.timeout_s)
    except httpx.HTTPError as e:
        return f"{type(e).__name__}: {e}"[:300] or type(e).__name__
    return None if r.is_success else f"the endpoint answered {r.status_code}"


def _sent(ctx: OrgContext, subscription_id: str) -> None:
    ctx.redis.hset(ctx.settings.keys.subscription_channel(subscription_id), "last_sent", str(time.time()))


def _backoff(attempt: int) -> float:
    return float(min(BACKOFF_S * 2.0 ** (attempt - 1), BACKOFF_MAX_S))


def _error(ctx: OrgContext, s: sub.Subscription, why: str, was: str) -> None:
    """Status error, if the subscription is still as it was when it failed (the client may have changed it since)."""

    def still(now: sub.Subscription) -> bool:
        return now.status == was and now.channel == s.channel and now.topic == s.topic

    ctx.run(sub.set_status(ctx.records, s.id, "error", why, still))
    log.warning("subscription in error", extra={"subscription": s.id, "error": why})


@task(bind=True, name=DELIVER_TASK, max_retries=None, acks_late=True)
def deliver(self: Any, subscription_id: str, n: int) -> str:
    """Send the kept notification of event `n`, with the content the subscription asks for now (never more than was
    kept). Retried with doubling backoff; after ATTEMPTS the subscription goes to `error`."""
    ctx = current()
    marker = ctx.settings.keys.done(f"subscription:{subscription_id}:{n}")
    if ctx.redis.exists(marker):
        return "sent before"
    s = sub.read(ctx.records, subscription_id)
    if s.status != "active":
        return f"not sent: the subscription is {s.status}; the notification is kept for $events"
    kept = sub.kept_notification(ctx.records, subscription_id, n)
    if kept is None:
        return "no such notification"
    bundle = sub.with_status(sub.hydrated(ctx.records, sub.narrowed(kept, s.channel.content)), s.status)
    attempt = self.request.retries + 1
    failure = post(ctx, s, bundle)
    if failure is None:
        ctx.redis.set(marker, 1, ex=EVENT_MARKER_S)
        _sent(ctx, subscription_id)
        return f"sent after {attempt} attempt(s)"
    log.info("notification not accepted", extra={"subscription": s.id, "event": n, "attempt": attempt})
    if attempt >= ATTEMPTS:
        _error(ctx, s, f"event {n} was not accepted after {attempt} attempts: {failure}", "active")
        return "given up"
    raise self.retry(countdown=_backoff(attempt))


@task(bind=True, name=HANDSHAKE_TASK, max_retries=None, acks_late=True)
def handshake(self: Any, subscription_id: str) -> str:
    """The handshake of a requested subscription: accepted → active; not accepted after ATTEMPTS → error."""
    ctx = current()
    pending = ctx.settings.keys.subscription_pending(subscription_id, "handshake")
    s = sub.read(ctx.records, subscription_id)
    if s.status != "requested":
        ctx.redis.delete(pending)
        return f"no handshake: the subscription is {s.status}"
    bundle = sub.notification(s, _base(ctx), "handshake", sub.events_kept(ctx.records, s.id))
    attempt = self.request.retries + 1
    failure = post(ctx, s, bundle)
    if failure is None:

        def unchanged(now: sub.Subscription) -> bool:
            return now.status == "requested" and now.channel == s.channel and now.topic == s.topic

        ctx.run(sub.set_status(ctx.records, s.id, "active", "", unchanged))
        ctx.redis.hset(ctx.settings.keys.subscription_channel(s.id), mapping={"last_sent": str(time.time())})
        ctx.redis.delete(pending)
        log.info("subscription active", extra={"subscription": s.id})
        return "active"
    if attempt >= ATTEMPTS:
        _error(ctx, s, f"the handshake was not accepted after {attempt} attempts: {failure}", "requested")
        ctx.redis.delete(pending)
        return "error"
    raise self.retry(countdown=_backoff(attempt))


def _idle_s(ctx: OrgContext, subscription_id: str) -> float | None:
    last = ctx.redis.hget(ctx.settings.keys.subscription_channel(subscription_id), "last_sent")
    return None if last is None else time.time() - float(cast(bytes, last))


@task(name=HEARTBEAT_TASK)
def heartbeat(subscription_id: str) -> str:
    """A heartbeat, if the subscription is active and was sent nothing for its heartbeatPeriod. One attempt: the
    next one comes a period later (a subscriber that hears nothing asks `$status`)."""
    ctx = current()
    s = sub.read(ctx.records, subscription_id)
    idle = _idle_s(ctx, subscription_id)
    if s.status != "active" or not s.channel.heartbeat_s or (idle is not None and idle < s.channel.heartbeat_s):
        return "not due"
    failure = post(ctx, s, sub.notification(s, _base(ctx), "heartbeat", sub.events_kept(ctx.records, s.id)))
    if failure is not None:
        log.info("heartbeat not accepted", extra={"subscription": s.id, "error": failure})
        return f"not accepted: {failure}"
    _sent(ctx, subscription_id)
    return "sent"


@task(name=TICK_TASK)
def tick() -> str:
    """What time alone brings: handshakes for requested subscriptions, heartbeats for idle active ones, `off` for
    ended ones."""
    ctx = current()
    keys, msp, queue = ctx.settings.keys, ctx.settings.org.msp_id, ctx.settings.queue
    done = []
    for s in sub.all_subscriptions(ctx.records):
        if s.status != "off" and s.ended():
            ctx.run(sub.set_status(ctx.records, s.id, "off", "", lambda now: now.status != "off"))
            done.append(f"{s.id} ended")
        elif s.status == "requested":
            if ctx.redis.set(keys.subscription_pending(s.id, "handshake"), 1, nx=True, ex=HANDSHAKE_PENDING_S):
                outbox.publish(
                    ctx.redis, msp, queue, HANDSHAKE_TASK, [s.id], f"{msp}:subscription:{s.id}:hs:{s.version}"
                )
                done.append(f"{s.id} handshake")
        elif s.status == "active" and s.channel.heartbeat_s:
            idle = _idle_s(ctx, s.id)
            if idle is None:  # nothing known of this channel (Redis was emptied): count from now
                _sent(ctx, s.id)
            elif idle >= s.channel.heartbeat_s and ctx.redis.set(
                keys.subscription_pending(s.id, "heartbeat"), 1, nx=True, ex=max(1, s.channel.heartbeat_s)
            ):
                app.send_task(HEARTBEAT_TASK, args=[s.id], queue=queue)
                done.append(f"{s.id} heartbeat")
    return ", ".join(done) or "nothing due"


def ticker(r: redis.Redis, settings: WorkerSettings, stop: threading.Event | None, every_s: float = TICK_S) -> None:
    """In the listener process: send one `tick` to the org's workers every `every_s` seconds. A flag in Redis that
    expires with the period keeps it to one tick per period, however many listeners run."""
    keys = settings.keys
    while stop is None or not stop.wait(every_s):
        try:
            if r.set(keys.subscription_tick, 1, nx=True, px=max(1, int(every_s * 1000))):
                app.send_task(TICK_TASK, queue=settings.queue)
        except redis.RedisError as e:
            log.warning("subscription tick failed", extra={"error": str(e)})
        if stop is None:
            time.sleep(every_s)
