"""Bring the consortium up, report its state, take it down.

`up` is idempotent: every step first looks at what exists (crypto, running processes, joined channels, committed
definitions) and only does what is missing, so it both creates a new network and resumes a stopped one.
"""

from __future__ import annotations

import json
import shutil
import ssl
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from consortium import supervision
from consortium.errors import CommandFailed
from consortium.processes import ManagedProcess
from consortium.redis_keys import OrgKeys
from consortium.secrets import SecretMissing
from consortium.topology import Topology
from network import (
    binaries,
    channels,
    crypto,
    endorsers,
    nodes,
    org_secrets,
    orgdef,
    postgres_server,
    redis_server,
    s3_server,
)
from network import chaincode as cc
from network.admin import Admin

Progress = Callable[[str], None]


def up(topology: Topology, progress: Progress = print) -> None:
    started = time.monotonic()

    def step(msg: str) -> None:
        progress(f"[{time.monotonic() - started:6.1f}s] {msg}")

    # Nothing in the run folder is for other users, and each org's home is its own; PostgreSQL's own user passes
    # through the run folder (o+x, see postgres_server), and a PostgreSQL already running keeps that passage while the
    # network is brought up again.
    topology.make_private()
    fabric = binaries.ensure(step)
    step(f"Fabric {topology.fabric_version} binaries ready")
    made = crypto.ensure(topology, fabric)
    if made:
        step(f"each org made its own identities in its home (cryptogen per org): {', '.join(o.name for o in made)}")
    for org in topology.all_orgs:
        if not topology.org_definition_file(org).exists() or org in made:
            orgdef.publish(topology, org)
    if [org for org in topology.member_orgs if crypto.ensure_gateway_tls(topology, org)]:
        step("issued the FHIR gateways' TLS certificates from each org's TLS CA")
    if org_secrets.ensure(topology):
        step("made each org's master, token-issuer and Redis keys, and gave each the consortium pseudonym key")
    if redis_server.start(topology):
        step(f"starting redis on {topology.services_host}:{topology.redis_port}")
    if postgres_server.start(topology):
        step(f"starting postgres on {topology.services_host}:{topology.postgres_port} (for stores kept in PostgreSQL)")
    if s3_server.start(topology):
        step(f"S3-compatible blob store (development) on {s3_server.endpoint(topology)}")
    for group in (topology.orderers, topology.peers):
        starting = [n for n in group if nodes.start(topology, fabric, n)]
        for node in starting:
            step(f"starting {node.kind} {node.name} on {node.address}")
        with ThreadPoolExecutor(max_workers=len(group)) as pool:
            list(pool.map(lambda n: nodes.wait_healthy(topology, n), group))
        step(f"{len(group)} {group[0].kind}s healthy")
    redis_server.wait_ready(topology)
    for user in redis_server.ensure_users(topology):
        step(f"added the Redis user {user}")
    postgres_server.wait_ready(topology)
    admin = Admin(topology, fabric)
    for line in channels.ensure_joined(topology, fabric, admin):
        step(line)
    channels.wait_for_leaders(topology)
    step(f"channels ready, each with a Raft leader: {', '.join(topology.channels)}")
    _, lines = cc.ensure_deployed(admin)
    for line in lines:
        step(line)
    endorsers.wait_until_ready(topology)
    step("every org's Gateway can endorse on each of its channels (gossip has converged)")
    step("network is up")


def managed_processes(topology: Topology) -> list[ManagedProcess]:
    """Every process the run folder has a pid file for: nodes, chaincode, redis, and later gateways/workers."""
    pid_dir = topology.home / "pids"
    if not pid_dir.exists():
        return []
    return [ManagedProcess(p.stem, p, topology.log_file(p.stem)) for p in sorted(pid_dir.glob("*.pid"))]


