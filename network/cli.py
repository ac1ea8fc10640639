"""`careledger network ...`: bring the consortium up, inspect it, take it down."""

from __future__ import annotations

import datetime
import json
import sys

import click

from consortium import readiness
from consortium import topology as topo
from consortium.errors import NetworkError
from network import binaries, certs, control, probe
from network.admin import Admin


@click.group()
def network() -> None:
    """The Fabric consortium on this machine (orderers, peers, chaincode, redis)."""


@network.command()
def up() -> None:
    """Create or resume the whole network; safe to run again."""
    t = topo.load()
    click.echo(f"CareLedger network in {t.home} (ports from {t.port_base})")
    try:
        control.up(t, progress=click.echo)
    except NetworkError as e:
        click.secho(f"network up failed: {e}", fg="red", err=True)
        sys.exit(1)


@network.command()
def build() -> None:
    """Build (or find cached) Fabric binaries at the pinned version."""
    try:
        fabric = binaries.ensure(click.echo)
    except NetworkError as e:
        click.secho(str(e), fg="red", err=True)
        sys.exit(1)
    click.echo(f"Fabric binaries in {fabric.bin_dir}")


@network.command()
def check() -> None:
    """Write a probe transaction on every channel and read it back from every member peer."""
    t = topo.load()
    for org in t.member_orgs:
        readiness.require_peer(t, org)
    fabric = binaries.cached()
    if fabric is None:
        click.secho("Fabric binaries are not built; run `careledger network up` first", fg="red", err=True)
        sys.exit(1)
    try:
        results = probe.check(Admin(t, fabric))
    except NetworkError as e:
        click.secho(f"check failed: {e}", fg="red", err=True)
        sys.exit(1)
    ok = True
    for r in results:
        seen = ", ".join(f"{peer} {'ok' if good else 'MISSING'}" for peer, good in r.readers.items())
        click.echo(f"  {r.channel:10} written by {r.writer} in {r.commit_seconds:.2f}s; read back: {seen}")
        ok = ok and all(r.readers.values())
    if not ok:
        sys.exit(1)


@network.command()
@click.option("--json", "as_json", is_flag=True, help="Print the stable JSON form.")
def status(as_json: bool) -> None:
    """Health of every node, block heights per channel and peer, committed chaincode."""
    t = topo.load()
    state = control.status(t)
    if as_json:
        click.echo(json.dumps(state, indent=2))
        return
    for node in state["nodes"]:
        mark = click.style("healthy", fg="green") if node["healthy"] else click.style("DOWN", fg="red")
        click.echo(f"  {node['kind']:8} {node['name']:18} {node['org']:12} {mark}")
    for name, ch in state["channels"].items():
        heights = ", ".join(f"{p}={h if h is not None else '?'}" for p, h in ch["heights"].items())
        ccs = ", ".join(f"{d['name']} v{d['version']} seq {d['sequence']}" for d in ch["chaincodes"]) or "none"
        click.echo(f"  channel {name:10} members {', '.join(ch['members'])}")
        click.echo(f"          heights {heights}; chaincode {ccs}")
    for svc in state["services"]:
        good = svc["state"] == "RUNNING" and svc["live"]
        mark = click.style("alive", fg="green") if good else click.style(f"{svc['state']}, not alive", fg="red")
        pid = f"pid {svc['pid']}" if svc["pid"] else ""
        click.echo(f"  {svc['kind']:8} {svc['org']:18} {pid:12} {mark}")
    if not state["services"]:
        click.echo("  no gateways or workers started (`careledger gateway start`, `careledger worker start`)")
    down = [n["name"] for n in state["nodes"] if not n["healthy"]]
    dead = [s["name"] for s in state["services"] if not (s["state"] == "RUNNING" and s["live"])]
    if len(down) == len(state["nodes"]):
        click.secho(f"the network is not running; {readiness.UP}", fg="red", err=True)
    elif down:
        click.secho(
            f"{len(down)} node(s) down: {', '.join(down)}; `careledger network up` restarts them", fg="red", err=True
        )
    if dead:
        click.secho(f"not alive: {', '.join(dead)}; supervisord restarts what exits", fg="red", err=True)
    if down or dead:
        sys.exit(1)


@network.command()
@click.option("--org", "org_names", multiple=True, help="only this org's (repeatable; default: every org here)")
@click.option("--warn-days", default=certs.WARN_DAYS, show_default=True, help="warn when fewer days are left")
@click.option("--json", "as_json", is_flag=True, help="Print the stable JSON form.")
def certs_command(org_names: tuple[str, ...], warn_days: int, as_json: bool) -> None:
    """Every certificate (CA, node, TLS, admin, client, gateway, chaincode server) with its expiry; warns about
    those that expire within --warn-days (exit status 2 when any does)."""
    t = topo.load()
    only = [t.any_org(n) for n in org_names] or None
    found = certs.inventory(t, only)
    now = datetime.datetime.now(datetime.UTC)
    expiring = [c for c in found if c.expiring(warn_days, now)]
    if as_json:
        rows = [
            {
                "org": c.org,
                "kind": c.kind,
                "subject": c.subject,
                "path": str(c.path),
                "not_after": c.not_after.isoformat(),
                "days_left": round(c.days_left(now), 1),
                "expiring": c.expiring(warn_days, now),
            }
            for c in found
        ]
        click.echo(json.dumps(rows, indent=2))
    else:
        for c in found:
            line = f"  {c.org:14} {c.kind:22} {c.subject:42} {c.not_after:%Y-%m-%d}  {c.days_left(now):7.0f} days"
            click.echo(click.style(line + "  EXPIRES SOON", fg="red") if c in expiring else line)
    if expiring:
        click.secho(
            f"{len(expiring)} certificate(s) expire within {warn_days} days; renew node and TLS certificates with"
            " `careledger org renew --org <Org>`",
            fg="red",
            err=True,
        )
        sys.exit(2)


network.add_command(certs_command, name="certs")


@network.command()
@click.option("--purge", is_flag=True, help="Also delete ledgers, crypto material and logs.")
def down(purge: bool) -> None:
    """Stop everything `up` started."""
    control.down(topo.load(), purge=purge, progress=click.echo)
