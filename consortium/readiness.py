"""Is the network there for a command to use? Checks that answer a newcomer's mistake with a sentence naming the
command to run, before anything else fails deeper down with a less helpful message."""

from __future__ import annotations

import socket

from consortium.errors import NetworkError
from consortium.topology import Org, Topology

UP = "run `careledger network up` first"


class NotSetUp(NetworkError):
    """No network was ever created in this run folder."""


class NotRunning(NetworkError):
    """The network exists but the part a command needs does not answer."""


def require_set_up(topology: Topology) -> None:
    if not topology.orgs_dir.exists() or not topology.redis_admin_password_file.exists():
        raise NotSetUp(f"there is no CareLedger network in {topology.home}; {UP}")


def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_peer(topology: Topology, org: Org) -> None:
    """The org's own peer must answer: its gateway and workers reach the ledger only through it."""
    require_set_up(topology)
    peer = topology.peer_of(org)
    if not answers(peer.host, peer.port):
        raise NotRunning(f"{peer.name} ({org.name}'s peer) is not running on {peer.address}; {UP}")


def require_redis(topology: Topology) -> None:
    require_set_up(topology)
    if not answers(topology.services_host, topology.redis_port):
        raise NotRunning(f"redis is not running on {topology.services_host}:{topology.redis_port}; {UP}")
