"""The Celery application: Redis (started by `careledger network up`) as broker and result backend.

Settings for no loss and no duplicate effect:
- `task_acks_late` + `task_reject_on_worker_lost`: a message is acknowledged after its task finished; a worker
  that dies mid-task leaves it unacknowledged, and it is delivered again.
- `worker_prefetch_multiplier = 1`: a worker reserves only what it is about to run, so a crash strands little.
- `visibility_timeout` (CARELEDGER_VISIBILITY_TIMEOUT, default 60 s): how long an unacknowledged message waits
  before Redis hands it out again. It must exceed the longest task including its retries' countdowns (about 30 s
  here), or a slow task would be run twice; twice is still harmless because every task is idempotent, but it is work.
  After a crash, the stranded messages come back once this much time has passed.
- No result backend: a task's effect is on chain and in the org's store, so nothing reads Celery results.
- Tasks are idempotent: each is keyed by (transaction id, event, task) and the ledger refuses repeats.

Redis access is the org's own (`Topology.redis_url_for`): its Redis user reaches only keys under the org's prefix and
no pub/sub channel. So everything of Celery's that would use other keys or channels is off: remote control (the
`pidbox` fanout exchange: `celery inspect`/`control` do not reach these workers), task events, and gossip, mingle and
heartbeats (`careledger worker run` passes --without-gossip --without-mingle --without-heartbeat).

When Redis goes away, the worker's consumer keeps reconnecting for as long as it takes (`broker_connection_retry`
with no limit), and a worker that dies anyway is restarted by supervisord (consortium/supervision.py).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_ready

from consortium import topology as topo
from consortium.redis_keys import OrgKeys

log = logging.getLogger("careledger.workers")
HEARTBEAT_S = 5.0  # a worker's heartbeat key is renewed this often and expires after three missed beats

VISIBILITY_TIMEOUT_S = float(os.environ.get("CARELEDGER_VISIBILITY_TIMEOUT") or 60)

app = Celery("careledger", include=["workers.tasks", "workers.subscriptions"])
_topology = topo.load()
_org = os.environ.get("CARELEDGER_ORG")
# Every key Celery writes for an org lives under the org's own prefix (see consortium.redis_keys).
_prefix = {"global_keyprefix": OrgKeys(_topology.org(_org).msp_id).celery_prefix} if _org else {}
# A process that is no org's (nothing but tests importing this module) gets no credentials: Redis refuses it.
_broker_url = _topology.redis_url_for(_org) if _org else f"redis://{_topology.services_host}:{_topology.redis_port}/0"
app.conf.update(
    broker_url=_broker_url,
    task_ignore_result=True,  # effects are recorded on chain and in the org's store, never as Celery results
    task_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        **_prefix,
    },
    broker_connection_retry_on_startup=True,
    broker_connection_retry=True,
    broker_connection_max_retries=None,  # retry for ever: a Redis restart must not end the worker
    worker_enable_remote_control=False,  # no pidbox: the org's Redis user has no pub/sub channels
    worker_send_task_events=False,
    task_send_sent_event=False,
    worker_hijack_root_logger=False,
    task_default_queue="careledger.default",
)


def heartbeat(url: str, key: str, stop: threading.Event, **facts: Any) -> None:
    """Renew `key` (with `facts`, e.g. the pid) every HEARTBEAT_S seconds until `stop` is set; Redis errors are
    logged and the beat goes on (a missing heartbeat is what `careledger network status` reports)."""
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    value = json.dumps({"pid": os.getpid(), **facts})
    while True:
        try:
            client.set(key, value, ex=int(3 * HEARTBEAT_S))
        except redis.RedisError as e:
            log.warning("heartbeat failed", extra={"error": str(e)[:200]})
        if stop.wait(HEARTBEAT_S):
            return


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    if _org:
        key = OrgKeys(_topology.org(_org).msp_id).alive("worker")
        hostname = str(getattr(sender, "hostname", ""))
        args = (_broker_url, key, threading.Event())
        threading.Thread(target=heartbeat, args=args, kwargs={"hostname": hostname}, daemon=True).start()
