"""Where a bench's CPU went: each process of the stack's share of one core over a run (a gateway counted with the
processes it runs, when it runs several)."""

from __future__ import annotations

import os
from pathlib import Path

from consortium.processes import cpu_seconds
from consortium.topology import Topology
from gateway import cli as gateway_cli
from network.control import managed_processes
from workers import cli as worker_cli

CORES = os.cpu_count() or 1


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            out.setdefault(ppid, []).append(int(entry.name))
    return out


def tree_cpu_seconds(pid: int, children: dict[int, list[int]]) -> float:
    """CPU of a process and of every process under it."""
    return cpu_seconds(pid) + sum(tree_cpu_seconds(c, children) for c in children.get(pid, []))


def cpu_by_process(t: Topology) -> dict[str, float]:
    children = _children()
    out = {}
    for proc in managed_processes(t):  # PostgreSQL with its server processes; supervisord alone (its are below)
        if (pid := proc.pid()) is not None:
            out[proc.name] = cpu_seconds(pid) if proc.name == "supervisord" else tree_cpu_seconds(pid, children)
    for org in worker_cli.orgs_with_workers(t):
        for name, p in (
            ("worker", worker_cli.worker_process(t, org)),
            ("listener", worker_cli.listener_process(t, org)),
        ):
            if (pid := p.pid()) is not None:
                out[f"{name}-{org}"] = tree_cpu_seconds(pid, children)
    for org in gateway_cli.orgs_with_gateways(t):
        if (pid := gateway_cli.process(t, org).pid()) is not None:
            out[f"gateway-{org}"] = tree_cpu_seconds(pid, children)
    out["bench client"] = cpu_seconds(os.getpid())  # offering the load costs this machine's CPU too
    return out


def cpu_report(before: dict[str, float], after: dict[str, float], wall: float) -> str:
    """Each process's share of one core over the run, largest first."""
    used = sorted(((after[n] - before.get(n, 0.0), n) for n in after), reverse=True)
    total = sum(u for u, _ in used)
    parts = ", ".join(f"{n} {100 * u / wall:.0f}%" for u, n in used if u / wall >= 0.03)
    return f"      cpu {100 * total / wall:.0f}% of {100 * CORES}% ({CORES} cores): {parts}"
