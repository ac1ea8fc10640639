"""The web console in a real browser (Debian's headless chromium, driven by Playwright) against the running gateways
of the test network: each org logs in and sees only its part, a new block appears without a reload, a claim's
timeline matches the chain. Every page visited is saved as a screenshot in run/test/screenshots. Logging in with
the org's TLS client certificate, and the scopes a token needs per section, are checked over plain HTTPS."""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import ssl
import time
from collections.abc import Callable, Iterator
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest

from careledger import demo
from consortium import topology as topo
from fabric_gateway import Gateway
from fabric_gateway.blocks import processed_transaction
from gateway import cli as gateway_cli
from gateway.console.auth import COOKIE
from gateway.dev_issuer import dev_token
from records import synthetic
from tests.conftest import GatewayHttp, claim_key

pytestmark = pytest.mark.network
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = topo.REPO_ROOT / "run" / "test" / "screenshots"
TODAY = datetime.date.today().isoformat()
WAIT_S = 30.0


def wait_for(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: scripts/bootstrap installs Debian's chromium")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


class Console:
    """One org's console in its own browser context (own cookies), logged in with a token from its issuer."""

    def __init__(self, browser: Any, gw: GatewayHttp) -> None:
        self.gw = gw
        self.base = gw.settings.url
        self.context = browser.new_context(ignore_https_errors=True, viewport={"width": 1366, "height": 900})
        self.page = self.context.new_page()
        self.org = gw.settings.org.name

    def login(self) -> None:
        self.page.goto(f"{self.base}/console/network")
        assert self.page.url.endswith("/console/login")  # not logged in: the login page
        self.page.fill("#token", self.gw.token())
        self.page.click("button[type=submit]")
        self.page.wait_for_url("**/console/network")

    def go(self, path: str) -> Any:
        self.page.goto(f"{self.base}{path}")
        self.page.wait_for_load_state("networkidle") if "/live" not in path else None
        return self.page

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(SHOTS / f"{self.org}-{name}.png"), full_page=True)

    def texts(self, selector: str) -> list[str]:
        return [str(t).strip() for t in self.page.locator(selector).all_inner_texts()]


@pytest.fixture(scope="module")
def consoles(
    browser: Any, gateway_clients: dict[str, GatewayHttp], network: topo.Topology
) -> Iterator[dict[str, Console]]:
    for org in gateway_clients:
        gateway_cli.start(network, org)
    opened = {org: Console(browser, gw) for org, gw in gateway_clients.items()}
    for c in opened.values():
        c.login()
    yield opened
    for c in opened.values():
        c.context.close()


def file_claim(provider: GatewayHttp, insurer: GatewayHttp, code: str) -> str:
    gen = synthetic.Synthetic.seeded(None)
    mpi = gen.mpi_value()
    r = provider.post("", gen.transaction(1, mpi))
    assert r.status_code == 200, r.text
    patient_id = r.json()["entry"][0]["response"]["location"].split("/")[1]
    coverage = synthetic.coverage(mpi, "InsurerMSP", "2026-01-01", "2027-12-31")
    assert insurer.post("/Coverage", coverage).status_code == 201
    r = provider.post("/Claim", synthetic.claim(patient_id, "InsurerMSP", [(code, 1, "120.00")], TODAY, "Coverage/t"))
    assert r.status_code == 201, r.text
    return claim_key(r.json())


def adjudicate(insurer: Gateway, claim_id: str) -> None:
    """Decide the claim as the insurer's worker would (unless a running worker did already)."""
    contract = insurer.network("claims").contract("careledger")
    lines = json.loads(contract.evaluate("Claims:Lines", args=[claim_id]))["lines"]
    decision = {
        "lines": [
            {"sequence": ln["sequence"], "outcome": "denied", "approvedCents": 0, "reasons": ["197"]} for ln in lines
        ],
        "retentionSeconds": 3600,
    }
    if json.loads(contract.evaluate("Claims:Get", args=[claim_id]))["status"] == "submitted":
        contract.submit("Claims:Adjudicate", args=[claim_id], transient={"adjudication": json.dumps(decision).encode()})


MENU = {  # the console's menu, per org: every section its kind has
    "HospitalOrg": ["Network", "Claims", "Consent & audit", "Supply"],
    "ClinicOrg": ["Network", "Claims", "Consent & audit", "Supply"],
    "InsurerOrg": ["Network", "Claims"],
    "PharmaOrg": ["Network", "Supply"],
}


