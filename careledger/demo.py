"""`careledger demo`: the main job, end to end through the running gateways and workers, as the members' systems
would drive it: a hospital EHR sends a visit, the insurer knows the member's coverage, the patient consents to a
clinic seeing the record, the hospital bills the visit and hears back from the insurer.

Every call goes over HTTPS to an org's own gateway with a bearer token from that org's development token issuer.
"""

from __future__ import annotations

import datetime
import json
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any

import click
import httpx

from consortium import readiness
from consortium import topology as topo
from consortium.topology import Topology
from gateway.dev_issuer import dev_token
from gateway.settings import GatewaySettings
from records import synthetic


class Ehr:
    """One org's client system talking to its own gateway."""

    def __init__(self, t: Topology, org: str) -> None:
        s = GatewaySettings.load(t, org)
        token = dev_token(s, f"demo-{org}", "system/*.read system/*.write", 600)
        self.http = httpx.Client(
            base_url=f"{s.url}/fhir",
            verify=ssl.create_default_context(cafile=str(t.tls_ca_cert(s.org))),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
            timeout=30,
        )

    def post(self, path: str, body: Any) -> dict[str, Any]:
        r = self.http.post(path, content=json.dumps(body))
        if r.status_code >= 300:
            raise click.ClickException(f"POST {path or '/'} -> {r.status_code}: {r.text[:300]}")
        return dict(r.json())

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.http.get(path, params=params)


def step(title: str, action: Callable[[], str]) -> None:
    click.echo(f"  {title} ...", nl=False)
    started = time.monotonic()
    result = action()
    click.echo(f" {click.style('ok', fg='green')} ({time.monotonic() - started:.2f} s)\n      {result}")


def wait_for(get: Callable[[], httpx.Response], seconds: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        r = get()
        if r.status_code == 200:
            return dict(r.json())
        time.sleep(0.1)
    raise click.ClickException(f"no {what} after {seconds:.0f} s: are the workers running (careledger worker start)?")


@click.command()
@click.option("--resources", default=25, show_default=True, help="resources in the visit bundle")
def demo(resources: int) -> None:
    """Run the main job against the running network, gateways and workers."""
    t = topo.load()
    for org in ("HospitalOrg", "ClinicOrg", "InsurerOrg"):
        readiness.require_peer(t, t.org(org))
        settings = GatewaySettings.load(t, org)
        if not readiness.answers(settings.org.host, settings.port):
            raise click.ClickException(
                f"{org}'s gateway is not running at {settings.url}; run `careledger gateway start`"
            )
    hospital, clinic, insurer = Ehr(t, "HospitalOrg"), Ehr(t, "ClinicOrg"), Ehr(t, "InsurerOrg")
    gen = synthetic.Synthetic.seeded(None)
    mpi = gen.mpi_value()
    state: dict[str, Any] = {}
    click.echo("CareLedger main job")

    def visit() -> str:
        out = hospital.post("", gen.transaction(resources, mpi))
        state["patient"] = out["entry"][0]["response"]["location"].split("/")[1]
        state["first"] = out["entry"][1]["response"]["location"].split("/_history")[0]
        return f"{len(out['entry'])} resources stored encrypted at HospitalOrg, registered on chain in one transaction"

    def coverage() -> str:
        year = datetime.date.today().year
        cov = synthetic.coverage(mpi, "InsurerMSP", f"{year}-01-01", f"{year}-12-31")
        return f"Coverage/{insurer.post('/Coverage', cov)['id']} held by InsurerOrg (not on chain)"

    def consent_and_share() -> str:
        query = {"identifier": f"{synthetic.MPI_SYSTEM}|{mpi}", "purpose": "TREAT"}
        before = clinic.get("/Patient/$everything", **query).status_code
        grant = synthetic.consent(state["patient"], "ClinicMSP")
        hospital.post("/Consent", grant)
        after = clinic.get("/Patient/$everything", **query)
        n = len(after.json().get("entry", [])) if after.status_code == 200 else 0
        return f"ClinicOrg asks for the record: {before} before consent, {after.status_code} with {n} resources after"

    def claim() -> str:
        today = datetime.date.today().isoformat()
        lines = [("99213", 1, "125.00"), ("85025", 1, "18.00"), ("80053", 1, "32.00")]
        started = time.monotonic()
        submitted = hospital.post("/Claim", synthetic.claim(state["patient"], "InsurerMSP", lines, today, "Coverage/1"))
        claim_id = submitted["id"]
        response = wait_for(lambda: hospital.get(f"/ClaimResponse/{claim_id}"), 15, "ClaimResponse")
        took = time.monotonic() - started
        reasons = [
            ",".join(c["code"] for c in (i["adjudication"][1].get("reason") or {}).get("coding", [])) or "-"
            for i in response["item"]
        ]
        return (
            f"Claim/{claim_id}: {response['disposition']}; reasons per line {reasons};"
            f" ClaimResponse at HospitalOrg {took:.2f} s after the POST"
        )

    def audit() -> str:
        verify = hospital.get(f"{state['first']}/$verify").json()["parameter"][0]["valueBoolean"]
        events = hospital.get("/AuditEvent", patient=state["patient"]).json()["entry"]
        outcomes = ["permit" if e["resource"]["outcome"] == "0" else "deny" for e in events]
        return f"{state['first']} matches its on-chain digest: {verify}; on-chain access log: {outcomes}"

    try:
        step("1. the hospital EHR sends a visit (transaction bundle)", visit)
        step("2. the insurer records the member's coverage", coverage)
        step("3. the patient consents to ClinicOrg; the clinic reads the record", consent_and_share)
        step("4. the hospital bills the visit; the insurer's workers adjudicate and pay", claim)
        step("5. tamper check and access log", audit)
    except httpx.HTTPError as e:
        click.secho(f"\n  a gateway did not answer: {e}; run `careledger gateway start`", fg="red", err=True)
        sys.exit(1)
    click.echo("done")
    console_addresses(t)


def console_addresses(t: Topology) -> None:
    """Where each org's web console is, and how to log in to it."""
    click.echo("\nThe console of each org (log in with `careledger gateway token --org <org>`):")
    for org in t.member_orgs:
        click.echo(f"  {org.name:<12} {GatewaySettings.load(t, org.name).url}/console")
    click.echo(f"  the browser must trust the org's TLS CA, e.g. {t.tls_ca_cert(t.member_orgs[0])}")
