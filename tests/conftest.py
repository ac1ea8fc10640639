"""Shared fixtures. The real network is started lazily, once per test session, only if a test asks for it."""

from __future__ import annotations

import json
import logging
import os
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

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


def stop_org_processes(network: topo.Topology) -> None:
    """Stop every member's gateway, and the listeners and workers of the orgs on `claims` (started again on use)."""
    from workers import cli as worker_cli

    for org in gateway_cli.orgs_with_gateways(network):
        gateway_cli.process(network, org).stop()
    for org in worker_cli.orgs_with_workers(network):
        worker_cli.listener_process(network, org).stop()
        worker_cli.worker_process(network, org).stop(timeout=30)


@contextmanager
def org_processes_on(network: topo.Topology, store: str) -> Iterator[str]:
    """The gateways and workers started meanwhile keep their records in `store` ("sqlite" or "postgresql": the test
    network's own PostgreSQL, one database per org); those running before are stopped first, and those started
    meanwhile after, so each test module that asks sees only its own store. Nothing changes for the session's
    store (CARELEDGER_TEST_STORE)."""
    if store == TEST_STORE:
        yield store
        return
    before = os.environ.get("CARELEDGER_STORE_URL")
    stop_org_processes(network)
    if store == "postgresql":
        os.environ["CARELEDGER_STORE_URL"] = network.postgres_url("{org}")
    else:
        os.environ.pop("CARELEDGER_STORE_URL", None)
    try:
        yield store
    finally:
        stop_org_processes(network)
        if before is None:
            os.environ.pop("CARELEDGER_STORE_URL", None)
        else:
            os.environ["CARELEDGER_STORE_URL"] = before


CLAIM_KEY_SYSTEM = "urn:careledger:claim"


def claim_key(claim: dict[str, object]) -> str:
    """The key a provider's Claim has on chain, from the identifier the gateway stamped on it."""
    identifiers = claim.get("identifier") or []
    assert isinstance(identifiers, list)
    return next(str(i["value"]) for i in identifiers if i.get("system") == CLAIM_KEY_SYSTEM)


# ----- Members calling each other ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def member_client(network: topo.Topology) -> Iterator[Callable[[str], httpx.Client]]:
    """member_client("ClinicOrg"): an HTTPS client that presents ClinicOrg's gateway certificate (mutual TLS), as
    ClinicOrg's gateway does when it calls another member's; the URLs are `consortium.tls.member_url`'s."""
    from consortium import tls

    opened: dict[str, httpx.Client] = {}

    def get(org: str) -> httpx.Client:
        if org not in opened:
            context = tls.member_client_context(network, network.org(org))
            opened[org] = httpx.Client(verify=context, timeout=60)
        return opened[org]

    yield get
    for client in opened.values():
        client.close()


# ----- The PHI registry: what every test wrote about patients, for the scan that runs last ---------------------------
#
# Every request a test sends through httpx or requests (GatewayHttp, the in-process gateways, fhirpy) is looked at
# once it has been answered: the Patients of an accepted request (2xx; for a batch, its accepted entries) are noted —
# names, identifiers, birth dates, addresses, phone numbers, e-mail addresses — and so is every id a client chose (a
# PUT's id can be an MRN). tests/integration/test_phi.py, ordered after every other test, then looks for each of them
# in every block of every channel and in every peer's databases.

PHI_SCAN_MARKER = "phi_scan"


