"""The Celery application: Redis (started by `careledger network up`) as broker and result backend.

Settings for no loss and no duplicate effect:
- `task_acks_late` + `task_reject_on_worker_lost`: a message is acknowledged after its task finished; a worker
  that dies mid-task leaves it unacknowledged, and it is delivered again.
- `worker_prefetch_multiplier = 1`: a worker reserves only what it is about to run, so a crash strands little.
- `visibility_timeout` (CARELEDGER_VISIBILITY_TIMEOUT, default 20 s) is a lease: a worker renews the lease of every
  message it holds (running, waiting for its countdown, or reserved) every LEASE_RENEW_S seconds (`renew_leases`), so
  kombu restores to the queue only a message whose worker is gone: killed, or cut off by a Redis restart, which makes
  its consumer drop what it had reserved. Any live worker's consumer looks for such messages every second, so a
  killed worker's tasks run again within about this long, however long a task itself runs.
- A retry that cannot be sent (Redis away) puts the message back (`Task.retry`); Celery would drop it.
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
import time
from typing import Any

import redis
from celery import Celery
from celery import Task as CeleryTask
from celery.exceptions import Reject
from celery.signals import worker_ready
from celery.worker import state as worker_state

from consortium import topology as topo
from consortium.redis_keys import OrgKeys

log = logging.getLogger("careledger.workers")
HEARTBEAT_S = 5.0  # a worker's heartbeat key is renewed this often and expires after three missed beats

VISIBILITY_TIMEOUT_S = float(os.environ.get("CARELEDGER_VISIBILITY_TIMEOUT") or 20)
LEASE_RENEW_S = min(5.0, VISIBILITY_TIMEOUT_S / 4)
UNACKED_INDEX = "unacked_index"  # kombu's sorted set of unacknowledged messages by when their lease was renewed


class Task(CeleryTask):  # type: ignore[misc]
    def retry(self, *args: Any, **kwargs: Any) -> Any:
        """Celery rejects a message for good when its retry cannot be published (Redis away): the task would be
        lost. Put it back instead: into its queue now, or, with Redis still away, it stays unacknowledged and comes
        back when its lease runs out."""
        try:
            return super().retry(*args, **kwargs)
        except Reject as e:
            if e.requeue:
                raise
            log.warning("retry not sent; the task goes back to its queue", extra={"error": str(e.reason)[:200]})
            raise Reject(e.reason, requeue=True) from None


app = Celery("careledger", include=["workers.tasks", "workers.subscriptions"], task_cls=Task)
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
        "unacked_index_key": UNACKED_INDEX,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        # The lock of the restore sweep: a worker killed (or cut off) while holding it must not stop every sweep
        # for kombu's default five minutes; two sweeps at once are safe (each message is moved in a transaction).
        "unacked_mutex_expire": 10,
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


def org_redis() -> tuple[str, str] | None:
    """(MSP id, Redis URL) of the org whose worker this process is; None in a process that is no org's."""
    return (_topology.org(_org).msp_id, _broker_url) if _org else None


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


def held_delivery_tags() -> list[str]:
    """The delivery tags of the messages this worker process holds: running, waiting for their countdown, or
    reserved. Celery's sets change under other threads; a copy is taken until one goes through."""
    while True:
        try:
            held = {*worker_state.active_requests, *worker_state.reserved_requests, *worker_state.scheduled_requests}
            break
        except RuntimeError:  # changed size during the copy
            continue
    tags = []
    for request in held:
        message = getattr(request, "message", None)
        tag = getattr(message, "delivery_tag", None)
        if tag is not None:
            tags.append(str(tag))
    return tags


def renew_leases(client: redis.Redis, index: str, tags: list[str]) -> int:
    """Renew the lease of each held message that is still unacknowledged (ZADD XX: an acknowledged one is not
    added back). Returns how many were renewed."""
    if not tags:
        return 0
    now = time.time()
    renewed = client.zadd(index, dict.fromkeys(tags, now), xx=True, ch=True)
    return int(renewed or 0)


def keep_leases(url: str, index: str, stop: threading.Event) -> None:
    """Renew this worker's leases every LEASE_RENEW_S seconds until `stop` is set; Redis errors are logged and the
    renewal goes on (messages whose lease ran out meanwhile are run again: tasks are idempotent)."""
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    while not stop.wait(LEASE_RENEW_S):
        try:
            renew_leases(client, index, held_delivery_tags())
        except redis.RedisError as e:
            log.warning("lease renewal failed", extra={"error": str(e)[:200]})


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    if _org:
        keys = OrgKeys(_topology.org(_org).msp_id)
        hostname = str(getattr(sender, "hostname", ""))
        args = (_broker_url, keys.alive("worker"), threading.Event())
        threading.Thread(target=heartbeat, args=args, kwargs={"hostname": hostname}, daemon=True).start()
        lease = (_broker_url, keys.celery_prefix + UNACKED_INDEX, threading.Event())
        threading.Thread(target=keep_leases, args=lease, name="leases", daemon=True).start()
