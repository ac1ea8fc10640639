"""Periodic work of an org, run by its listener process (one per org, so each job is triggered once):

| job | every | who |
|---|---|---|
| re-send tasks written down and never finished (the outbox) | 5 s | every org |
| a remittance cycle: pay each provider's due claims in one transaction | `remittance.cycle_seconds` | insurers |
| purge the private lines of claims whose retention has passed | `remittance.purge_every_seconds` | insurers |

A job that triggers work only publishes a task (through the outbox); the org's Celery workers do the work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from kombu.exceptions import OperationalError

from workers import outbox
from workers.settings import WorkerSettings

log = logging.getLogger("careledger.listener")


@dataclass
class Job:
    name: str
    every_s: float
    run: Callable[[], None]
    next_at: float = 0.0


def jobs_for(settings: WorkerSettings, r: redis.Redis) -> list[Job]:
    msp, queue = settings.org.msp_id, settings.queue

    def resend() -> None:
        if resent := outbox.sweep(r, msp):
            log.warning("re-sent unfinished tasks", extra={"org": msp, "tasks": resent})

    def trigger(task: str, every_s: float) -> Callable[[], None]:
        def publish() -> None:
            slot = int(time.time() // every_s)  # one task per period, however often this runs
            outbox.publish(r, msp, queue, task, [], f"{msp}:{task}:{slot}")

        return publish

    jobs = [Job("outbox", 5.0, resend)]
    if settings.rules is not None:
        cycle = settings.remittance
        if cycle.mode == "batch":
            jobs.append(Job("remit", cycle.cycle_seconds, trigger("careledger.remit", cycle.cycle_seconds)))
        jobs.append(Job("purge", cycle.purge_every_seconds, trigger("careledger.purge_due", cycle.purge_every_seconds)))
    return jobs


def run(jobs: list[Job], stop: threading.Event | None, tick_s: float = 0.25) -> None:
    """Run each job when it is due until `stop` is set; a job that fails (Redis down) is tried again next time."""
    stop = stop or threading.Event()
    while not stop.wait(tick_s):
        now = time.monotonic()
        for job in jobs:
            if now < job.next_at:
                continue
            job.next_at = now + job.every_s
            try:
                job.run()
            except (redis.RedisError, OperationalError) as e:  # Redis (or the broker in it) down: next time
                log.warning("periodic job failed", extra={"job": job.name, "error": str(e)[:200]})
