"""`careledger worker listen --org X`: chain events → Celery tasks, with a durable checkpoint in Redis.

The peer sends the events a block at a time. For each block's events on the org's `claims` channel,
`block_dispatches` names the tasks they mean for this org (the claims one provider submitted in the block are
adjudicated by one task, in one transaction; its notifications, payments and answers to fetch are one task of each
kind); each is published to the org's queue (written down in its outbox first, see workers/outbox.py) with a task
id made of (org, transaction id, event, task). Only then does the checkpoint move past the block, so a crash
between the two re-publishes on restart: never a gap, at worst a repeat, which the tasks absorb (they are
idempotent). On a fresh start with no checkpoint, it reads from the channel's first block, so nothing that happened
before the listener existed is missed either.

Neither a broken event stream nor Redis going away (a restart, a network blip) ends the listener: it waits, with
backoff doubling from half a second to ten, and resumes from the checkpoint. A Redis restart can also go unseen (the
client reconnects by itself) and still have rolled back the latest writes, the tasks and the checkpoint with them
(the checkpoint is written after its tasks, so it never survives without them): the checkpoint is moved only from
the one this listener saved last, and when the stored one is different the listener resumes from it, replaying what
was lost.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from kombu.exceptions import OperationalError

from consortium import connect
from fabric_gateway import ChaincodeEvent, FabricError
from fabric_gateway.checkpoint import RedisCheckpointer, after_block
from ledger.contracts import CLAIMS
from workers import outbox, schedule, subscriptions
from workers.app import heartbeat
from workers.settings import WorkerSettings

log = logging.getLogger("careledger.listener")


class CheckpointMoved(Exception):
    """The stored checkpoint is not the one this listener saved last: Redis lost writes (or another listener of the
    org moved it). Resume from the stored one."""


# What the listener rides out: the peer's event stream breaking, and Redis (checkpoints, outbox, the broker) going away.
RECOVERABLE = (FabricError, redis.RedisError, OperationalError, CheckpointMoved)
BACKOFF_S = (0.5, 10.0)  # first and longest wait before reconnecting
MAX_BATCH_CLAIMS = 500  # decisions the contract takes in one Claims:AdjudicateBatch or DecidePreauthBatch


@dataclass(frozen=True)
class Dispatch:
    task: str
    args: list[Any]
    task_id: str


BATCHES = {
    "Claims.SubmittedBatch": "Claims.Submitted",
    "Claims.AdjudicatedBatch": "Claims.Adjudicated",
    "Claims.PreauthDecidedBatch": "Claims.PreauthDecided",
}


def _preauth(claim: dict[str, Any]) -> bool:
    return claim.get("use") == "preauthorization"


def batch_tasks_for(msp: str, event: str, tx_id: str, payload: dict[str, Any]) -> list[Dispatch]:
    """Tasks for a batch event as a whole: claims submitted together are adjudicated together by their insurer;
    a provider fetches the remittance of a batch payment to it."""
    key = f"{msp}:{tx_id}:{event}"
    if event == "Claims.SubmittedBatch":
        ours = [c for c in payload.get("claims") or [] if c.get("insurer") == msp and not _preauth(c)]
        return [Dispatch("careledger.adjudicate_batch", [ours], f"{key}:adjudicate")] if ours else []
    if event == "Claims.PaidBatch" and payload.get("provider") == msp:
        return [Dispatch("careledger.fetch_payment", [payload, f"{key}:notify"], f"{key}:fetch")]
    return []


def claim_events(event: str, payload: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """One (event, claim) per claim: a batch event stands for the single event of each claim it lists (a prior
    authorisation request submitted in a batch: Claims.PreauthSubmitted; a batch payment is handled as a whole:
    batch_tasks_for)."""
    if event == "Claims.PaidBatch":
        return []
    if event in BATCHES:
        requested = "Claims.PreauthSubmitted" if event == "Claims.SubmittedBatch" else BATCHES[event]
        claims = payload.get("claims") or []
        return [(requested if _preauth(c) else BATCHES[event], {**c, "inBatch": True}) for c in claims]
    return [(event, payload)]


def tasks_for(msp: str, event: str, tx_id: str, claim: dict[str, Any]) -> list[Dispatch]:
    """What one claim's event on the claims channel means for the org `msp`."""
    key = f"{msp}:{tx_id}:{event}:{claim.get('claimId', '')}"
    insurer, provider = claim.get("insurer") == msp, claim.get("provider") == msp
    out: list[Dispatch] = []
    if event == "Claims.Submitted" and insurer:
        if not claim.get("inBatch"):  # a claim of a batch is adjudicated with its batch (batch_tasks_for)
            out.append(Dispatch("careledger.adjudicate", [claim], f"{key}:adjudicate"))
        out.append(Dispatch("careledger.notify", [event, claim, f"{key}:notify"], f"{key}:notify"))
    elif event == "Claims.Adjudicated":
        if insurer:
            out.append(Dispatch("careledger.pay", [claim], f"{key}:pay"))
        if provider:
            out.append(Dispatch("careledger.fetch_claim_response", [claim, f"{key}:notify"], f"{key}:fetch"))
    elif event in ("Claims.PreauthSubmitted", "Claims.PreauthAppealed") and insurer:
        out.append(Dispatch("careledger.decide_preauth", [claim], f"{key}:decide"))
        out.append(Dispatch("careledger.notify", [event, claim, f"{key}:notify"], f"{key}:notify"))
    elif event == "Claims.PreauthDecided":
        if insurer and not claim.get("inBatch"):  # a person's decision (a batch's are kept by the worker that made it)
            out.append(Dispatch("careledger.keep_preauth", [claim], f"{key}:keep"))
        if provider:
            out.append(Dispatch("careledger.fetch_claim_response", [claim, f"{key}:notify"], f"{key}:fetch"))
    elif (event == "Claims.Paid" and provider) or (event == "Claims.Cancelled" and insurer):
        out.append(Dispatch("careledger.notify", [event, claim, f"{key}:notify"], f"{key}:notify"))
    return out


