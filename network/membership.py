"""Consortium membership, step by step, as separate parties do it.

Each step acts as ONE org, from that org's home, with only the public files handed to it:

1. `create_org`      the new org makes its keys and publishes its definition (orgdef.py)
2. `propose_join`    a member fetches the channel's config, adds the org, writes the config-update envelope
3. `sign`            each member's admin signs the envelope, in its own home
4. `submit`          a member sends it once the channel's modification policy is met (else: whose signatures lack)
5. `join_channel`    the new org's peer fetches block 0 from an orderer, joins, has its anchor peer set, installs
                     its own chaincode package and approves the definition in force
6. `approve_chaincode` / `commit_chaincode`   the definition follows membership (collections, contracts' config,
                     endorsement policy): each member approves the next sequence, one commits it

`propose_leave` is step 2 for an org leaving; the same sign and submit follow. `add_org` and `remove_from_channel`
run every step locally (every party's home is in this run folder), for demos and tests.
"""

from __future__ import annotations

import datetime
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from fabric_protos.common import common_pb2, configtx_pb2

from consortium import readiness
from consortium.errors import CommandFailed, NetworkError
from consortium.secrets import replace_secret
from consortium.topology import REPO_ROOT, Org, Topology
from fabric_gateway import load_msp
from network import chaincode as cc
from network import channels, crypto, endorsers, nodes, org_secrets, orgdef, postgres_server, redis_server
from network import configupdate as cu
from network.admin import Admin
from network.binaries import FabricBinaries

Progress = Callable[[str], None]
SUBMIT_WAIT_S = 120.0
RESEND_AFTER_S = 15.0  # no config block this long after the orderers took an update: send it again


class MembershipError(NetworkError):
    """A membership step that cannot be done as asked; the message says why and what to do."""


# ----- reading the channel as one org ---------------------------------------------------------------------------


def fetch_block(admin: Admin, org: Org, channel: str, which: str, out: Path, timeout: float = 30.0) -> Path:
    """A block from an orderer, as the org's admin ("config", "newest", "oldest" or a number). An orderer that is
    restarting or catching up answers SERVICE_UNAVAILABLE for a while: ask the next one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    orderers = admin.topology.orderers
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        orderer = orderers[attempt % len(orderers)]
        args = ["channel", "fetch", which, str(out), "-c", channel, *admin.orderer_flags(org, orderer)]
        try:
            admin.peer(org, args, f"fetch block {which} of {channel} as {org.name}")
            return out
        except CommandFailed as e:
            transient = any(s in e.output for s in ("SERVICE_UNAVAILABLE", "connection refused", "deadline exceeded"))
            if not transient or time.monotonic() > deadline:
                raise
        attempt += 1
        time.sleep(0.2 if attempt % len(orderers) else 1.0)


def fetch_config(admin: Admin, org: Org, channel: str) -> configtx_pb2.Config:
    """The channel's current configuration, from an orderer, as the org (a member of the channel) sees it."""
    with tempfile.TemporaryDirectory(prefix="careledger-config-") as tmp:
        block = fetch_block(admin, org, channel, "config", Path(tmp) / "config.block")
        return cu.config_from_block(block.read_bytes())


def orderer_height(admin: Admin, org: Org, channel: str) -> int:
    """The channel's height at the ordering service, as the org can read it."""
    with tempfile.TemporaryDirectory(prefix="careledger-newest-") as tmp:
        block = fetch_block(admin, org, channel, "newest", Path(tmp) / "newest.block")
        return int(common_pb2.Block.FromString(block.read_bytes()).header.number) + 1


def _acting(topology: Topology, name: str) -> Org:
    return topology.any_org(name)


def _member_of(topology: Topology, org: Org, channel: str) -> None:
    if channel not in topology.channels:
        raise MembershipError(f"there is no channel {channel!r}; the channels are {', '.join(topology.channels)}")
    if org not in topology.channels[channel] and not org.is_orderer:
        members = ", ".join(o.name for o in topology.channels[channel])
        raise MembershipError(f"{org.name} is not a member of {channel} (its members: {members})")