def test_each_org_sees_its_own_channels_and_sections(consoles: dict[str, Console], network: topo.Topology) -> None:
    for org, c in consoles.items():
        page = c.go("/console/network")
        assert c.texts("[data-testid=org]")[0].startswith(org)
        assert c.texts("header nav a") == MENU[org]
        channels = sorted(page.locator("[data-testid=channels] tr[data-channel]").evaluate_all(
            "rows => rows.map(r => r.dataset.channel)"
        ))  # fmt: skip
        assert channels == sorted(network.channels_of(network.org(org)))
        page.wait_for_selector("[data-testid=health] [data-testid=node-status]")
        assert c.texts("[data-testid=node-status]") == ["OK"]
        page.wait_for_selector("td.heights .peer b")
        assert page.locator("[data-testid=certificates] tbody tr").count() >= 4
        assert "None pending" in c.texts("[data-testid=no-updates]")[0]
        c.shot("network")
    insurer = consoles["InsurerOrg"]
    assert "providers" not in insurer.texts("[data-testid=channels]")[0]
    refused = insurer.go("/console/network/providers")
    assert "not a member" in refused.content()
    assert insurer.go("/console/consent").locator("[data-status='404']").count() == 1


def test_claims_queue_shows_only_the_orgs_claims(
    consoles: dict[str, Console], gateway_clients: dict[str, GatewayHttp], gateway_as: Callable[..., Gateway]
) -> None:
    hospital_claim = file_claim(gateway_clients["HospitalOrg"], gateway_clients["InsurerOrg"], "99213")
    clinic_claim = file_claim(gateway_clients["ClinicOrg"], gateway_clients["InsurerOrg"], "99214")
    adjudicate(gateway_as("InsurerOrg"), hospital_claim)

    def listed(c: Console, claim_id: str) -> bool:
        c.go("/console/claims")
        c.page.wait_for_selector("[data-testid=queue] tbody tr")
        return c.page.locator(f"tr[data-claim='{claim_id}']").count() == 1

    hospital, clinic, insurer = consoles["HospitalOrg"], consoles["ClinicOrg"], consoles["InsurerOrg"]
    wait_for(lambda: listed(hospital, hospital_claim), "the hospital's claim in its queue")
    assert not listed(hospital, clinic_claim)
    wait_for(lambda: listed(clinic, clinic_claim), "the clinic's claim in its queue")
    assert not listed(clinic, hospital_claim)
    wait_for(lambda: listed(insurer, hospital_claim) and listed(insurer, clinic_claim), "both claims at the insurer")
    insurer.page.wait_for_function("document.body.dataset.chartsReady === 'true'")
    insurer.shot("claims")
    wait_for(lambda: (listed(hospital, hospital_claim) and hospital.texts("[data-state=denied] b") == ["1"]) or None,
             "the hospital's denied count")  # fmt: skip
    hospital.page.wait_for_function("document.body.dataset.chartsReady === 'true'")
    hospital.shot("claims")
    clinic.shot("claims")
    refused = clinic.go(f"/console/claims/{hospital_claim}")
    assert refused.locator("[data-status='404']").count() == 1


def test_a_claims_timeline_matches_the_chain(
    consoles: dict[str, Console], gateway_clients: dict[str, GatewayHttp], gateway_as: Callable[..., Gateway]
) -> None:
    claim_id = file_claim(gateway_clients["HospitalOrg"], gateway_clients["InsurerOrg"], "99215")
    insurer = gateway_as("InsurerOrg")
    adjudicate(insurer, claim_id)
    hospital = consoles["HospitalOrg"]

    def timeline() -> list[tuple[str, str]] | None:
        page = hospital.go(f"/console/claims/{claim_id}")
        items = page.locator("[data-testid=timeline] li[data-tx]").evaluate_all(
            "items => items.map(i => [i.dataset.tx, i.dataset.event])"
        )
        return items if any(e.startswith("Claims.Adjudicated") for _, e in items) else None

    shown = wait_for(timeline, "the adjudication in the claim's timeline")
    chain = gateway_as("HospitalOrg")
    qscc = chain.network("claims").contract("qscc")
    for tx_id, event in shown:
        tx = processed_transaction(qscc.evaluate("GetTransactionByID", args=["claims", tx_id]))
        assert tx.valid and event in tx.events, (tx_id, event, tx)
    assert shown[0][1].startswith("Claims.Submitted")
    on_chain = json.loads(chain.network("claims").contract("careledger").evaluate("Claims:Get", args=[claim_id]))
    assert hospital.texts("[data-testid=claim-status]")[0].startswith(on_chain["status"])
    assert on_chain["txId"] == shown[-1][0]
    assert hospital.texts("[data-testid=lines] tbody td:nth-child(4)") == ["197"]
    hospital.shot("claim")
    hospital.page.click(f"[data-testid=timeline] li[data-tx='{shown[0][0]}'] a[href*='/tx/']")
    hospital.page.wait_for_selector("[data-testid=tx-function]")
    assert hospital.texts("[data-testid=tx-creator]") == ["HospitalMSP"]
    assert hospital.texts("[data-testid=tx-validation]") == ["VALID"]
    assert hospital.texts("[data-testid=tx-function]")[0].startswith("Claims:Submit")
    assert "120" not in hospital.texts("[data-testid=tx]")[0]  # no argument (the claim's amounts) is shown
    hospital.shot("transaction")