def down(topology: Topology, purge: bool = False, progress: Progress = print) -> None:
    # Stop clients before servers: workers and gateways, then chaincode and peers, then orderers, redis and
    # postgres last (postgres with its fast shutdown signal).
    if supervision.shutdown(topology):
        progress("stopped supervisord and its gateways, listeners and workers")
    order = {"redis": 9, postgres_server.NAME: 9}
    for n in topology.orderers:
        order[n.name] = 8
    for n in topology.peers:
        order[n.name] = 7
    for org in topology.member_orgs:
        order[cc.server_name(org)] = 6
    procs = sorted(managed_processes(topology), key=lambda p: order.get(p.name, 0))
    for proc in procs:
        if proc.name == postgres_server.NAME:
            proc = postgres_server.process(topology)
        if proc.stop():
            progress(f"stopped {proc.name}")
    if purge and topology.home.exists():
        shutil.rmtree(topology.home)
        topology.refresh()  # the overlay went with it: back to the repository's definition
        progress(f"removed {topology.home} (ledgers, crypto material, logs)")


def _gateway_answers(topology: Topology, org_name: str) -> bool:
    org = topology.org(org_name)
    ctx = ssl.create_default_context(cafile=str(topology.tls_ca_cert(org)))
    url = f"{topology.gateway_url(org)}/fhir/metadata"
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _heartbeat_pid(r: redis.Redis | None, topology: Topology, org_name: str, kind: str) -> int | None:
    """The pid in the process's heartbeat key (see workers/app.py), or None when it has expired."""
    if r is None:
        return None
    try:
        raw = r.get(OrgKeys(topology.org(org_name).msp_id).alive(kind))
    except redis.RedisError:
        return None
    return int(json.loads(raw)["pid"]) if isinstance(raw, bytes) else None


def services(topology: Topology) -> list[dict[str, Any]]:
    """Gateways, listeners and workers: supervisord's state, and whether each is alive — a gateway answers
    /fhir/metadata, a listener or worker renews its heartbeat in Redis (from the pid supervisord runs)."""
    programs = supervision.all_programs(topology)
    try:
        r: redis.Redis | None = redis.Redis.from_url(topology.redis_admin_url, socket_timeout=2) if programs else None
    except SecretMissing:
        r = None
    out = []
    for p in programs:
        kind, _, org = str(p["name"]).partition("-")
        state, pid = str(p["statename"]), int(p["pid"]) or None
        live = False
        if state == "RUNNING":
            if kind == "gateway":
                live = _gateway_answers(topology, org)
            else:
                live = pid is not None and _heartbeat_pid(r, topology, org, kind) == pid
        out.append({"name": p["name"], "kind": kind, "org": org, "state": state, "pid": pid, "live": live})
    if r is not None:
        r.close()
    return out


def status(topology: Topology) -> dict[str, Any]:
    """The network's state in the stable form `careledger network status --json` prints."""
    node_list = [
        {"name": n.name, "kind": n.kind, "org": n.org.msp_id, "healthy": nodes.healthy(topology, n)}
        for n in topology.nodes
    ]
    healthy_peers = {e["name"] for e in node_list if e["kind"] == "peer" and e["healthy"]}
    chans: dict[str, Any] = {}
    fabric = binaries.cached() if healthy_peers else None
    admin = Admin(topology, fabric) if fabric else None
    for channel, members in topology.channels.items():
        heights: dict[str, int | None] = {}
        definitions: list[dict[str, Any]] = []
        for org in members:
            peer = topology.peer_of(org)
            heights[peer.name] = None
            if admin is None or peer.name not in healthy_peers:
                continue
            try:
                heights[peer.name] = channels.block_height(admin, org, channel)
                if not definitions:
                    definitions = [
                        {"name": d.name, "version": d.version, "sequence": d.sequence}
                        for d in cc.committed(admin, org, channel)
                    ]
            except CommandFailed:
                pass
        chans[channel] = {"members": [o.msp_id for o in members], "heights": heights, "chaincodes": definitions}
    return {"nodes": node_list, "channels": chans, "services": services(topology)}
