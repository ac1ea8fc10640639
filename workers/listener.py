"""`careledger worker listen --org X`: chain events → Celery tasks, with a durable checkpoint in Redis.

For each chaincode event on the org's `claims` channel, `tasks_for` names the tasks it means for this org; each is
published to the org's queue (written down in its outbox first, see workers/outbox.py) with a task id made of
(org, transaction id, event, task). Only then does the
checkpoint (block, transaction id) move, so a crash between the two re-publishes on restart: never a gap, at worst
a repeat, which the tasks absorb (they are idempotent). On a fresh start with no checkpoint, it reads from the
channel's first block, so nothing that happened before the listener existed is missed either.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis

from consortium import connect
from fabric_gateway import FabricError
from fabric_gateway.checkpoint import RedisCheckpointer, after_event
from ledger.contracts import CLAIMS
from workers import outbox, subscriptions
from workers.settings import WorkerSettings

log = logging.getLogger("careledger.listener")


@dataclass(frozen=True)
class Dispatch:
    task: str
    args: list[Any]
    task_id: str


BATCHES = {"Claims.SubmittedBatch": "Claims.Submitted", "Claims.AdjudicatedBatch": "Claims.Adjudicated"}


def claim_events(event: str, payload: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """One (event, claim) per claim: a batch event stands for the single event of each claim it lists."""
    if event in BATCHES:
        return [(BATCHES[event], claim) for claim in payload.get("claims") or []]
    return [(event, payload)]


def tasks_for(msp: str, event: str, tx_id: str, claim: dict[str, Any]) -> list[Dispatch]:
    """What one claim's event on the claims channel means for the org `msp`."""
    key = f"{msp}:{tx_id}:{event}:{claim.get('claimId', '')}"
    insurer, provider = claim.get("insurer") == msp, claim.get("provider") == msp
    out: list[Dispatch] = []
    if event == "Claims.Submitted" and insurer:
        out.append(Dispatch("careledger.adjudicate", [claim], f"{key}:adjudicate"))
        out.append(Dispatch("careledger.notify", [event, claim, f"{key}:notify"], f"{key}:notify"))
    elif event == "Claims.Adjudicated":
        if insurer:
            out.append(Dispatch("careledger.pay", [claim], f"{key}:pay"))
        if provider:
            out.append(Dispatch("careledger.fetch_claim_response", [claim, f"{key}:notify"], f"{key}:fetch"))
    elif (event == "Claims.Paid" and provider) or (event == "Claims.Cancelled" and insurer):
        out.append(Dispatch("careledger.notify", [event, claim, f"{key}:notify"], f"{key}:notify"))
    return out


def listen(settings: WorkerSettings, stop: threading.Event | None = None) -> None:
    """Run until `stop` is set (or forever), reconnecting after Fabric errors."""
    t, org = settings.topology, settings.org
    if CLAIMS not in t.channels_of(org):
        log.info("no claims channel for this org; nothing to listen to", extra={"org": org.name})
        return
    r = redis.Redis.from_url(t.redis_url)
    checkpointer = RedisCheckpointer(r, f"{org.msp_id}:{CLAIMS}")
    threading.Thread(target=_sweeper, args=(r, org.msp_id, stop), name="outbox-sweeper", daemon=True).start()
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
                for event in events:
                    if event.name.startswith("Claims."):
                        for name, claim in claim_events(event.name, json.loads(event.payload)):
                            claim["eventBlock"] = event.block_number  # tasks wait for it before they act on it
                            for d in tasks_for(org.msp_id, name, event.tx_id, claim):
                                outbox.publish(r, org.msp_id, settings.queue, d.task, d.args, d.task_id)
                    checkpointer.save(after_event(event))
                    if stop is not None and stop.is_set():
                        return
        except FabricError as e:
            log.warning("event stream broke; reconnecting", extra={"error": str(e)[:200]})
            time.sleep(1)


def _sweeper(r: redis.Redis, msp: str, stop: threading.Event | None, every_s: float = 5.0) -> None:
    """Re-send the org's tasks that were sent but never finished (see workers/outbox.py)."""
    while stop is None or not stop.wait(every_s):
        try:
            if resent := outbox.sweep(r, msp):
                log.warning("re-sent unfinished tasks", extra={"org": msp, "tasks": resent})
        except redis.RedisError as e:
            log.warning("outbox sweep failed", extra={"error": str(e)})
        if stop is None:
            time.sleep(every_s)
