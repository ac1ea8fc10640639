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
"""

from __future__ import annotations

import os

from celery import Celery

from consortium import topology as topo
from consortium.redis_keys import OrgKeys

VISIBILITY_TIMEOUT_S = float(os.environ.get("CARELEDGER_VISIBILITY_TIMEOUT") or 60)

app = Celery("careledger", include=["workers.tasks", "workers.subscriptions"])
_topology = topo.load()
_org = os.environ.get("CARELEDGER_ORG")
# Every key Celery writes for an org lives under the org's own prefix (see consortium.redis_keys).
_prefix = {"global_keyprefix": OrgKeys(_topology.org(_org).msp_id).celery_prefix} if _org else {}
app.conf.update(
    broker_url=_topology.redis_url,
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
    worker_hijack_root_logger=False,
    task_default_queue="careledger.default",
)