class PhiRegistry:
    """Strings that must never reach the ledger, each with what it is (for the scan's failure message)."""

    def __init__(self) -> None:
        self.strings: dict[str, str] = {}
        self.mrn_like_ids: set[str] = set()  # ids a test chose equal to the patient's identifier
        self.assigned: set[str] = set()  # `Type/id` the server gave in a create's answer: not chosen by a client
        self.service_dates: set[str] = set()  # dates of service of the Claims tests filed (public on `claims`)
        self._paused = 0

    def add(self, text: object, what: str) -> None:
        if isinstance(text, str) and text.strip() and not self._paused:
            self.strings.setdefault(text, what)

    def client_id(self, rtype: str, rid: str) -> None:
        if f"{rtype}/{rid}" not in self.assigned:  # an update of what the server created keeps the server's id
            self.add(rid, f"client-chosen id of a {rtype}")

    def patient(self, resource: dict[str, Any]) -> None:
        """Every identifying element of a Patient resource."""
        if f"Patient/{resource.get('id')}" not in self.assigned:
            self.add(resource.get("id"), "client-chosen Patient id")
        self.add(resource.get("birthDate"), "birth date")
        names = list(_dicts(resource.get("name")))
        names += [c["name"] for c in _dicts(resource.get("contact")) if isinstance(c.get("name"), dict)]
        for name in names:
            for part in ("family", "text"):
                self.add(name.get(part), f"name ({part})")
            for given in name.get("given") or []:
                self.add(given, "name (given)")
        for ident in _dicts(resource.get("identifier")):
            self.add(ident.get("value"), f"identifier ({ident.get('system', '')})")
        for address in _dicts(resource.get("address")):
            for line in address.get("line") or []:
                self.add(line, "address line")
            for part in ("city", "postalCode", "text"):
                self.add(address.get(part), f"address ({part})")
        for telecom in _dicts(resource.get("telecom")):
            self.add(telecom.get("value"), f"telecom ({telecom.get('system', '')})")

    def claim(self, resource: dict[str, Any]) -> None:
        """A Claim's dates of service: its summary on `claims` carries one by design (docs/SECURITY.md)."""
        periods = [resource.get("billablePeriod")]
        for item in _dicts(resource.get("item")):
            self.service_dates.add(str(item.get("servicedDate") or "")[:10])
            periods.append(item.get("servicedPeriod"))
        for period in _dicts(periods):
            for end in ("start", "end"):
                self.service_dates.add(str(period.get(end) or "")[:10])
        self.service_dates.discard("")

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Note nothing inside (a fuzz run whose accepted inputs are random text, not realistic patients)."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def answered(self, method: str, url: str, body: bytes | str | None, status: int, answer: bytes) -> None:
        """Note what an answered request wrote."""
        if status >= 300 or method.upper() not in ("POST", "PUT") or not body:
            return
        try:
            sent = json.loads(body)
        except ValueError:
            return
        path = unquote(urlsplit(url).path).split("/")
        self._note_assigned(method, sent, answer)
        if method.upper() == "PUT" and len(path) >= 2 and path[-2][:1].isupper():
            self.client_id(path[-2], path[-1])
        if not isinstance(sent, dict):
            return
        entries = sent.get("entry") if sent.get("resourceType") == "Bundle" else None
        if isinstance(entries, list):
            accepted = _accepted_entries(entries, sent.get("type"), answer)
            for entry in accepted:
                request = entry.get("request") if isinstance(entry.get("request"), dict) else {}
                url_in_bundle = str(request.get("url") or "")
                if request.get("method") == "PUT" and "/" in url_in_bundle:
                    rtype, _, rid = url_in_bundle.partition("/")
                    self.client_id(rtype, rid.partition("?")[0])
                self._walk(entry.get("resource"))
        else:
            self._walk(sent)

    def _note_assigned(self, method: str, sent: object, answer: bytes) -> None:
        """The ids the server gave to what a POST created: the resource answered, or the locations a bundle's POST
        entries got (a PUT entry's id stays the client's)."""
        if method.upper() != "POST" or not isinstance(sent, dict):
            return
        try:
            got = json.loads(answer)
        except ValueError:
            return
        if not isinstance(got, dict):
            return
        if sent.get("resourceType") != "Bundle":
            if isinstance(got.get("id"), str):
                self.assigned.add(f"{got.get('resourceType')}/{got['id']}")
            return
        for entry, answered in zip(sent.get("entry") or [], got.get("entry") or [], strict=False):
            request = (entry or {}).get("request") if isinstance(entry, dict) else None
            response = (answered or {}).get("response") if isinstance(answered, dict) else None
            created = isinstance(response, dict) and str(response.get("status") or "").startswith("201")
            if created and isinstance(request, dict) and request.get("method") == "POST":
                assert isinstance(response, dict)
                self.assigned.add("/".join(str(response.get("location") or "").split("/")[:2]))

    def _walk(self, node: object) -> None:
        if isinstance(node, dict):
            if node.get("resourceType") == "Patient":
                self.patient(node)
            if node.get("resourceType") == "Claim":
                self.claim(node)
            for value in node.values():
                self._walk(value)
        elif isinstance(node, list):
            for value in node:
                self._walk(value)


