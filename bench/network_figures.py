"""Network figures: cold binary build, fresh and warm `network up`, and resident memory of the running network.

    .venv/bin/python bench/network_figures.py [--cold-build]

Runs its own network in run/bench on ports from 37000 and removes it afterwards. --cold-build also builds the
Fabric binaries with empty Go module and build caches (downloads everything again; minutes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from consortium import processes
from consortium import topology as topo
from network import control


def cold_build() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CARELEDGER_CACHE": f"{tmp}/cl", "GOCACHE": f"{tmp}/gocache", "GOMODCACHE": f"{tmp}/mod"}
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "careledger.cli", "network", "build"], env=env, check=True)
        elapsed = time.monotonic() - started
        subprocess.run(["chmod", "-R", "u+w", tmp], check=True)  # the module cache is read-only
    return elapsed


def timed_up(t: topo.Topology) -> float:
    started = time.monotonic()
    control.up(t, progress=lambda _m: None)
    return time.monotonic() - started


def rss(t: topo.Topology) -> dict[str, int]:
    out = {}
    for proc in control.managed_processes(t):
        pid = proc.pid()
        if pid is not None:
            out[proc.name] = processes.rss_bytes(pid)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold-build", action="store_true")
    args = parser.parse_args()
    if args.cold_build:
        print(f"cold binaries build (empty Go caches)  {cold_build():7.1f} s")
    t = topo.load(home=topo.REPO_ROOT / "run" / "bench", port_base=37000)
    control.down(t, purge=True, progress=lambda _m: None)
    try:
        print(f"fresh network up (crypto, channels, chaincode)  {timed_up(t):7.1f} s")
        time.sleep(5)  # let gossip and the ledgers settle before measuring memory
        per_process = rss(t)
        control.down(t, progress=lambda _m: None)
        print(f"warm network up (resume after down)  {timed_up(t):7.1f} s")
        print(f"warm network up (already running)  {timed_up(t):7.1f} s")
        for name, size in sorted(per_process.items()):
            print(f"  rss {name:16} {size / 2**20:7.1f} MiB")
        print(f"total rss of the running network  {sum(per_process.values()) / 2**20:7.1f} MiB")
    finally:
        control.down(t, purge=True, progress=lambda _m: None)


if __name__ == "__main__":
    main()
