"""`careledger org ...`, `careledger channel ...`, `careledger chaincode ...`: membership, step by step.

Each command acts as one org, from that org's home, with only the files passed to it (see docs/OPERATIONS.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from consortium import topology as topo
from consortium.errors import NetworkError
from network import binaries, certs, membership, org_secrets
from network.admin import Admin


def admin_for(t: topo.Topology) -> Admin:
    fabric = binaries.cached()
    if fabric is None:
        raise NetworkError("the Fabric binaries are not built; run `careledger network build` first")
    return Admin(t, fabric)


# ----- careledger org ------------------------------------------------------------------------------------------------


@click.group()
def org() -> None:
    """Member orgs: create one, join it to a channel, list them, renew certificates."""


@org.command(name="create")
@click.argument("name")
@click.option("--kind", required=True, type=click.Choice(["provider", "insurer", "manufacturer"]))
@click.option("--msp-id", help="default: the name with MSP for Org, e.g. Insurer2MSP")
@click.option("--host", help="the address its nodes and gateway listen on (default: the consortium's host)")
@click.option("--netns", help="a Linux network namespace its processes run in")
@click.option(
    "--consortium-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="the consortium pseudonym key the members handed over out of band",
)
def create_command(
    name: str, kind: str, msp_id: str | None, host: str | None, netns: str | None, consortium_key: Path | None
) -> None:
    """Make a new org's keys in its own home and write its definition file (public: pass it to a member)."""
    t = topo.load()
    key = org_secrets.read_consortium_key(consortium_key) if consortium_key else None
    created = membership.create_org(
        t, admin_for(t).binaries, name, kind, msp_id=msp_id, host=host, netns=netns, consortium_key=key
    )
    for note in created.notes:
        click.echo(note)
    click.echo(str(created.definition_file))


@org.command(name="join")
@click.argument("channel")
@click.option("--org", "org_name", required=True, help="the joining org (its own home acts)")
def join_command(channel: str, org_name: str) -> None:
    """After the channel admitted the org: its peer joins from block 0, sets its anchor peer, installs and approves
    the chaincode definition in force."""
    t = topo.load()
    for line in membership.join_channel(admin_for(t), channel, org_name):
        click.echo(line)


@org.command(name="list")
@click.option("--json", "as_json", is_flag=True)
def list_command(as_json: bool) -> None:
    """The member orgs as the consortium definition (with its overlay) says: kind, host, channels, home."""
    rows = membership.orgs_summary(topo.load())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        channels = ", ".join(str(c) for c in r["channels"]) or "no channel"  # type: ignore[attr-defined]
        click.echo(f"  {r['name']:16} {r['msp_id']:14} {r['kind']:12} {r['host']:15} {channels}")


@org.command(name="renew")
@click.option("--org", "org_name", required=True, help="the org whose node and TLS certificates are re-issued")
@click.option("--new-keys", is_flag=True, help="new key pairs too (when a key may have leaked); default: same keys")
def renew_command(org_name: str, new_keys: bool) -> None:
    """Re-issue the org's node and TLS certificates from its own CAs, one node at a time, without stopping the
    consortium (orderers: the consenter set is updated on every channel first)."""
    for c in certs.renew(admin_for(topo.load()), org_name, progress=click.echo, new_keys=new_keys):
        click.echo(f"  {c.kind:22} {c.subject:42} until {c.not_after:%Y-%m-%d}")


# ----- careledger channel --------------------------------------------------------------------------------------------


@click.group()
def channel() -> None:
    """Channel configuration updates: propose, sign, submit."""


def _echo_status(status: object) -> None:
    from network import configupdate as cu

    assert isinstance(status, cu.Status)
    for line in status.lines():
        click.echo(line)