# ----- 1. a new org ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Created:
    org: Org
    definition_file: Path
    notes: list[str]


def _worker_settings(topology: Topology, org: Org) -> dict[str, object]:
    """A new member's worker settings, from the founding members' development defaults: a provider's webhook; an
    insurer's adjudication rules with every provider known now in its network."""
    template = "InsurerOrg.yaml" if org.kind == "insurer" else "HospitalOrg.yaml"
    doc = yaml.safe_load((REPO_ROOT / "config" / "workers" / template).read_text()) or {}
    doc.setdefault("webhook", {})["secret"] = f"dev-{org.subdomain}-webhook-secret"
    if org.kind == "insurer" and "adjudication" in doc:
        doc["adjudication"]["network_providers"] = [o.msp_id for o in topology.member_orgs if o.kind == "provider"]
    return dict(doc)


def create_org(
    topology: Topology,
    binaries: FabricBinaries,
    name: str,
    kind: str,
    *,
    msp_id: str | None = None,
    subdomain: str | None = None,
    host: str | None = None,
    netns: str | None = None,
    consortium_key: bytes | None = None,
) -> Created:
    """The new org's home: its identities (cryptogen for it alone), its gateway's TLS pair and keys, its worker
    settings; then its definition, published. Running it again changes nothing."""
    if not orgdef.NAME_PATTERN.match(name):
        raise MembershipError(f"org name {name!r}: letters and digits, starting upper-case, ending in 'Org'")
    if kind not in orgdef.KINDS:
        raise MembershipError(f"--kind is one of {', '.join(orgdef.KINDS)}, not {kind!r}")
    stem = name.removesuffix("Org")
    spec = {
        "name": name,
        "msp_id": msp_id or f"{stem}MSP",
        "subdomain": subdomain or stem.lower(),
        "kind": kind,
        "host": host or topology.host,
    }
    if netns:
        spec["netns"] = netns
    if topology.has_org(name):
        existing = topology.any_org(name)
        if (existing.msp_id, existing.kind) != (spec["msp_id"], kind):
            raise MembershipError(f"{name} exists already as a {existing.kind} ({existing.msp_id})")
    else:
        for o in topology.all_orgs:
            if o.msp_id == spec["msp_id"] or o.subdomain == spec["subdomain"]:
                raise MembershipError(f"{o.name} already uses the MSP id or subdomain {name} would get")
        with topology.editing_overlay() as overlay:
            overlay.setdefault("orgs", []).append(spec)
    org = topology.org(name)
    notes: list[str] = []
    if crypto.ensure_org(topology, binaries, org):
        notes.append(f"made {org.name}'s identities in {topology.org_home(org)}")
    crypto.ensure_gateway_tls(topology, org)
    crypto.ensure_chaincode_tls(topology, org)
    org_secrets.ensure_org(topology, org)
    if consortium_key is not None:
        org_secrets.give_consortium_key(topology, org, consortium_key)
    elif not topology.consortium_key_file(org).exists():
        notes.append(
            f"{org.name} has no consortium pseudonym key yet: the members hand it over out of band; put it at"
            f" {topology.consortium_key_file(org)} (0600) before starting its gateway"
        )
    settings = topology.worker_config_file(org)
    if not settings.exists():
        replace_secret(settings, yaml.safe_dump(_worker_settings(topology, org), sort_keys=False).encode())
    path = orgdef.publish(topology, org)
    notes.append(f"published {org.name}'s definition: {path}")
    return Created(org, path, notes)


# ----- 2. proposals -----------------------------------------------------------------------------------------------


def _update_path(topology: Topology, channel: str, what: str) -> Path:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%f")
    return topology.updates_dir / f"{channel}-{what}-{stamp}.pb"


def _write_update(
    admin: Admin, channel: str, before: configtx_pb2.Config, after: configtx_pb2.Config, path: Path
) -> Path:
    raw = cu.compute_update(admin.binaries, channel, before, after)
    cu.UpdateFile(channel, configtx_pb2.ConfigUpdate.FromString(raw), raw, []).write(path)
    return path


