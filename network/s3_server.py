"""The consortium host's S3-compatible object store for blobs, for development and tests.

moto's server mode (`moto_server`, from PyPI, Apache-2.0), installed by scripts/bootstrap into its own virtualenv in
the cache folder (`<cache>/s3-server`), started by `careledger network up` on the port base + 310, bound to the
services host. It keeps objects in its process (spilled to temporary files past 16 MiB each), so blobs kept there
last as long as the process. A deployment points the gateways at its own S3-compatible service instead
(`CARELEDGER_BLOBS=s3://<bucket>` and `CARELEDGER_S3_*`, see `records.blobs`). When the server is not installed,
`up` says so and goes on: the filesystem backend is the default.
"""

from __future__ import annotations

import socket
from pathlib import Path

from consortium.processes import ManagedProcess, ensure_port_free
from consortium.topology import Topology
from network.binaries import cache_root

NAME = "s3"
PORT_OFFSET = 310
ACCESS_KEY, SECRET_KEY = "careledger-dev", "careledger-dev-secret"  # the development server checks neither


def server_python() -> Path:
    """The interpreter of the server's virtualenv (run as `python -m moto.server`, so that the pid file's executable
    check sees the interpreter it runs as)."""
    return cache_root() / "s3-server" / "bin" / "python"


def installed() -> bool:
    return (cache_root() / "s3-server" / "bin" / "moto_server").exists()


def port(topology: Topology) -> int:
    return topology.port_base + PORT_OFFSET


def endpoint(topology: Topology) -> str:
    return f"http://{topology.services_host}:{port(topology)}"


def process(topology: Topology) -> ManagedProcess:
    return ManagedProcess(NAME, topology.pid_file(NAME), topology.log_file(NAME))


def answering(topology: Topology) -> bool:
    try:
        with socket.create_connection((topology.services_host, port(topology)), timeout=1):
            return True
    except OSError:
        return False


def start(topology: Topology) -> bool:
    """Start the server unless it runs or is not installed; True when it was started."""
    proc = process(topology)
    if proc.running() or not installed():
        return False
    ensure_port_free(NAME, topology.services_host, port(topology))
    argv = [str(server_python()), "-m", "moto.server", "-H", topology.services_host, "-p", str(port(topology))]
    proc.start(argv, {"PATH": "/usr/bin:/bin"}, launcher=topology.launcher_of(None))
    proc.wait_until(lambda: answering(topology), "answering HTTP", 30.0)
    return True