@channel.command(name="propose-join")
@click.argument("channel_name", metavar="CHANNEL")
@click.option("--org-definition", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--by", "by", help="the member that proposes (default: the channel's first member)")
def propose_join_command(channel_name: str, org_definition: Path, by: str | None) -> None:
    """Write a config update adding the org of a definition file to the channel; prints its path."""
    t = topo.load()
    proposer = by or _first_member(t, channel_name)
    path = membership.propose_join(admin_for(t), channel_name, org_definition, proposer)
    click.echo(str(path))


@channel.command(name="propose-leave")
@click.argument("channel_name", metavar="CHANNEL")
@click.option("--org", "org_name", required=True, help="the org that leaves")
@click.option("--by", "by", help="the member that proposes (default: the first other member)")
def propose_leave_command(channel_name: str, org_name: str, by: str | None) -> None:
    """Write a config update removing an org from the channel; prints its path."""
    t = topo.load()
    proposer = by or next(o.name for o in t.channels.get(channel_name, []) if o.name != org_name)
    click.echo(str(membership.propose_leave(admin_for(t), channel_name, org_name, proposer)))


@channel.command(name="sign")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--org", "org_name", required=True, help="the member whose admin signs (from its home)")
def sign_command(file: Path, org_name: str) -> None:
    """Add the org admin's signature to a config update; shows what is still missing."""
    _echo_status(membership.sign(admin_for(topo.load()), file, org_name))


@channel.command(name="status")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--org", "org_name", required=True, help="a member, to read the channel's current config")
@click.option("--json", "as_json", is_flag=True)
def status_command(file: Path, org_name: str, as_json: bool) -> None:
    """What a config update changes, who signed it, whose signatures are missing."""
    st = membership.check(admin_for(topo.load()), file, org_name)
    if as_json:
        click.echo(membership.as_json(st))
    else:
        _echo_status(st)


@channel.command(name="submit")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--org", "org_name", help="the member that submits (default: the first that signed)")
def submit_command(file: Path, org_name: str | None) -> None:
    """Send a config update once its signatures meet the channel's policy; otherwise say whose are missing."""
    st = membership.submit(admin_for(topo.load()), file, org_name)
    _echo_status(st)
    click.echo("submitted; the channel's config block is in")


@channel.command(name="follow")
@click.argument("channel_name", metavar="CHANNEL")
@click.option("--org", "org_name", required=True, help="a member, to read the channel's config")
def follow_command(channel_name: str, org_name: str) -> None:
    """Write the channel's membership, as its config says now, into the consortium definition (the overlay)."""
    t = topo.load()
    members = membership.follow_channel(admin_for(t), t.org(org_name), channel_name)
    click.echo(f"{channel_name}: {', '.join(members)}")


def _first_member(t: topo.Topology, channel_name: str) -> str:
    members = t.channels.get(channel_name)
    if not members:
        raise NetworkError(f"there is no channel {channel_name!r}; the channels are {', '.join(t.channels)}")
    return members[0].name


# ----- careledger chaincode ------------------------------------------------------------------------------------------


@click.group()
def chaincode() -> None:
    """The chaincode definition on each channel, which follows membership."""


@chaincode.command(name="status")
@click.argument("channel_name", metavar="CHANNEL")
@click.option("--org", "org_name", help="a member, whose peer is asked (default: the channel's first member)")
def cc_status_command(channel_name: str, org_name: str | None) -> None:
    """The definition in force, the one membership calls for, and who approved it."""
    t = topo.load()
    out = membership.chaincode_status(admin_for(t), channel_name, org_name or _first_member(t, channel_name))
    click.echo(json.dumps(out, indent=2))


@chaincode.command(name="approve")
@click.argument("channel_name", metavar="CHANNEL")
@click.option("--org", "org_name", required=True, help="the member that approves (from its home)")
def approve_command(channel_name: str, org_name: str) -> None:
    """Approve the definition the channel's members call for (next sequence), for this org."""
    click.echo(membership.approve_chaincode(admin_for(topo.load()), channel_name, org_name))


@chaincode.command(name="commit")
@click.argument("channel_name", metavar="CHANNEL")
@click.option("--org", "org_name", help="the member that commits (default: the channel's first member)")
def commit_command(channel_name: str, org_name: str | None) -> None:
    """Commit the definition once a majority of members approved it; otherwise say who has not."""
    t = topo.load()
    click.echo(membership.commit_chaincode(admin_for(t), channel_name, org_name or _first_member(t, channel_name)))