def dispatches(msp: str, event: str, tx_id: str, block: int, payload: bytes) -> list[Dispatch]:
    """Every task one chain event means for the org; each claim carries the event's block, which tasks wait for
    at both parties' peers before they act on it."""
    data = json.loads(payload)
    for claim in data.get("claims") or []:
        claim["eventBlock"] = block
    out = batch_tasks_for(msp, event, tx_id, data)
    for name, claim in claim_events(event, data):
        out += tasks_for(msp, name, tx_id, {**claim, "eventBlock": block})
    return out


# Decisions of which one block's many (of one provider) become one task, so one transaction: adjudications and
# prior-authorisation decisions; each kind's batch task.
DECISIONS = {
    "careledger.adjudicate": "careledger.adjudicate_batch",
    "careledger.adjudicate_batch": "careledger.adjudicate_batch",
    "careledger.decide_preauth": "careledger.decide_preauth_batch",
}


def block_dispatches(msp: str, events: Sequence[ChaincodeEvent]) -> list[Dispatch]:
    """Every task one block's claim events mean for the org. The claims of one provider submitted in the block, in
    however many transactions, are adjudicated together: one task, so one Claims:AdjudicateBatch transaction (one
    provider per batch, so that one provider's peer being down holds up only its own claims); its prior
    authorisation requests likewise, in one Claims:DecidePreauthBatch."""
    out: list[Dispatch] = []
    decisions: dict[tuple[str, str], list[Dispatch]] = {}
    for event in events:
        if not event.name.startswith("Claims."):
            continue
        for d in dispatches(msp, event.name, event.tx_id, event.block_number, event.payload):
            if d.task in DECISIONS:
                decisions.setdefault((DECISIONS[d.task], _claims_of(d)[0]["provider"]), []).append(d)
            else:
                out.append(d)
    decide: list[Dispatch] = []
    for (task, provider), found in decisions.items():
        claims = [c for d in found for c in _claims_of(d)]
        if len(found) == 1:
            decide.append(found[0])  # as the event alone means it (and with the same task id)
            continue
        for n, start in enumerate(range(0, len(claims), MAX_BATCH_CLAIMS)):
            # A replay of the block (a restart before its checkpoint moved) gives the same ids.
            task_id = f"{found[0].task_id}:block-{events[0].block_number}:{provider}:{n}"
            decide.append(Dispatch(task, [claims[start : start + MAX_BATCH_CLAIMS]], task_id))
    return decide + _merged(out, events[0].block_number if events else 0)