def test_a_new_block_appears_without_reload(consoles: dict[str, Console], gateway_as: Callable[..., Gateway]) -> None:
    pharma = consoles["PharmaOrg"]
    page = pharma.go("/console/network/pharma")
    page.wait_for_selector("[data-testid=blocks] tr.block-row")
    page.wait_for_selector("[data-testid=chaincode] [data-approval]")
    height = int(pharma.texts("[data-testid=height]")[0])
    page.evaluate("window.__marker = 'not reloaded'")
    # The page streams blocks from the height it showed on: a block committed now arrives however soon it connects.
    contract = gateway_as("PharmaOrg").network("pharma").contract("careledger")
    block = contract.submit("Probe:Write", args=[f"console-{time.time_ns()}", "live"]).status.block_number
    assert block >= height
    row = page.wait_for_selector(f"#live-blocks tr[data-block='{block}']", timeout=WAIT_S * 1000)
    assert row is not None and "VALID" in row.inner_text() and "Probe.Written" in row.inner_text()
    assert page.evaluate("window.__marker") == "not reloaded"
    approvals = sorted(page.locator("[data-approval]").evaluate_all("xs => xs.map(x => x.dataset.approval)"))
    assert approvals == ["ClinicMSP", "HospitalMSP", "PharmaMSP"]
    pharma.shot("channel")
    page.click(f"#live-blocks tr[data-block='{block}'] a")
    page.wait_for_selector("[data-testid=transactions] tr[data-tx]")
    assert "Probe:Write" in pharma.texts("[data-testid=transactions] tbody")[0]
    pharma.shot("block")


def test_consent_timeline_and_access_log(consoles: dict[str, Console], gateway_clients: dict[str, GatewayHttp]) -> None:
    hospital_api, clinic_api = gateway_clients["HospitalOrg"], gateway_clients["ClinicOrg"]
    gen = synthetic.Synthetic.seeded(None)
    mpi = gen.mpi_value()
    r = hospital_api.post("", gen.transaction(1, mpi))
    patient_id = r.json()["entry"][0]["response"]["location"].split("/")[1]
    granted = hospital_api.post("/Consent", synthetic.consent(patient_id, "ClinicMSP"))
    assert granted.status_code == 201, granted.text
    read = clinic_api.get(f"/Patient/$everything?identifier={synthetic.MPI_SYSTEM}|{mpi}&purpose=TREAT")
    assert read.status_code == 200, read.text  # the hospital decided on the consent and logged a permit
    hospital = consoles["HospitalOrg"]

    def shown() -> bool:
        hospital.go(f"/console/consent?patient={patient_id}")
        return hospital.page.locator("[data-testid=consents] tr.consent-granted").count() == 1

    wait_for(shown, "the grant in the consent timeline")
    hospital.page.wait_for_selector("[data-testid=audit] tbody tr.access-permit")
    assert "ClinicMSP" in hospital.texts("[data-testid=audit] tr.access-permit")[0]
    assert "ClinicMSP" in hospital.texts("[data-testid=consents] tr.consent-granted")[0]
    hospital.shot("consent")
    other = consoles["ClinicOrg"].go(f"/console/consent?patient={patient_id}")
    assert other.locator("[data-status='404']").count() == 1  # the clinic does not hold this patient


