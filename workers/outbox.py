"""Every task an org's workers must run is written down before it is sent, and crossed out when it has finished.

Celery's late acknowledgement brings back a task whose worker died while running it. It does not cover the moment
between Redis handing a message to a worker and that worker recording it as unacknowledged (kombu moves it from
the queue to its `unacked` hash in a second step): a worker killed exactly then loses the message. So the publisher
also keeps the task in the org's in-flight hash, `careledger:<MSP>:inflight`, and the listener re-sends any entry
older than `CARELEDGER_REDELIVER_AFTER` seconds (default 300; longer than any queue backlog should last). Repeats
are harmless: every task is idempotent. A task that finished, well or for good badly, is removed; one that failed
for good is also kept in `careledger:<MSP>:failed` for an operator. One that gave up on something that can still
succeed (workers.tasks.can_still_succeed) stays, and is sent again.

The same window is why a worker process that starts sends again, once, every unfinished task written before it
started (`_resend_at_start`): it may follow a process that was killed holding such a message, which nothing but the
outbox knows of, and the usual delay would leave that task undone for minutes.

A Redis crash is the other moment a message can vanish: one a worker had just taken off its queue (the same window as
above), or writes Redis acknowledged and had not yet put in its append-only file. So once Redis is back after an
outage, the listener sends again at once every entry written before the outage was noticed (`sweep(...,
written_before=...)`, workers/schedule.py), instead of after the usual delay.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

import redis
from celery.signals import worker_ready
from kombu.exceptions import OperationalError

from consortium.redis_keys import OrgKeys
from workers import app as celery_app
from workers.app import app

log = logging.getLogger("careledger.workers")

REDELIVER_AFTER_S = float(os.environ.get("CARELEDGER_REDELIVER_AFTER") or 300)


def publish(r: redis.Redis, msp: str, queue: str, task: str, args: list[Any], task_id: str) -> None:
    """Write the task down, then send it."""
    r.hset(OrgKeys(msp).inflight, task_id, json.dumps({"task": task, "args": args, "queue": queue, "at": time.time()}))
    app.send_task(task, args=args, task_id=task_id, queue=queue)


def settle(r: redis.Redis, msp: str, task_id: str, failure: str | None = None) -> None:
    """Cross the task out; keep a failure for an operator."""
    if failure is not None:
        entry = r.hget(OrgKeys(msp).inflight, task_id)
        record = {"task_id": task_id, "error": failure, "task": json.loads(entry) if entry else None}
        r.lpush(OrgKeys(msp).failed, json.dumps(record))
    r.hdel(OrgKeys(msp).inflight, task_id)


def sweep(
    r: redis.Redis, msp: str, older_than_s: float = REDELIVER_AFTER_S, written_before: float | None = None
) -> int:
    """Send again every task written down longer ago than `older_than_s`, or before `written_before` (a Unix time),
    and not finished; returns how many."""
    now = time.time()
    resent = 0
    raw: dict[bytes, bytes] = r.hgetall(OrgKeys(msp).inflight)  # type: ignore[assignment]
    for task_id, value in raw.items():
        entry = json.loads(value)
        at = float(entry["at"])
        if now - at < older_than_s and (written_before is None or at >= written_before):
            continue
        entry["at"] = now
        r.hset(OrgKeys(msp).inflight, task_id, json.dumps(entry))
        app.send_task(entry["task"], args=entry["args"], task_id=task_id.decode(), queue=entry["queue"])
        resent += 1
    return resent


@worker_ready.connect
def _resend_at_start(**_: Any) -> None:
    """Send again every unfinished task written before this worker process started (see the module's docstring);
    in the background, trying until Redis answers."""
    org = celery_app.org_redis()
    if org is None:
        return
    msp, url = org
    started = time.time()

    def resend() -> None:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        while True:
            try:
                resent = sweep(client, msp, written_before=started)
            except (redis.RedisError, OperationalError) as e:
                log.warning("re-sending at start failed; trying again", extra={"error": str(e)[:200]})
                time.sleep(1.0)
                continue
            log.info("worker started: re-sent unfinished tasks", extra={"org": msp, "tasks": resent})
            return

    threading.Thread(target=resend, name="outbox-at-start", daemon=True).start()
