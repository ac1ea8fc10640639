"""Periodic work of an org, run by its listener process (one per org, so each job is triggered once):

| job | every | who |
|---|---|---|
| re-send tasks written down and never finished (the outbox), and right after a Redis outage | 5 s | every org |
| a remittance cycle: pay each provider's due claims in one transaction | `remittance.cycle_seconds` | insurers |
| purge the private lines of claims whose retention has passed | `remittance.purge_every_seconds` | insurers |

A job that triggers work only publishes a task (through the outbox); the org's Celery workers do the work.

`RedisWatch` pings Redis twice a second with a client that does not retry by itself (redis-py's own retries would
hide a short restart), so the listener knows when Redis was away and can re-send what may have been lost with it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from kombu.exceptions import OperationalError
from redis.backoff import NoBackoff
from redis.retry import Retry

from workers import outbox
from workers.settings import WorkerSettings

log = logging.getLogger("careledger.listener")


@dataclass
class Job:
    name: str
    every_s: float
    run: Callable[[], None]
    next_at: float = 0.0


class RedisWatch:
    """Whether Redis went away: `outage()` is when the current or last unsettled outage was first noticed (a Unix
    time), until `settled` is told that what was written before it was dealt with."""

    def __init__(self, url: str, every_s: float = 0.5) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
        self.every_s = every_s
        self._lock = threading.Lock()
        self._down_since: float | None = None  # Redis is away now, since then
        self._unsettled: float | None = None  # an outage that ended, noticed first then

    def probe(self) -> bool:
        """Ping once; True when Redis answered."""
        try:
            self.client.ping()
        except redis.RedisError:  # refused, timed out, or loading its data after a restart
            with self._lock:
                self._down_since = self._down_since or time.time()
            return False
        with self._lock:
            if self._down_since is not None:
                self._unsettled = min(self._unsettled or self._down_since, self._down_since)
                self._down_since = None
        return True

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.every_s):
            self.probe()

    def outage(self) -> float | None:
        """When the last outage that ended and is not settled yet was first noticed."""
        with self._lock:
            return self._unsettled

    def settled(self, noticed: float) -> None:
        with self._lock:
            if self._unsettled == noticed:
                self._unsettled = None


def jobs_for(settings: WorkerSettings, r: redis.Redis, watch: RedisWatch | None = None) -> list[Job]:
    msp, queue = settings.org.msp_id, settings.queue

    def resend() -> None:
        if resent := outbox.sweep(r, msp):
            log.warning("re-sent unfinished tasks", extra={"org": msp, "tasks": resent})

    def resend_after_outage() -> None:
        noticed = watch.outage() if watch is not None else None
        if noticed is None:
            return
        resent = outbox.sweep(r, msp, written_before=noticed)
        log.warning("redis was away: re-sent the tasks in flight then", extra={"org": msp, "tasks": resent})
        assert watch is not None
        watch.settled(noticed)

    def trigger(task: str, every_s: float) -> Callable[[], None]:
        def publish() -> None:
            slot = int(time.time() // every_s)  # one task per period, however often this runs
            outbox.publish(r, msp, queue, task, [], f"{msp}:{task}:{slot}")

        return publish

    jobs = [Job("outbox", 5.0, resend)]
    if watch is not None:
        jobs.append(Job("outbox after a Redis outage", 0.5, resend_after_outage))
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
