"""The consortium host's Redis: broker and result backend for Celery, home of listener checkpoints.

Debian's redis-server binary, started by us on the topology's port with an append-only file in the run folder, so
checkpoints and queued tasks survive a restart. scripts/bootstrap installs the package on a fresh machine.
"""

from __future__ import annotations

import shutil
import socket

from consortium.errors import ToolMissing
from consortium.processes import ManagedProcess, ensure_port_free
from consortium.topology import Topology

NAME = "redis"


def process(topology: Topology) -> ManagedProcess:
    return ManagedProcess(NAME, topology.pid_file(NAME), topology.log_file(NAME))


def ping(topology: Topology) -> bool:
    try:
        with socket.create_connection((topology.host, topology.redis_port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start(topology: Topology) -> bool:
    proc = process(topology)
    if proc.running():
        return False
    binary = shutil.which("redis-server")
    if binary is None:
        raise ToolMissing("redis-server is not installed; run scripts/bootstrap (it installs Debian's redis-server)")
    ensure_port_free(NAME, topology.host, topology.redis_port)
    data = topology.data_dir(NAME)
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        "--bind", topology.host,
        "--port", str(topology.redis_port),
        "--dir", str(data),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--daemonize", "no",
        "--protected-mode", "yes",
    ]  # fmt: skip
    proc.start(argv, {"PATH": "/usr/bin:/bin"})
    return True


def wait_ready(topology: Topology, timeout: float = 20.0) -> None:
    process(topology).wait_until(lambda: ping(topology), "answering PING", timeout)
