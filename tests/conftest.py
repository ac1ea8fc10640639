"""Shared fixtures. The real network is started lazily, once per test session, only if a test asks for it."""

from __future__ import annotations

import json
import logging
import os
import ssl
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis

from consortium import connect
from consortium import topology as topo
from fabric_gateway import Gateway
from gateway import cli as gateway_cli
from gateway.dev_issuer import dev_token
from gateway.settings import GatewaySettings
from network import binaries, control
from network.admin import Admin

# Another checkout's test run can sit beside this one on other ports (CARELEDGER_TEST_PORT_BASE).
TEST_PORT_BASE = int(os.environ.get("CARELEDGER_TEST_PORT_BASE") or 27000)
# Where the gateways and workers of the test network keep their records: "sqlite" (default) or "postgresql" (the
# test network's own PostgreSQL, one database per org).
TEST_STORE = os.environ.get("CARELEDGER_TEST_STORE") or "sqlite"
log = logging.getLogger("careledger.tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests with a network of their own in network namespaces run first, before the session's network starts; tests
    that change the consortium (members joining and leaving, certificates renewed) run last, because every other
    test assumes the founding consortium."""
    first = [i for i in items if i.get_closest_marker("netns")]
    last = [i for i in items if i.get_closest_marker("membership")]
    items[:] = first + [i for i in items if i not in first and i not in last] + last


@pytest.fixture(scope="session")
def network() -> Iterator[topo.Topology]:
    """A fresh CareLedger network in run/test, separate from any network started by scripts/demo."""
    t = topo.load(home=topo.REPO_ROOT / "run" / "test", port_base=TEST_PORT_BASE)
    control.down(t, purge=True, progress=log.info)
    control.up(t, progress=log.info)
    if TEST_STORE not in ("sqlite", "postgresql"):
        raise ValueError(f"CARELEDGER_TEST_STORE={TEST_STORE!r}: sqlite or postgresql")
    store_url = os.environ.get("CARELEDGER_STORE_URL")
    if TEST_STORE == "postgresql":  # every process started from here (gateways, workers) reads it
        os.environ["CARELEDGER_STORE_URL"] = t.postgres_url("{org}")
    yield t
    # Stop, but keep the run folder: its logs explain a failure. The next session purges it.
    control.down(t, progress=log.info)
    if store_url is None:
        os.environ.pop("CARELEDGER_STORE_URL", None)
    else:
        os.environ["CARELEDGER_STORE_URL"] = store_url


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
    return redis.Redis.from_url(network.redis_admin_url)  # the admin user: tests inspect every org's keys


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


class GatewayHttp:
    """An EHR's view of one org's running gateway: HTTPS with the org's TLS CA, bearer tokens from its issuer."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.ca = str(settings.topology.tls_ca_cert(settings.org))
        self.base = f"{settings.url}/fhir"
        self.http = httpx.Client(base_url=self.base, verify=ssl.create_default_context(cafile=self.ca), timeout=30)

    def token(self, scope: str = "system/*.read system/*.write") -> str:
        return dev_token(self.settings, "ehr-test", scope)

    def headers(self, scope: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(scope) if scope else self.token()}"}

    def get(self, path: str, **kw: object) -> httpx.Response:
        return self.http.get(path, headers=self.headers(), **kw)  # type: ignore[arg-type]

    def post(self, path: str, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
        h = {**self.headers(), "Content-Type": "application/fhir+json", **(headers or {})}
        return self.http.post(path, content=json.dumps(body), headers=h)

    def put(self, path: str, body: object) -> httpx.Response:
        h = {**self.headers(), "Content-Type": "application/fhir+json"}
        return self.http.put(path, content=json.dumps(body), headers=h)


@pytest.fixture(scope="session")
def gateway_clients(network: topo.Topology) -> Iterator[dict[str, GatewayHttp]]:
    orgs = gateway_cli.orgs_with_gateways(network)
    clients = {org: GatewayHttp(GatewaySettings.load(network, org)) for org in orgs}
    yield clients
    for org in orgs:
        clients[org].http.close()
        gateway_cli.process(network, org).stop()


@pytest.fixture
def gateways(network: topo.Topology, gateway_clients: dict[str, GatewayHttp]) -> dict[str, GatewayHttp]:
    """Every member's gateway running as its own process (`careledger gateway start`). Started on first use and
    again after a test that took the network down (which stops gateways too)."""
    for org in gateway_clients:
        gateway_cli.start(network, org)
    return gateway_clients


CLAIM_KEY_SYSTEM = "urn:careledger:claim"


def claim_key(claim: dict[str, object]) -> str:
    """The key a provider's Claim has on chain, from the identifier the gateway stamped on it."""
    identifiers = claim.get("identifier") or []
    assert isinstance(identifiers, list)
    return next(str(i["value"]) for i in identifiers if i.get("system") == CLAIM_KEY_SYSTEM)