def propose_join(admin: Admin, channel: str, definition_file: Path, by: str) -> Path:
    """As member `by`: the channel's config with the org of the definition file added (policies, MSP, anchor peer),
    as an unsigned config-update envelope. The definition becomes known here (consortium folder, overlay)."""
    t = admin.topology
    proposer = _acting(t, by)
    _member_of(t, proposer, channel)
    d = orgdef.load_file(definition_file)
    if d.kind not in orgdef.KINDS:
        raise MembershipError(f"{d.name} is a {d.kind} org; only providers, insurers and manufacturers join channels")
    orgdef.import_definition(t, d)
    before = fetch_config(admin, proposer, channel)
    return _write_update(admin, channel, before, cu.with_org(before, d), _update_path(t, channel, f"add-{d.name}"))


def propose_leave(admin: Admin, channel: str, org_name: str, by: str) -> Path:
    """As member `by`: the channel's config without the org, as an unsigned config-update envelope."""
    t = admin.topology
    proposer = _acting(t, by)
    _member_of(t, proposer, channel)
    leaving = t.org(org_name)
    before = fetch_config(admin, proposer, channel)
    after = cu.without_org(before, leaving.msp_id)
    return _write_update(admin, channel, before, after, _update_path(t, channel, f"remove-{leaving.name}"))


def propose_anchor_peer(admin: Admin, channel: str, org: Org) -> Path | None:
    """As the org: its anchor peer set to its peer's address, if the channel says otherwise (None: nothing to do)."""
    config = fetch_config(admin, org, channel)
    peer = admin.topology.peer_of(org)
    wanted = [(peer.host, peer.port)]
    if cu.anchor_peers(config, org.msp_id) == wanted:
        return None
    after = cu.with_anchor_peers(config, org.msp_id, wanted)
    return _write_update(admin, channel, config, after, _update_path(admin.topology, channel, f"anchor-{org.name}"))


def propose_consenter_cert(admin: Admin, channel: str, host: str, port: int, tls_pem: bytes) -> Path | None:
    """As the ordering org: one consenter's TLS certificate replaced (None when the channel has it already)."""
    t = admin.topology
    config = fetch_config(admin, t.orderer_org, channel)
    if any(c.host == host and c.port == port and c.client_tls_cert == tls_pem for c in cu.consenters(config)):
        return None
    after = cu.with_consenter_cert(config, host, port, tls_pem)
    return _write_update(admin, channel, config, after, _update_path(t, channel, f"consenter-{host}-{port}"))


# ----- 3. and 4. signatures and submission ------------------------------------------------------------------------


def check(admin: Admin, path: Path, org_name: str) -> cu.Status:
    """What the update changes, who signed, what is missing, against the channel's config as the org reads it."""
    org = _acting(admin.topology, org_name)
    f = cu.UpdateFile.read(path)
    return cu.status(f, fetch_config(admin, org, f.channel))


def sign(admin: Admin, path: Path, org_name: str) -> cu.Status:
    """The org's admin signs the update (in its own home). Signing twice adds nothing."""
    t = admin.topology
    org = _acting(t, org_name)
    f = cu.UpdateFile.read(path)
    config = fetch_config(admin, org, f.channel)
    if org.msp_id not in (*cu.application_orgs(config), t.orderer_org.msp_id):
        raise MembershipError(f"{org.name} is not a member of {f.channel}; only members' signatures count")
    if not any(s.msp_id == org.msp_id and "admin" in s.roles for s in cu.verify(f, config).valid):
        identity, signer = load_msp(t.user_dir(org) / "msp", org.msp_id)
        f.sign(identity, signer)
        f.write(path)
    return cu.status(f, config)


TRANSIENT = ("SERVICE_UNAVAILABLE", "quorum loss", "connection refused", "deadline exceeded")


