"""Shared fixtures. The real network is started lazily, once per test session, only if a test asks for it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
import redis

from gateway import connect
from gateway.fabric import Gateway
from network import binaries, control
from network import topology as topo
from network.admin import Admin

TEST_PORT_BASE = 27000
log = logging.getLogger("careledger.tests")


@pytest.fixture(scope="session")
def network() -> Iterator[topo.Topology]:
    """A fresh CareLedger network in run/test, separate from any network started by scripts/demo."""
    t = topo.load(home=topo.REPO_ROOT / "run" / "test", port_base=TEST_PORT_BASE)
    control.down(t, purge=True, progress=log.info)
    control.up(t, progress=log.info)
    yield t
    # Stop, but keep the run folder: its logs explain a failure. The next session purges it.
    control.down(t, progress=log.info)


@pytest.fixture(scope="session")
def admin(network: topo.Topology) -> Admin:
    fabric = binaries.cached()
    assert fabric is not None
    return Admin(network, fabric)


@pytest.fixture(scope="session")
def hospital(network: topo.Topology) -> Iterator[Gateway]:
    with connect.gateway(network, "HospitalOrg") as gw:
        yield gw


@pytest.fixture(scope="session")
def redis_client(network: topo.Topology) -> redis.Redis:
    return redis.Redis.from_url(network.redis_url)


@pytest.fixture(scope="session")
def gateway_as(network: topo.Topology) -> Iterator[Callable[..., Gateway]]:
    """gateway_as("ClinicOrg") or gateway_as("HospitalOrg", "User2"): one shared Gateway per org and user."""
    opened: dict[tuple[str, str], Gateway] = {}

    def get(org: str, user: str = "User1") -> Gateway:
        if (org, user) not in opened:
            opened[(org, user)] = connect.gateway(network, org, user)
        return opened[(org, user)]

    yield get
    for gw in opened.values():
        gw.close()
