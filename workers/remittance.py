"""How an insurer pays: like a payer's remittance (X12 835), one payment per provider covers many claims.

Adjudicated claims to pay wait in a per-provider queue (a Redis sorted set by time). Every cycle, the oldest claims
of each provider (up to `max_claims`) are paid in ONE Claims:PayBatch transaction: one
payment reference, per-claim amounts, a total that reconciles; the insurer keeps one PaymentReconciliation per
payment with one detail per claim, and the provider fetches it when its listener sees the payment event.

Idempotent by construction: the payment reference is derived from the claims it pays, and the contract answers a
repeated PayBatch with the payment it recorded. Before a payment is sent, its reference and claims are written down
(`payment_under_way`); a cycle finds a payment under way and finishes THAT one before starting another. So a cycle
that crashed (or lost Redis) after paying and before keeping the PaymentReconciliation and emptying its queue pays
nothing twice, and the payment's PaymentReconciliation is still kept, even if more claims were queued meanwhile.
Which claims leave the queue is decided by the chain: a claim the contract refused stays queued while the chain
shows it approved and unpaid (a peer behind), and leaves once the chain shows it paid, denied or cancelled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from typing import Any

import redis

from ledger.errors import LedgerConflict
from workers import claim_response
from workers.context import OrgContext

log = logging.getLogger("careledger.workers")

DIRECTORY = "org-directory"  # what an org keeps that belongs to no patient is filed under this name in its store
# A cycle's lock expires by itself after this long, so a worker killed during a cycle holds up payments no longer.
# A cycle that outlasts it and meets another is still safe: a payment is written down only when none is under way
# (SET NX), and both finish the one under way.
REMIT_LOCK_S = 30
MAX_ROUNDS = 5  # payments per provider in one cycle, at most (a fuller queue waits for the next cycle)


def payment_ref(provider: str, claim_ids: list[str]) -> str:
    """The reference of the payment of exactly these claims to this provider, the same however often it is made."""
    digest = hashlib.sha256("|".join([provider, *sorted(claim_ids)]).encode()).hexdigest()
    return f"REM-{digest[:40]}"


def queue(ctx: OrgContext, *claims: dict[str, Any]) -> None:
    """Put adjudicated claims in their providers' queues for the next remittance (once: a repeat changes nothing)."""
    keys, at = ctx.settings.keys, time.time()
    pipe = ctx.redis.pipeline()
    for claim in claims:
        pipe.zadd(keys.to_pay(claim["provider"]), {claim["claimId"]: at}, nx=True)
        pipe.sadd(keys.paying, claim["provider"])
    pipe.execute()


def due(ctx: OrgContext) -> list[str]:
    """Providers with claims queued: a cycle pays each of them, so a claim waits at most one cycle for its payment.
    (Waiting until the oldest claim had waited a whole cycle made it up to two, checked once a cycle.)"""
    r, keys = ctx.redis, ctx.settings.keys
    out = []
    for member in r.smembers(keys.paying):
        provider = member.decode() if isinstance(member, bytes) else str(member)
        queued = keys.to_pay(provider)
        if r.zcard(queued):
            out.append(provider)
            continue
        r.srem(keys.paying, provider)
        if r.zcard(queued):  # a claim was queued meanwhile: keep the provider listed
            r.sadd(keys.paying, provider)
    return out


def remit(ctx: OrgContext, provider: str) -> str | None:
    """Pay the provider's oldest queued claims in one transaction, or first finish the payment under way; keep the
    PaymentReconciliation. Returns the payment reference, or None when there was nothing to pay."""
    keys = ctx.settings.keys
    key, under_way = keys.to_pay(provider), keys.payment_under_way(provider)
    started = ctx.redis.get(under_way)
    if started is not None:
        intent = json.loads(started)
        ref, claims = str(intent["ref"]), [str(c) for c in intent["claims"]]
    else:
        claims = [
            c.decode() if isinstance(c, bytes) else str(c)
            for c in ctx.redis.zrange(key, 0, ctx.settings.remittance.max_claims - 1)
        ]
        if not claims:
            return None
        ref = payment_ref(provider, claims)
        if not ctx.redis.set(under_way, json.dumps({"ref": ref, "claims": claims}), nx=True):
            return remit(ctx, provider)  # another cycle wrote its payment down meanwhile: finish that one first
    try:
        payment: dict[str, Any] = ctx.run(ctx.ledger.pay_batch(provider, ref, claims)).result
    except LedgerConflict:  # none of them payable now: the chain says which are done with (below)
        payment = {"paymentRef": ref, "lines": [], "refused": [{"claimId": c} for c in claims]}
    if payment["lines"]:
        # Made from what the chain recorded only (its time too), so keeping it again changes nothing.
        created = str(payment.get("paidAt") or claim_response.now())
        ctx.run(ctx.records.keep(claim_response.remittance(payment, created), DIRECTORY))
    refused = [str(r["claimId"]) for r in payment.get("refused") or []]
    done = [str(line["claimId"]) for line in payment["lines"]] + [c for c in refused if not _still_payable(ctx, c)]
    _finish(ctx, key, under_way, ref, done)
    log.info("remittance", extra={"provider": provider, "ref": ref, "paid": len(payment["lines"])})
    return ref if payment["lines"] else None


def _still_payable(ctx: OrgContext, claim_id: str) -> bool:
    """Whether the chain shows the claim approved and not paid: a refusal of it came from a peer behind."""
    claim = ctx.run(ctx.ledger.claim(claim_id))
    return claim.get("status") == "adjudicated" and int(claim.get("approvedCents") or 0) > 0


def _finish(ctx: OrgContext, key: str, under_way: str, ref: str, done: list[str]) -> None:
    """Take the paid (and unpayable) claims off the queue and cross the payment out, together; the payment under
    way is crossed out only if it is still this one."""

    def finish(pipe: redis.client.Pipeline) -> None:
        current = pipe.get(under_way)
        pipe.multi()
        if done:
            pipe.zrem(key, *done)
        if current is not None and json.loads(current)["ref"] == ref:
            pipe.delete(under_way)

    ctx.redis.transaction(finish, under_way)


def remit_due(ctx: OrgContext) -> list[str]:
    """One cycle: every provider with claims queued is paid, one payment each per round; a provider whose queue still
    holds a full payment's worth (`max_claims`) is paid again in the next round, up to MAX_ROUNDS, so a busy
    provider neither falls behind nor holds up the others. One cycle runs at a time: a lock that expires, renewed
    before each payment (a cycle that lost it stops; the one that holds it goes on)."""
    lock = ctx.redis.lock(ctx.settings.keys.remit_lock, timeout=REMIT_LOCK_S, blocking_timeout=0)
    if not lock.acquire():
        return []
    refs: list[str] = []
    try:
        providers = due(ctx)
        for _ in range(MAX_ROUNDS):
            full = []
            for provider in providers:
                lock.reacquire()  # LockNotOwnedError: it expired and another cycle took over
                if (ref := remit(ctx, provider)) is not None:
                    refs.append(ref)
                    if ctx.redis.zcard(ctx.settings.keys.to_pay(provider)) >= ctx.settings.remittance.max_claims:
                        full.append(provider)
            if not (providers := full):
                break
        return refs
    except redis.exceptions.LockNotOwnedError:
        log.warning("remittance cycle overran its lock: the next cycle goes on", extra={"paid": len(refs)})
        return refs
    finally:
        with contextlib.suppress(redis.exceptions.LockError):  # it expired: another cycle may hold it now
            lock.release()