def _send(admin: Admin, org: Org, path: Path, channel: str, timeout: float = SUBMIT_WAIT_S) -> None:
    """`peer channel update` to the channel's Raft leader if known, else any orderer. An orderer that restarted a
    moment ago refuses consenter changes until it has heard from the others ("quorum loss"), and one that is
    catching up answers SERVICE_UNAVAILABLE: ask again, or another."""
    t = admin.topology
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        orderer = channels.raft_leader(t, channel) or t.orderers[attempt % len(t.orderers)]
        args = ["channel", "update", "-f", str(path), "-c", channel, *admin.orderer_flags(org, orderer)]
        try:
            admin.peer(org, args, f"submit the update of {channel} as {org.name}")
            return
        except CommandFailed as e:
            if not any(s in e.output for s in TRANSIENT) or time.monotonic() > deadline:
                raise
        attempt += 1
        time.sleep(min(0.5 * attempt, 3.0))


def _members_after(t: Topology, config: configtx_pb2.Config, channel: str) -> list[str]:
    """The channel's members by org name, in the order the consortium definition lists them."""
    msps = cu.application_orgs(config)
    names = [t.org(m).name for m in msps]
    known = [o.name for o in t.channels.get(channel, []) if o.name in names]
    return known + [n for n in names if n not in known]


def follow_channel(admin: Admin, org: Org, channel: str) -> list[str]:
    """Write the channel's membership, as its config now says, into the consortium definition (the overlay)."""
    t = admin.topology
    members = _members_after(t, fetch_config(admin, org, channel), channel)
    before = t.channels.get(channel, [])
    if members != [o.name for o in before]:
        left = [{"msp_id": o.msp_id, "kind": o.kind} for o in before if o.name not in members]
        back = {t.org(m).msp_id for m in members}
        with t.editing_overlay() as overlay:
            overlay.setdefault("channels", {})[channel] = members
            formers = overlay.setdefault("former_members", {})
            kept = [f for f in formers.get(channel, []) if f["msp_id"] not in back]
            formers[channel] = kept + [f for f in left if f["msp_id"] not in {k["msp_id"] for k in kept}]
    return members


def submit(admin: Admin, path: Path, org_name: str | None = None) -> cu.Status:
    """Send the update to an orderer as a member (default: the first that signed) once its policy is met; then
    wait for the config block and follow the channel's membership. Refused, naming who must still sign, before."""
    t = admin.topology
    f = cu.UpdateFile.read(path)
    signed = [m for m, _cert, _sig in f.signers()]
    name = org_name or (signed[0] if signed else None)
    if name is None:
        raise MembershipError(f"{path.name} has no signature yet; members sign it with `careledger channel sign`")
    org = _acting(t, name)
    before = fetch_config(admin, org, f.channel)
    st = cu.status(f, before)
    if not st.ready:
        missing = "; ".join(f"{r.policy} needs {r.missing}" for r in st.requirements if not r.satisfied)
        raise MembershipError(
            f"not submitted: the signatures on {path.name} do not meet the channel's policy yet: {missing}\n"
            + "\n".join(st.lines())
        )
    _send(admin, org, path, f.channel)
    removed = {t.any_org(c.path.rsplit("/", 1)[-1]).msp_id for c in st.changes if c.verb == "removes"}
    watcher = org
    if org.msp_id in removed:  # it cannot read the channel any more; a remaining signer can
        watcher = next(t.any_org(s.msp_id) for s in st.signatures.valid if s.msp_id not in removed)
    # The orderers' acknowledgement is not the block: a Raft leader that hands over leadership (as one whose own
    # consenter certificate the update rotates does) can drop what it was given. The outcome is looked up in the
    # channel's config; while it has not moved on, the same envelope is sent again (it can only apply once: its read
    # set names the versions it was made against).
    deadline = time.monotonic() + SUBMIT_WAIT_S
    resend_at = time.monotonic() + RESEND_AFTER_S
    while fetch_config(admin, watcher, f.channel).sequence <= before.sequence:
        now = time.monotonic()
        if now > deadline:
            raise MembershipError(
                f"the update of {f.channel} was sent but no config block came in {SUBMIT_WAIT_S:.0f}s; `careledger"
                f" channel status {path} --org {org.name}` says whether it is in, else submit it again"
            )
        if now > resend_at:
            try:
                _send(admin, org, path, f.channel)
            except CommandFailed:  # refused: e.g. the first one is in by now, so this one's read set is stale
                if fetch_config(admin, watcher, f.channel).sequence <= before.sequence:
                    raise
            resend_at = time.monotonic() + RESEND_AFTER_S
        time.sleep(0.2)
    if not watcher.is_orderer:
        follow_channel(admin, watcher, f.channel)
    return st