def _dicts(value: object) -> Iterator[dict[str, Any]]:
    items = value if isinstance(value, list) else [value]
    yield from (v for v in items if isinstance(v, dict))


def _accepted_entries(entries: list[Any], bundle_type: object, answer: bytes) -> list[dict[str, Any]]:
    """A transaction's entries (accepted together), or a batch's entries whose own status is 2xx."""
    dict_entries = [e if isinstance(e, dict) else {} for e in entries]
    if bundle_type != "batch":
        return dict_entries
    try:
        answered = json.loads(answer).get("entry") or []
    except (ValueError, AttributeError):
        return dict_entries  # when in doubt, note everything
    statuses = [str(((a or {}).get("response") or {}).get("status", "")) for a in answered]
    return [e for e, s in zip(dict_entries, statuses, strict=False) if s.startswith("2")]


PHI = PhiRegistry()


@pytest.fixture(scope="session")
def phi_registry() -> PhiRegistry:
    return PHI


@pytest.fixture(scope="session", autouse=True)
def _note_what_tests_write() -> Iterator[None]:
    """Wrap the HTTP clients tests use so that every answered write is noted in the PHI registry."""
    import requests

    patch = pytest.MonkeyPatch()
    sync_send, async_send, requests_send = httpx.Client.send, httpx.AsyncClient.send, requests.Session.send

    def note(request: httpx.Request, response: httpx.Response) -> None:
        try:
            content = request.content
        except httpx.RequestNotRead:
            return
        PHI.answered(request.method, str(request.url), content, response.status_code, response.content)

    def send(self: httpx.Client, request: httpx.Request, **kw: Any) -> httpx.Response:
        response = sync_send(self, request, **kw)
        if not kw.get("stream"):
            note(request, response)
        return response

    async def asend(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> httpx.Response:
        response = await async_send(self, request, **kw)
        if not kw.get("stream"):
            note(request, response)
        return response

    def rsend(self: requests.Session, request: requests.PreparedRequest, **kw: Any) -> requests.Response:
        response = requests_send(self, request, **kw)
        PHI.answered(str(request.method), str(request.url), request.body, response.status_code, response.content)
        return response

    patch.setattr(httpx.Client, "send", send)
    patch.setattr(httpx.AsyncClient, "send", asend)
    patch.setattr(requests.Session, "send", rsend)
    yield
    patch.undo()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{PHI_SCAN_MARKER}: the PHI scan, run after every other test")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests with a network of their own in network namespaces run first, before the session's network starts. The PHI
    scan looks for what every other test wrote to the network, so its tests (in their own order) run right after the
    last other test that uses the founding consortium, while the network still runs. Tests that change the consortium
    (members joining and leaving, certificates renewed) run last, because every other test assumes the founding
    consortium."""
    first = [i for i in items if i.get_closest_marker("netns")]
    last = [i for i in items if i.get_closest_marker("membership") and i not in first]
    scan = [i for i in items if i.get_closest_marker(PHI_SCAN_MARKER) and i not in first and i not in last]
    rest = [i for i in items if i not in first and i not in last and i not in scan]
    on_network = [n for n, item in enumerate(rest) if item.get_closest_marker("network")]
    at = on_network[-1] + 1 if on_network else len(rest)
    items[:] = first + rest[:at] + scan + rest[at:] + last