# Tasks of which one block's many become one task: notifications, payments, and the answers fetched from one insurer.
MERGED = {
    "careledger.notify": "careledger.notify_many",
    "careledger.pay": "careledger.pay_many",
    "careledger.fetch_claim_response": "careledger.fetch_claim_responses",
}


def _merged(dispatches: list[Dispatch], block: int) -> list[Dispatch]:
    """The block's tasks with those of one kind (answers: from one insurer) as one task each, which handles each
    claim as its own task would: fewer tasks to send, run and cross out when many claims move at once. A kind with
    a single task keeps it as it is."""
    out: list[Dispatch] = []
    groups: dict[tuple[str, str], list[Dispatch]] = {}
    for d in dispatches:
        if d.task not in MERGED:
            out.append(d)
        else:
            insurer = str(d.args[0].get("insurer", "")) if d.task == "careledger.fetch_claim_response" else ""
            groups.setdefault((d.task, insurer), []).append(d)
    for (task, _), found in groups.items():
        if len(found) == 1:
            out.append(found[0])
            continue
        for n, start in enumerate(range(0, len(found), MAX_BATCH_CLAIMS)):
            part = found[start : start + MAX_BATCH_CLAIMS]
            args = [d.args[0] for d in part] if task == "careledger.pay" else [d.args for d in part]
            # A replay of the block (a restart before its checkpoint moved) gives the same ids.
            out.append(Dispatch(MERGED[task], [args], f"{part[0].task_id}:block-{block}:{n}"))
    return out


def _claims_of(d: Dispatch) -> list[dict[str, Any]]:
    return list(d.args[0]) if d.task.endswith("_batch") else [d.args[0]]


def listen(settings: WorkerSettings, stop: threading.Event | None = None) -> None:
    """Run until `stop` is set (or forever), reconnecting after Fabric errors."""
    t, org = settings.topology, settings.org
    if CLAIMS not in t.channels_of(org):
        log.info("no claims channel for this org; nothing to listen to", extra={"org": org.name})
        return
    url = t.redis_url_for(org)
    r = redis.Redis.from_url(url)
    checkpointer = RedisCheckpointer(r, settings.keys.listener_checkpoint_name(CLAIMS))
    watch = schedule.RedisWatch(url)
    threading.Thread(target=watch.run, args=(stop or threading.Event(),), name="redis-watch", daemon=True).start()
    jobs = schedule.jobs_for(settings, r, watch)
    threading.Thread(target=schedule.run, args=(jobs, stop), name="schedule", daemon=True).start()
    beat = (url, settings.keys.alive("listener"), stop or threading.Event())
    threading.Thread(target=heartbeat, args=beat, name="heartbeat", daemon=True).start()
    wait = BACKOFF_S[0]
    # Handshakes and heartbeats of the org's FHIR subscriptions come from a periodic task (workers/subscriptions.py).
    threading.Thread(
        target=subscriptions.ticker, args=(r, settings, stop), name="subscription-ticker", daemon=True
    ).start()
    while stop is None or not stop.is_set():
        try:
            with connect.gateway(t, org) as gw:
                checkpoint = checkpointer.load()
                start = 0 if checkpoint.is_empty else None
                log.info("listening", extra={"org": org.name, "block": checkpoint.block_number})
                events = gw.network(CLAIMS).chaincode_events(t.chaincode_name, start_block=start, checkpoint=checkpoint)
                for block in events.blocks():
                    for d in block_dispatches(org.msp_id, block):
                        outbox.publish(r, org.msp_id, settings.queue, d.task, d.args, d.task_id)
                    if block:
                        handled = after_block(block[-1].block_number)
                        if not checkpointer.move(checkpoint, handled):
                            raise CheckpointMoved(
                                f"expected block {checkpoint.block_number}, tx {checkpoint.tx_id[:12]}"
                            )
                        checkpoint = handled
                    wait = BACKOFF_S[0]
                    if stop is not None and stop.is_set():
                        return
        except RECOVERABLE as e:
            what = (
                "event stream broke"
                if isinstance(e, FabricError)
                else "the checkpoint is not where this listener left it; resuming from it"
                if isinstance(e, CheckpointMoved)
                else "redis is unavailable"
            )
            log.warning(f"{what}; reconnecting", extra={"error": str(e)[:200], "retry_in_s": wait})
            if stop is not None and stop.wait(wait):
                return
            if stop is None:
                time.sleep(wait)
            wait = min(wait * 2, BACKOFF_S[1])