def test_a_packs_custody_path_and_flags(consoles: dict[str, Console], gateway_clients: dict[str, GatewayHttp]) -> None:
    pharma_api = gateway_clients["PharmaOrg"]
    serial, gtin = f"C{time.time_ns() % 10**12}", "09506000134352"
    supply, h = f"{pharma_api.settings.url}/supply", pharma_api.headers()
    pack = {"gtin": gtin, "serial": serial, "lot": f"L{serial}", "expiry": "2030-01-31"}
    for path, body in [
        ("/units", pack),
        (f"/units/{gtin}/{serial}/ship", {"to": "HospitalMSP"}),
        ("/recalls", {"gtin": gtin, "lot": pack["lot"], "reason": "QUALITY"}),
    ]:
        answer = pharma_api.http.post(f"{supply}{path}", json=body, headers=h)
        assert answer.status_code in (200, 201), answer.text
    for org in ("PharmaOrg", "HospitalOrg"):
        c = consoles[org]
        page = c.go(f"/console/supply?gtin={gtin}&serial={serial}")
        steps = page.locator("[data-testid=custody] li").evaluate_all("xs => xs.map(x => x.dataset.step)")
        assert steps == ["commissioning", "shipping"]
        assert "recalled" in c.texts("[data-testid=flags]")[0]
        c.shot("supply")
    assert len(os.listdir(SHOTS)) >= 10


# ----- Logging in without a browser: the org's client certificate, and tokens of different scopes ------------------


def menu(html: str) -> list[str]:
    """The section links of a console page's menu (the header's nav)."""
    nav = re.search(r"<header>.*?<nav>(.*?)</nav>", html, re.S)
    assert nav is not None, html[:300]
    return [unescape(text).strip() for text in re.findall(r"<a [^>]*>(.*?)</a>", nav.group(1), re.S)]


def viewer_of(html: str) -> str:
    """Who the page says is logged in."""
    who = re.search(r'<span class="who">(.*?)</span>', html, re.S)
    assert who is not None, html[:300]
    return unescape(who.group(1)).strip()


def listed_claims(html: str) -> set[str]:
    return set(re.findall(r'<tr class="claim-row" data-claim="([^"]+)"', html))


def test_the_orgs_client_certificate_is_a_login_to_its_own_console_only(
    network: topo.Topology, gateways: dict[str, GatewayHttp], member_client: Callable[[str], httpx.Client]
) -> None:
    """Mutual TLS with the certificate the org's TLS CA issued (the one its gateway presents to other members) logs
    in to the org's console without a token: the viewer is the org itself, with every section of its kind and only
    its own channels; its claims queue lists the org's own claims and a claim between two other members is not
    found. Another member's certificate is no login at this org's console: the login page, nothing of the org."""
    channels: dict[str, list[str]] = {}
    for org, gw in gateways.items():
        page = member_client(org).get(f"{gw.settings.url}/console/network")
        assert page.status_code == 200, page.text[:500]
        assert viewer_of(page.text) == "client certificate"
        assert menu(page.text) == MENU[org]
        channels[org] = sorted(re.findall(r'<tr data-channel="([^"]+)"', page.text))
        assert channels[org] == sorted(network.channels_of(network.org(org)))
        for other in gateways:
            if other == org:
                continue
            for path in ("/console/network", "/console/claims", "/console/claims/queue"):
                refused = member_client(other).get(f"{gw.settings.url}{path}")
                assert (refused.status_code, refused.headers.get("location")) == (303, "/console/login"), (org, other)
    assert "providers" not in channels["InsurerOrg"] and "providers" in channels["HospitalOrg"]

    # Claims: the clinic's claim is filed first, so the hospital's index has passed it once it lists its own.
    hospital, insurer = gateways["HospitalOrg"], gateways["InsurerOrg"]
    clinic_claim = file_claim(gateways["ClinicOrg"], insurer, "99211")
    hospital_claim = file_claim(hospital, insurer, "99212")
    as_hospital, as_insurer = member_client("HospitalOrg"), member_client("InsurerOrg")

    def queue_of(client: httpx.Client, gw: GatewayHttp) -> set[str]:
        answer = client.get(f"{gw.settings.url}/console/claims/queue")
        assert answer.status_code == 200, answer.text[:500]
        return listed_claims(answer.text)

    def hospital_queue() -> set[str] | None:
        queue = queue_of(as_hospital, hospital)
        return queue if hospital_claim in queue else None

    assert clinic_claim not in wait_for(hospital_queue, "the hospital's claim in its queue")
    wait_for(lambda: {clinic_claim, hospital_claim} <= queue_of(as_insurer, insurer), "both claims at the insurer")
    assert as_hospital.get(f"{hospital.settings.url}/console/claims/{hospital_claim}").status_code == 200
    assert as_hospital.get(f"{hospital.settings.url}/console/claims/{clinic_claim}").status_code == 404