# ----- 5. the new org joins ----------------------------------------------------------------------------------


def ensure_nodes(admin: Admin, org: Org) -> list[str]:
    """The org's peer (and the host's Redis user and database for it) running."""
    t = admin.topology
    done = []
    peer = t.peer_of(org)
    if nodes.start(t, admin.binaries, peer):
        done.append(f"started {peer.name} on {peer.address}")
    nodes.wait_healthy(t, peer)
    if redis_server.ping(t) and (added := redis_server.ensure_users(t)):
        done.append(f"Redis users added: {', '.join(added)}")
    if postgres_server.ready(t):
        postgres_server.wait_ready(t)
    return done


def wait_caught_up(admin: Admin, org: Org, channel: str, timeout: float = 120.0) -> int:
    """Until the org's peer holds every block the ordering service had when asked. Returns that height."""
    target = orderer_height(admin, org, channel)
    deadline = time.monotonic() + timeout

    def height_now() -> int:
        try:
            return channels.block_height(admin, org, channel)
        except CommandFailed as e:
            # Until the peer has the config block that admitted its org, it refuses its own admin on the channel.
            if "access denied" in e.output:
                return 0
            raise

    while (height := height_now()) < target:
        if time.monotonic() > deadline:
            raise MembershipError(f"{org.name}'s peer is at block {height} of {target} on {channel} after {timeout}s")
        time.sleep(0.2)
    return height


def join_channel(admin: Admin, channel: str, org_name: str) -> list[str]:
    """As the joining org, once the channel's members admitted it: its peer joins from block 0, its anchor peer is
    set, its chaincode package is installed and served, and it approves the definition in force."""
    t = admin.topology
    t.refresh()
    org = t.org(org_name)
    config = fetch_config(admin, org, channel)  # refused by the orderer unless the channel admitted the org
    if org.msp_id not in cu.application_orgs(config):
        raise MembershipError(f"{org.name} is not a member of {channel} yet: a member proposes it, members sign")
    done = ensure_nodes(admin, org)
    if channel not in channels.peer_channels(admin, org):
        block = fetch_block(admin, org, channel, "0", t.org_home(org) / "channels" / f"{channel}.block")
        admin.peer(org, ["channel", "join", "-b", str(block)], f"join {org.name}'s peer to {channel}")
        done.append(f"{t.peer_of(org).name} joined {channel} from block 0")
    if org.name not in [o.name for o in t.channels.get(channel, [])]:
        follow_channel(admin, org, channel)
    if (anchor := propose_anchor_peer(admin, channel, org)) is not None:
        sign(admin, anchor, org.name)
        submit(admin, anchor, org.name)
        done.append(f"set {org.name}'s anchor peer on {channel}")
    wait_caught_up(admin, org, channel)
    pkg, lines = cc.prepare_org(admin, org)
    done += lines
    now = cc.current(admin, org, channel)
    if now is not None and not cc.approved_in_force(admin, org, channel, now.sequence):
        goal = cc.published_target(t, channel, now.version)
        cc.approve(admin, pkg, goal, now.sequence)
        done.append(f"{org.name} approved the definition in force on {channel} (sequence {now.sequence})")
    return done


# ----- 6. the chaincode definition follows membership ---------------------------------------------------------------


def _majority(n: int) -> int:
    return n // 2 + 1


def _definitions(admin: Admin, channel: str, org_name: str) -> tuple[Topology, Org, cc.Target, cc.Definition | None]:
    """As a member of the channel (refused otherwise), with the membership as it is now: the chaincode definition
    the channel's members call for, and the one in force (None before the first)."""
    t = admin.topology
    t.refresh()
    org = t.org(org_name)
    _member_of(t, org, channel)
    return t, org, cc.target(t, channel), cc.current(admin, org, channel)


