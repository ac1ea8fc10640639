"""More than one host: a network whose every org (and the host's shared services) runs in its own Linux network
namespace with its own address, joined by a bridge this test makes and removes. Nothing can rely on a shared
loopback: in each namespace 127.0.0.1 is that namespace's alone, so every address a process dials must come from the
consortium definition. A short flow proves it works: a bundle written, shared under consent, a claim filed and
adjudicated.

Needs root and iproute2 (CI runs as root); skipped otherwise. It runs first (tests/conftest.py), before the
session's network starts, and takes its own network down before anything else runs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from consortium import topology as topo
from gateway.settings import GatewaySettings
from network import control
from records import synthetic
from tests.conftest import TEST_PORT_BASE, GatewayHttp, claim_key
from tests.integration.load import start_services
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.network,
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"),
]
log = logging.getLogger("careledger.tests.netns")

PORT_BASE = TEST_PORT_BASE + 2000
TAG = str(PORT_BASE // 1000)  # names and the subnet follow the port base, so checkouts side by side do not clash
SUBNET = f"10.213.{PORT_BASE // 1000 % 256}"
BRIDGE = f"clbr{TAG}"
PLACES = {  # org (or "services") -> (namespace, address)
    "services": (f"cl{TAG}-services", f"{SUBNET}.9"),
    "OrdererOrg": (f"cl{TAG}-orderer", f"{SUBNET}.10"),
    "HospitalOrg": (f"cl{TAG}-hospital", f"{SUBNET}.11"),
    "ClinicOrg": (f"cl{TAG}-clinic", f"{SUBNET}.12"),
    "InsurerOrg": (f"cl{TAG}-insurer", f"{SUBNET}.13"),
    "PharmaOrg": (f"cl{TAG}-pharma", f"{SUBNET}.14"),
}


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {done.stderr}")
    return done


def make_hosts() -> None:
    """A bridge with the root namespace on .1, and per place a namespace with a veth pair on the bridge."""
    remove_hosts()
    ip("link", "add", BRIDGE, "type", "bridge")
    ip("addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
    ip("link", "set", BRIDGE, "up")
    for i, (ns, address) in enumerate(PLACES.values()):
        veth = f"cl{TAG}v{i}"
        ip("netns", "add", ns)
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("link", "set", veth, "master", BRIDGE, "up")
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")  # its own loopback, which no other namespace shares


def remove_hosts() -> None:
    for i, (ns, _) in enumerate(PLACES.values()):
        ip("netns", "del", ns, check=False)  # its veth end goes with it, and the pair, once nothing runs in it
        ip("link", "del", f"cl{TAG}v{i}", check=False)  # at once, even if a process still holds the namespace
    ip("link", "del", BRIDGE, check=False)


@pytest.fixture(scope="module")
def spread() -> Iterator[topo.Topology]:
    """The consortium with each org (and the services) on its own address in its own namespace, up."""
    home = topo.REPO_ROOT / "run" / "test-netns"
    t = topo.load(home=home, port_base=PORT_BASE)
    control.down(t, purge=True, progress=log.info)
    try:
        make_hosts()
        with t.editing_overlay() as overlay:
            overlay["services"] = {"netns": PLACES["services"][0], "host": PLACES["services"][1]}
            overlay["ordering"] = {"netns": PLACES["OrdererOrg"][0], "host": PLACES["OrdererOrg"][1]}
            overlay["orgs"] = [
                {"name": o.name, "netns": PLACES[o.name][0], "host": PLACES[o.name][1]} for o in t.member_orgs
            ]
        control.up(t, progress=log.info)
        yield t
    finally:
        control.down(t, progress=log.info)
        remove_hosts()


def listeners(ns: str) -> set[str]:
    """The local addresses the namespace's processes listen on (TCP)."""
    out = ip("netns", "exec", ns, "ss", "-Htln").stdout
    return {line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}


def test_each_org_on_its_own_host(spread: topo.Topology) -> None:
    t = spread
    # Every address the tooling knows is one of the namespaces' addresses, never a loopback.
    hosts = {PLACES[n][1] for n in PLACES}
    assert {n.host for n in t.nodes} | {t.services_host} <= hosts
    for org in t.member_orgs:
        assert t.chaincode_address(org).startswith(PLACES[org.name][1] + ":")
        assert t.gateway_url(org).startswith(f"https://{PLACES[org.name][1]}:")
    for org in t.member_orgs:
        start_services(t, org.name)
    # Each namespace listens on its own address only: nothing on a loopback another process could have used.
    for place, (ns, address) in PLACES.items():
        bound = listeners(ns)
        assert bound and bound <= {address}, (place, bound)

    http = {o.name: GatewayHttp(GatewaySettings.load(t, o.name)) for o in t.member_orgs}
    hospital, clinic, insurer = http["HospitalOrg"], http["ClinicOrg"], http["InsurerOrg"]
    # A bundle written at the hospital ...
    gen = synthetic.Synthetic.seeded(None)
    mpi = gen.mpi_value()
    r = hospital.post("", gen.transaction(3, mpi))
    assert r.status_code == 200, r.text
    patient = r.json()["entry"][0]["response"]["location"].split("/")[1]
    # ... shared with the clinic under the patient's consent (gateway to gateway, across namespaces) ...
    assert hospital.post("/Consent", synthetic.consent(patient, "ClinicMSP")).status_code == 201
    shared = clinic.get(f"/Patient/$everything?identifier={synthetic.MPI_SYSTEM}|{mpi}&purpose=TREAT")
    assert shared.status_code == 200, shared.text
    assert any(e["fullUrl"].startswith(hospital.settings.url) for e in shared.json()["entry"])
    # ... and a claim filed, adjudicated by the insurer's workers, answered back at the hospital.
    assert insurer.post("/Coverage", synthetic.coverage(mpi, "InsurerMSP", "2026-01-01", "2027-12-31")).status_code
    claim = synthetic.claim(patient, "InsurerMSP", [("99213", 1, "100.00")], time.strftime("%Y-%m-%d"), "C/1")
    filed = hospital.post("/Claim", claim)
    assert filed.status_code == 201, filed.text
    local_id = filed.json()["id"]
    got = wait_for(lambda: hospital.get(f"/ClaimResponse/{local_id}").status_code == 200, 120, "the ClaimResponse")
    assert got and claim_key(filed.json())
    response = hospital.get(f"/ClaimResponse/{local_id}").json()
    log.info("claim across namespaces: %s", json.dumps(response.get("disposition")))
    assert response["outcome"] == "complete"
    for h in http.values():
        h.http.close()
