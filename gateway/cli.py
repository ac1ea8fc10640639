"""`careledger gateway ...`: run a member org's FHIR gateway, in the foreground or in the background."""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request

import click

from consortium import logs, readiness
from consortium import topology as topo
from consortium.errors import NetworkError
from consortium.processes import ensure_port_free
from consortium.supervision import Program, Supervised, program_env
from consortium.topology import Topology
from gateway.dev_issuer import dev_token
from gateway.settings import GatewaySettings

MEMBER_ORGS_HELP = "member org name, e.g. HospitalOrg (repeatable; default: every member org)"


def process(topology: Topology, org: str) -> Supervised:
    """The org's gateway as a program under supervisord, which restarts it if it dies."""
    return Supervised(topology, f"gateway-{org}")


def healthy(settings: GatewaySettings) -> bool:
    ctx = ssl.create_default_context(cafile=str(settings.topology.tls_ca_cert(settings.org)))
    try:
        with urllib.request.urlopen(f"{settings.url}/fhir/metadata", context=ctx, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def start_timeout() -> float:
    """How long a gateway may take to answer after it starts: it imports the FHIR models first, which takes tens
    of seconds on a loaded machine (CARELEDGER_GATEWAY_START_TIMEOUT, seconds; default 30)."""
    return float(os.environ.get("CARELEDGER_GATEWAY_START_TIMEOUT") or 30)


def start(topology: Topology, org: str) -> bool:
    """Start the org's gateway in the background unless it runs; wait until it answers. True when started."""
    settings = GatewaySettings.load(topology, org)
    proc = process(topology, org)
    if proc.running():
        return False
    readiness.require_peer(topology, settings.org)
    ensure_port_free(proc.name, settings.org.host, settings.port, wait=5)
    argv = [sys.executable, "-m", "careledger.cli", "gateway", "serve", "--org", org]
    proc.start(Program(proc.name, argv, program_env(topology), topo.REPO_ROOT))
    try:
        proc.wait_until(lambda: healthy(settings), f"answering on {settings.url}", timeout=start_timeout())
    except NetworkError:
        proc.stop()  # rather than have supervisord retry a gateway that cannot start
        raise
    return True


def orgs_with_gateways(topology: Topology) -> list[str]:
    return [o.name for o in topology.member_orgs]


@click.group()
def gateway() -> None:
    """Each member org's FHIR gateway (HTTPS; EHRs use bearer tokens, member gateways mutual TLS)."""


@gateway.command(name="serve")
@click.option("--org", required=True, help="member org name, e.g. HospitalOrg")
def serve_command(org: str) -> None:
    """Run the org's gateway in the foreground (logs: JSON lines on stderr)."""
    logs.configure()
    settings = GatewaySettings.load(topo.load(), org)
    readiness.require_peer(settings.topology, settings.org)
    from gateway.serve import run  # the web stack loads only for the command that runs it

    run(settings)


@gateway.command(name="start")
@click.option("--org", "orgs", multiple=True, help=MEMBER_ORGS_HELP)
def start_command(orgs: tuple[str, ...]) -> None:
    """Start gateways in the background under supervisord, which restarts one that dies (logs in
    run/logs/gateway-<org>.log); safe to run again."""
    t = topo.load()
    for org in orgs or orgs_with_gateways(t):
        try:
            started = start(t, org)
        except NetworkError as e:
            click.secho(f"gateway {org} failed: {e}", fg="red", err=True)
            sys.exit(1)
        settings = GatewaySettings.load(t, org)
        click.echo(f"gateway {org}: {'started' if started else 'running'} at {settings.url}/fhir")


@gateway.command(name="stop")
@click.option("--org", "orgs", multiple=True, help=MEMBER_ORGS_HELP)
def stop_command(orgs: tuple[str, ...]) -> None:
    """Stop gateways started with `start`."""
    t = topo.load()
    for org in orgs or orgs_with_gateways(t):
        if process(t, org).stop():
            click.echo(f"stopped gateway {org}")


@gateway.command(name="token")
@click.option("--org", required=True)
@click.option("--scope", default="system/*.read system/*.write", show_default=True)
@click.option("--subject", default="ehr-dev", show_default=True)
@click.option("--ttl", default=3600, show_default=True, help="seconds")
def token_command(org: str, scope: str, subject: str, ttl: int) -> None:
    """Print a bearer token from the org's development token issuer."""
    click.echo(dev_token(GatewaySettings.load(topo.load(), org), subject, scope, ttl))