def approve_chaincode(admin: Admin, channel: str, org_name: str) -> str:
    """As a member: approve the definition the channel's membership calls for (next sequence), after giving the
    org's chaincode server the consortium config it will need."""
    t, org, goal, now = _definitions(admin, channel, org_name)
    pkg, _ = cc.prepare_org(admin, org)
    if now is not None and now.version == goal.version:
        if cc.approved_in_force(admin, org, channel, now.sequence):
            return f"{channel}: {goal.version} is in force already (sequence {now.sequence})"
        cc.approve(admin, pkg, cc.published_target(t, channel, now.version), now.sequence)
        return f"{channel}: {org.name} approved {goal.version}, in force (sequence {now.sequence})"
    sequence = now.sequence + 1 if now else 1
    if cc.approvals(admin, org, goal, sequence).get(org.msp_id):
        return f"{channel}: {org.name} approved {goal.version} (sequence {sequence}) already"
    cc.approve(admin, pkg, goal, sequence)
    return f"{channel}: {org.name} approved {goal.version} at sequence {sequence}"


def commit_chaincode(admin: Admin, channel: str, org_name: str) -> str:
    """As a member: commit the definition once a majority of the members approved it; else say who has not."""
    t, org, goal, now = _definitions(admin, channel, org_name)
    if now is not None and now.version == goal.version:
        return f"{channel}: {goal.version} is in force already (sequence {now.sequence})"
    sequence = now.sequence + 1 if now else 1
    approvals = cc.approvals(admin, org, goal, sequence)
    members = t.channels[channel]
    have = [m.name for m in members if approvals.get(m.msp_id)]
    need = _majority(len(members))
    if len(have) < need:
        lacking = [m.name for m in members if m.name not in have]
        raise MembershipError(
            f"{channel}: {goal.version} (sequence {sequence}) is approved by {', '.join(have) or 'nobody'}; a"
            f" majority is {need} of {len(members)}: waiting for {need - len(have)} more of {', '.join(lacking)}"
            " (`careledger chaincode approve`)"
        )
    cc.commit(admin, org, goal, sequence)
    return f"{channel}: committed {goal.version} at sequence {sequence} (approved by {', '.join(have)})"


def chaincode_status(admin: Admin, channel: str, org_name: str) -> dict[str, object]:
    t = admin.topology
    org = t.org(org_name)
    goal = cc.target(t, channel)
    now = cc.current(admin, org, channel)
    out: dict[str, object] = {
        "channel": channel,
        "committed": {"version": now.version, "sequence": now.sequence} if now else None,
        "target": goal.version,
        "policy": goal.policy,
        "collections": [c["name"] for c in goal.collections],
    }
    if now is None or now.version != goal.version:
        sequence = now.sequence + 1 if now else 1
        out["approvals"] = cc.approvals(admin, org, goal, sequence)
    return out


# ----- everything at once, every party local -------------------------------------------------------------------------


