"""`careledger worker ...`: an org's chain-event listener and Celery workers, in the foreground or in the background
under supervisord (consortium/supervision.py), which restarts one that dies."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from typing import Any

import click

from consortium import connect, logs, readiness
from consortium import topology as topo
from consortium.supervision import Program, Supervised, program_env
from consortium.topology import Topology
from ledger.contracts import Ledger
from ledger.transport import FabricTransport
from workers import preauth_metrics
from workers.settings import WorkerSettings

WORKER_THREADS = 48  # tasks wait on the ledger and HTTP, not the CPU


def orgs_with_workers(topology: Topology) -> list[str]:
    """Orgs on the claims channel: providers hear about their claims, insurers adjudicate them."""
    return [o.name for o in topology.member_orgs if "claims" in topology.channels_of(o)]


def listener_process(topology: Topology, org: str) -> Supervised:
    return Supervised(topology, f"listener-{org}")


def worker_process(topology: Topology, org: str) -> Supervised:
    return Supervised(topology, f"worker-{org}")


def _env(topology: Topology, org: str) -> dict[str, str]:
    return program_env(topology, CARELEDGER_ORG=org)


def celery_argv(topology: Topology, org: str) -> list[str]:
    settings = WorkerSettings.load(topology, org)
    return [
        sys.executable, "-m", "celery", "-A", "workers.app", "worker",
        "--queues", settings.queue,
        "--pool", "threads", "--concurrency", str(WORKER_THREADS),
        "--hostname", f"{org}@%h",
        # No gossip, mingle, heartbeats (nor remote control, workers/app.py): nothing on pub/sub channels, which the
        # org's Redis user may not use.
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--loglevel", "INFO",
    ]  # fmt: skip


def start_worker(topology: Topology, org: str) -> bool:
    proc = worker_process(topology, org)
    return proc.start(Program(proc.name, celery_argv(topology, org), _env(topology, org), topo.REPO_ROOT))


def start_listener(topology: Topology, org: str) -> bool:
    proc = listener_process(topology, org)
    argv = [sys.executable, "-m", "careledger.cli", "worker", "listen", "--org", org]
    return proc.start(Program(proc.name, argv, _env(topology, org), topo.REPO_ROOT))


def _require_running(topology: Topology, orgs: list[str]) -> None:
    """Workers need Redis and each org's own peer."""
    readiness.require_redis(topology)
    for org in orgs:
        readiness.require_peer(topology, topology.org(org))


@click.group()
def worker() -> None:
    """Each org's chain-event listener and Celery workers (claims: adjudication, payment, notifications)."""


@worker.command()
@click.option("--org", required=True, help="member org name, e.g. InsurerOrg")
def listen(org: str) -> None:
    """Stream the org's chain events into Celery tasks, resuming from the Redis checkpoint (foreground)."""
    from workers.listener import listen as run_listener

    settings = WorkerSettings.load(topo.load(), org)
    _require_running(settings.topology, [org])
    logs.configure()
    run_listener(settings)


@worker.command()
@click.option("--org", required=True, help="member org name, e.g. InsurerOrg")
def run(org: str) -> None:
    """Run the org's Celery worker in the foreground (it consumes only the org's queue)."""
    t = topo.load()
    _require_running(t, [org])
    os.execve(sys.executable, celery_argv(t, org), _env(t, org))


@worker.command(name="start")
@click.option("--org", "orgs", multiple=True, help="member org name (repeatable; default: every org on claims)")
def start_command(orgs: tuple[str, ...]) -> None:
    """Start listeners and workers in the background under supervisord, which restarts one that dies (logs in
    run/logs/); safe to run again."""
    t = topo.load()
    _require_running(t, list(orgs or orgs_with_workers(t)))
    for org in orgs or orgs_with_workers(t):
        w, li = start_worker(t, org), start_listener(t, org)
        click.echo(f"{org}: worker {'started' if w else 'running'}, listener {'started' if li else 'running'}")


@worker.command(name="stop")
@click.option("--org", "orgs", multiple=True, help="member org name (repeatable; default: every org on claims)")
def stop_command(orgs: tuple[str, ...]) -> None:
    """Stop listeners and workers started with `start` (a worker finishes its running tasks first)."""
    t = topo.load()
    for org in orgs or orgs_with_workers(t):
        for proc in (listener_process(t, org), worker_process(t, org)):
            if proc.stop(timeout=30):
                click.echo(f"stopped {proc.name}")


@click.group()
def claims() -> None:
    """Claims figures read from the chain."""


@claims.command(name="pa-metrics")
@click.option("--org", required=True, help="the insurer, e.g. InsurerOrg")
@click.option("--since", default="1970-01-01T00:00:00Z", show_default=True, help="submitted from (RFC 3339)")
@click.option("--until", default="9999-12-31T23:59:59Z", show_default=True, help="submitted before (RFC 3339)")
def pa_metrics(org: str, since: str, until: str) -> None:
    """Prior-authorisation figures the insurer must publish: approved, denied, approved after appeal, and the
    average and median time to a decision, expedited and standard."""
    t = topo.load()
    insurer = t.org(org)
    readiness.require_peer(t, insurer)

    async def read() -> list[dict[str, Any]]:
        async with connect.async_gateway(t, insurer) as gw:
            ledger = Ledger(FabricTransport(gw, t.chaincode_name))
            return await ledger.preauths(insurer.msp_id, since, until)

    rows = preauth_metrics.figures(asyncio.run(read()), datetime.now(UTC))
    click.echo(f"prior authorisation, {insurer.msp_id}, submitted {since} to {until}")
    heads = ("requests", "approved", "denied", "appeal ok", "open", "late", "mean h", "median h")
    widths = (8, 8, 7, 9, 5, 5, 8, 9)
    click.echo(f"  {'priority':10} " + " ".join(f"{h:>{w}}" for h, w in zip(heads, widths, strict=True)))
    for r in rows:
        mean = f"{r.mean_hours:8.2f}" if r.mean_hours is not None else f"{'-':>8}"
        median = f"{r.median_hours:9.2f}" if r.median_hours is not None else f"{'-':>9}"
        click.echo(
            f"  {r.priority:10} {r.requests:8} {r.approved:8} {r.denied:7} {r.approved_after_appeal:9}"
            f" {r.undecided:5} {r.late:5} {mean} {median}"
        )