def test_a_section_needs_a_system_read_scope_on_its_type(gateways: dict[str, GatewayHttp]) -> None:
    """A token of the org's issuer opens the console, and each section only with a `system/` read scope on the
    section's FHIR type (the consent section also searches AuditEvent): without it the section is refused (403) and
    left out of the menu. A `patient/` scope, limited to one patient's compartment, opens no section: each shows
    every patient the org holds. The same holds for a token pasted into the login page (kept in a cookie)."""
    hospital = gateways["HospitalOrg"]
    base = f"{hospital.settings.url}/console"
    sections = {"Claims": "/claims", "Consent & audit": "/consent", "Supply": "/supply"}
    http = httpx.Client(verify=ssl.create_default_context(cafile=hospital.ca), timeout=30)

    def as_token(scope: str, patient: str = "") -> dict[str, str]:
        """A token with these scopes (and, given a patient, that patient as its launch context)."""
        if patient:
            return {"Authorization": f"Bearer {dev_token(hospital.settings, 'console-test', scope, patient=patient)}"}
        return {"Authorization": f"Bearer {dev_token(hospital.settings, 'console-test', scope)}"}

    def opens(headers: dict[str, str]) -> list[str]:
        """The sections the token opens; the menu offers exactly those."""
        network = http.get(f"{base}/network", headers=headers)
        assert network.status_code == 200, network.text[:500]
        opened = []
        for name, path in sections.items():
            status = http.get(f"{base}{path}", headers=headers).status_code
            assert status in (200, 403), (name, status)
            if status == 200:
                opened.append(name)
        assert menu(network.text) == ["Network", *opened]
        return opened

    assert opens(as_token("system/Patient.read")) == []
    assert opens(as_token("system/Claim.write")) == []  # write is not read
    assert opens(as_token("system/Claim.read")) == ["Claims"]
    assert opens(as_token("system/Consent.read")) == []  # the access log needs AuditEvent search too
    assert opens(as_token("system/Consent.read system/AuditEvent.read")) == ["Consent & audit"]
    assert opens(as_token("system/Medication.read")) == ["Supply"]
    assert opens(as_token("system/*.read")) == ["Claims", "Consent & audit", "Supply"]
    patient_scopes = "patient/Claim.read patient/Consent.read patient/AuditEvent.read patient/Medication.read"
    assert opens(as_token(patient_scopes, patient="console-test-patient")) == []
    refused = http.get(f"{base}/claims/queue", headers=as_token(patient_scopes, patient="console-test-patient"))
    assert refused.status_code == 403

    token = dev_token(hospital.settings, "console-test", "system/Patient.read")
    login = http.post(f"{base}/login", data={"token": token})
    assert (login.status_code, login.headers.get("location")) == (303, "/console/"), login.text[:500]
    assert login.cookies.get(COOKIE) == token
    assert opens({"Cookie": f"{COOKIE}={token}"}) == []
    full = dev_token(hospital.settings, "console-test", "system/Claim.read")
    assert http.post(f"{base}/login", data={"token": full}).status_code == 303
    assert opens({"Cookie": f"{COOKIE}={full}"}) == ["Claims"]
    http.close()


def test_the_demo_prints_each_orgs_console_address(
    network: topo.Topology, gateways: dict[str, GatewayHttp], capsys: pytest.CaptureFixture[str]
) -> None:
    """`careledger demo` ends with the console address of every member org: each printed address answers with that
    org's console (its login page) over TLS that the printed CA file vouches for."""
    demo.console_addresses(network)
    printed = capsys.readouterr().out
    addresses = dict(re.findall(r"^\s+(\w+)\s+(https://\S+/console)$", printed, re.M))
    assert sorted(addresses) == sorted(gateways)
    ca = re.search(r"trust the org's TLS CA, e\.g\. (\S+)$", printed, re.M)
    assert ca is not None and Path(ca.group(1)).exists()
    for org, url in addresses.items():
        trusted = ssl.create_default_context(cafile=str(network.tls_ca_cert(network.org(org))))
        with httpx.Client(verify=trusted, timeout=30) as http:
            page = http.get(f"{url}/login")
        assert page.status_code == 200 and f"{org} console" in page.text, (org, page.status_code)
