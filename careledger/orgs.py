"""`careledger org add` and `careledger org leave`: every step of a join or a leave run locally, each party acting
from its own home in this run folder (for demos and tests; docs/OPERATIONS.md shows the same steps run by separate
operators). A new org's gateway, and its listener and worker if it is on `claims`, are started when the others run.
"""

from __future__ import annotations

import click

from consortium import supervision
from consortium import topology as topo
from gateway import cli as gateway_cli
from network import membership
from network.membership_cli import admin_for, org
from workers import cli as workers_cli


def start_services(t: topo.Topology, name: str) -> list[str]:
    """The org's gateway, and on claims its listener and worker, when this run folder's services run."""
    if not supervision.running(t):
        return [f"start {name}'s services with `careledger gateway start --org {name}` (and `worker start`)"]
    done = []
    if gateway_cli.start(t, name):
        done.append(f"started {name}'s gateway")
    if name in workers_cli.orgs_with_workers(t):
        workers_cli.start_worker(t, name)
        workers_cli.start_listener(t, name)
        done.append(f"started {name}'s listener and worker")
    return done


@org.command(name="add")
@click.argument("name")
@click.option("--kind", required=True, type=click.Choice(["provider", "insurer", "manufacturer"]))
@click.option("--channels", "channel_list", required=True, help="comma separated, e.g. providers,claims")
@click.option("--host", help="the address its nodes and gateway listen on (default: the consortium's host)")
def add_command(name: str, kind: str, channel_list: str, host: str | None) -> None:
    """Create an org and join it to channels: every party's step, locally; then start its services."""
    t = topo.load()
    channels = [c.strip() for c in channel_list.split(",") if c.strip()]
    _org, timings = membership.add_org(admin_for(t), name, kind, channels, host=host, progress=click.echo)
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in timings.phases.items())
    click.echo(f"joined in {timings.total:.1f}s ({phases})")
    for line in start_services(t, name):
        click.echo(line)


@org.command(name="leave")
@click.argument("channel")
@click.option("--org", "org_name", required=True)
def leave_command(channel: str, org_name: str) -> None:
    """Remove an org from a channel: every party's step, locally (propose, sign, submit, definition follows)."""
    block = membership.remove_from_channel(admin_for(topo.load()), org_name, channel, progress=click.echo)
    click.echo(f"{org_name} left {channel} at block {block}")
