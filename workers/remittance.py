"""How an insurer pays: like a payer's remittance (X12 835), one payment per provider covers many claims.

Adjudicated claims to pay wait in a per-provider queue (a Redis sorted set by time). Every cycle (or as soon as a
queue holds `max_claims`), the oldest claims of each provider are paid in ONE Claims:PayBatch transaction: one
payment reference, per-claim amounts, a total that reconciles; the insurer keeps one PaymentReconciliation per
payment with one detail per claim, and the provider fetches it when its listener sees the payment event.

Idempotent by construction: the payment reference is derived from the claims it pays, and the contract answers a
repeated PayBatch with the payment it recorded. So a cycle that crashed after paying and before emptying its queue
pays nothing twice when it runs again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from typing import Any

import redis

from ledger.errors import LedgerConflict
from workers import claim_response
from workers.context import OrgContext

log = logging.getLogger("careledger.workers")

DIRECTORY = "org-directory"  # what an org keeps that belongs to no patient is filed under this name in its store


def payment_ref(provider: str, claim_ids: list[str]) -> str:
    """The reference of the payment of exactly these claims to this provider, the same however often it is made."""
    digest = hashlib.sha256("|".join([provider, *sorted(claim_ids)]).encode()).hexdigest()
    return f"REM-{digest[:40]}"


def queue(ctx: OrgContext, claim: dict[str, Any]) -> None:
    """Put an adjudicated claim in its provider's queue for the next remittance (once: a repeat changes nothing)."""
    keys = ctx.settings.keys
    pipe = ctx.redis.pipeline()
    pipe.zadd(keys.to_pay(claim["provider"]), {claim["claimId"]: time.time()}, nx=True)
    pipe.sadd(keys.paying, claim["provider"])
    pipe.execute()


def due(ctx: OrgContext) -> list[str]:
    """Providers whose oldest queued claim waited a cycle, or whose queue is full."""
    r, cycle, keys = ctx.redis, ctx.settings.remittance, ctx.settings.keys
    out = []
    for member in r.smembers(keys.paying):
        provider = member.decode() if isinstance(member, bytes) else str(member)
        queued = keys.to_pay(provider)
        oldest = r.zrange(queued, 0, 0, withscores=True)
        if not oldest:
            r.srem(keys.paying, provider)
            if r.zcard(queued):  # a claim was queued meanwhile: keep the provider listed
                r.sadd(keys.paying, provider)
        elif time.time() - float(oldest[0][1]) >= cycle.cycle_seconds or r.zcard(queued) >= cycle.max_claims:
            out.append(provider)
    return out


def remit(ctx: OrgContext, provider: str) -> str | None:
    """Pay the provider's oldest queued claims in one transaction; keep the PaymentReconciliation. Returns the
    payment reference, or None when there was nothing to pay."""
    key = ctx.settings.keys.to_pay(provider)
    claims = [
        c.decode() if isinstance(c, bytes) else str(c)
        for c in ctx.redis.zrange(key, 0, ctx.settings.remittance.max_claims - 1)
    ]
    if not claims:
        return None
    ref = payment_ref(provider, claims)
    try:
        payment: dict[str, Any] = ctx.run(ctx.ledger.pay_batch(provider, ref, claims)).result
    except LedgerConflict:  # none of them payable (paid by an earlier cycle, or not payable at all): read why
        payment = {"paymentRef": ref, "lines": [], "refused": [{"claimId": c} for c in claims]}
    if payment["lines"]:
        ctx.run(ctx.records.keep(claim_response.remittance(payment, claim_response.now()), DIRECTORY))
    done = [line["claimId"] for line in payment["lines"]] + [r["claimId"] for r in payment.get("refused") or []]
    ctx.redis.zrem(key, *done)
    log.info("remittance", extra={"provider": provider, "ref": ref, "paid": len(payment["lines"])})
    return ref if payment["lines"] else None


def remit_due(ctx: OrgContext) -> list[str]:
    """One cycle: every provider that is due, one payment each. One cycle runs at a time (a lock that expires)."""
    lock = ctx.redis.lock(ctx.settings.keys.remit_lock, timeout=120, blocking_timeout=0)
    if not lock.acquire():
        return []
    try:
        return [ref for provider in due(ctx) if (ref := remit(ctx, provider))]
    finally:
        with contextlib.suppress(redis.exceptions.LockError):  # it expired: another cycle may hold it now
            lock.release()