@dataclass
class Timings:
    """Seconds per phase of a join, and the total from the first proposal to the new org's first endorsement."""

    phases: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def mark(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.phases[name] = self.phases.get(name, 0.0) + now - since
        return now

    @property
    def total(self) -> float:
        return sum(self.phases.values())


def _sign_by_majority(admin: Admin, path: Path, channel: str, leaving: str | None = None) -> cu.Status:
    """Each member signs, remaining members first, until the policy is met (what the parties would do by mail)."""
    t = admin.topology
    members = sorted(t.channels[channel], key=lambda o: o.name == leaving)
    st = check(admin, path, members[0].name)
    for m in members:
        if st.ready:
            break
        st = sign(admin, path, m.name)
    return st


def follow_definitions(admin: Admin, channel_names: list[str], progress: Progress) -> None:
    """Every member approves the definition its channel's membership calls for, then one commits it."""
    t = admin.topology
    for channel in channel_names:
        for m in t.channels[channel]:
            progress(approve_chaincode(admin, channel, m.name))
        progress(commit_chaincode(admin, channel, t.channels[channel][0].name))


def add_org(
    admin: Admin,
    name: str,
    kind: str,
    channel_names: list[str],
    *,
    host: str | None = None,
    netns: str | None = None,
    progress: Progress = print,
) -> tuple[Org, Timings]:
    """Every step of a join, each party acting from its own home: create, propose, sign, submit, join, approve and
    commit the definitions, until the new org's own Gateway endorses on each channel."""
    t = admin.topology
    timings = Timings()
    for ch in channel_names:
        if ch not in t.channels:
            raise MembershipError(f"there is no channel {ch!r}; the channels are {', '.join(t.channels)}")
    holder = next((o for o in t.member_orgs if t.consortium_key_file(o).exists()), None)
    key = org_secrets.read_consortium_key(t.consortium_key_file(holder)) if holder else None
    mark = time.monotonic()
    created = create_org(t, admin.binaries, name, kind, host=host, netns=netns, consortium_key=key)
    org = created.org
    for note in created.notes:
        progress(note)
    mark = timings.mark("create", mark)
    for ch in channel_names:
        if org in t.channels[ch]:
            continue
        members = t.channels[ch]
        path = propose_join(admin, ch, created.definition_file, members[0].name)
        progress(f"{members[0].name} proposed {org.name} on {ch}: {path.name}")
        st = _sign_by_majority(admin, path, ch)
        progress(f"signed by {', '.join(s.msp_id for s in st.signatures.valid)}")
        submit(admin, path, members[0].name)
        progress(f"{ch}: the channel's config now includes {org.msp_id}")
    mark = timings.mark("channel config updates", mark)
    for ch in channel_names:
        for line in join_channel(admin, ch, org.name):
            progress(line)
    mark = timings.mark("join", mark)
    follow_definitions(admin, channel_names, progress)
    mark = timings.mark("chaincode definitions", mark)
    for ch in channel_names:
        endorsers.wait_until_endorses(t, org, ch)
    mark = timings.mark("first endorsement", mark)
    progress(f"{org.name} endorses on {', '.join(channel_names)}: {timings.total:.1f}s from the first proposal")
    for ch in channel_names:
        in_force = cc.current(admin, org, ch)
        if in_force is not None:
            endorsers.wait_until_heard(t, ch, in_force.sequence)
    timings.mark("every peer heard every peer", mark)
    progress(
        f"every member's peer has heard every member's peer run the definition in force on {', '.join(channel_names)}"
    )
    return org, timings


def remove_from_channel(admin: Admin, name: str, channel: str, progress: Progress = print) -> int:
    """Every step of a leave, locally: a remaining member proposes, members sign, one submits; the definition
    follows. Returns the number of the config block that removed the org."""
    t = admin.topology
    org = t.org(name)
    remaining = [o for o in t.channels[channel] if o != org]
    if not remaining:
        raise MembershipError(f"{org.name} is the last member of {channel}")
    path = propose_leave(admin, channel, org.name, remaining[0].name)
    progress(f"{remaining[0].name} proposed that {org.name} leave {channel}: {path.name}")
    st = _sign_by_majority(admin, path, channel, leaving=org.name)
    progress(f"signed by {', '.join(s.msp_id for s in st.signatures.valid)}")
    submit(admin, path, remaining[0].name)
    block = orderer_height(admin, remaining[0], channel) - 1
    progress(f"{channel}: {org.name} removed by config block {block}")
    follow_definitions(admin, [channel], progress)
    return block


def orgs_summary(topology: Topology) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for org in topology.member_orgs:
        out.append(
            {
                "name": org.name,
                "msp_id": org.msp_id,
                "kind": org.kind,
                "host": org.host,
                "channels": topology.channels_of(org),
                "home": str(topology.org_home(org)),
                "definition": str(topology.org_definition_file(org)),
            }
        )
    return out


def require_up(topology: Topology) -> None:
    readiness.require_set_up(topology)


def describe(status: cu.Status) -> str:
    return "\n".join(status.lines())


def as_json(status: cu.Status) -> str:
    return json.dumps(
        {
            "channel": status.channel,
            "changes": [str(c) for c in status.changes],
            "signed_by": [s.msp_id for s in status.signatures.valid],
            "invalid": status.signatures.invalid,
            "requirements": [
                {"policy": r.policy, "rule": r.rule, "satisfied": r.satisfied, "missing": r.missing}
                for r in status.requirements
            ],
            "ready": status.ready,
        },
        indent=2,
    )
