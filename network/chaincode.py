"""CareLedger's chaincode as a service: build the server, package it per org, run each org's server, and keep each
channel's chaincode definition in step with the channel's members.

Each member org runs its own chaincode server for its own peer, from its own home: its package's connection.json
names the org's server address, the org's TLS CA and the peer's TLS pair (the peer is the server's only client). A
package is built byte-for-byte reproducibly, so its id (label + SHA-256 of the archive) changes only with the
chaincode's source or the org's crypto and address. Its label names the source digest.

What a channel's definition is beyond the code — the contracts' config, collections and endorsement policy
(network/chaincode_config.py) — is written down in a manifest, published in `<run>/consortium/chaincode/<channel>/`;
the definition's version is the manifest's digest. A membership change is therefore a new version on the channels
it touches: each member approves it (with its own package id) and it is committed with the next sequence. A
member's server takes a new config by reloading it (SIGHUP), not by a restart; a new package (changed source)
restarts it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consortium.errors import BuildFailed, CommandFailed, NetworkError
from consortium.processes import ManagedProcess, accepts, ensure_port_free
from consortium.secrets import replace_secret
from consortium.topology import REPO_ROOT, Org, Topology
from network import chaincode_config, crypto
from network.admin import Admin
from network.binaries import cache_root

SOURCE_DIR = REPO_ROOT / "chaincode"
SERVER_PREFIX = "chaincode"


@dataclass(frozen=True)
class Package:
    org: Org
    label: str
    path: Path
    package_id: str


@dataclass(frozen=True)
class Definition:
    """A chaincode definition committed on a channel."""

    name: str
    version: str
    sequence: int


@dataclass(frozen=True)
class Target:
    """A chaincode definition for a channel, as its manifest describes it."""

    channel: str
    version: str
    manifest: dict[str, Any]
    manifest_file: Path

    @property
    def collections(self) -> list[dict[str, Any]]:
        return list(self.manifest["collections"])

    @property
    def policy(self) -> str:
        return str(self.manifest["endorsementPolicy"])

    @property
    def members(self) -> list[str]:
        return list(self.manifest["members"])


class DefinitionUnknown(NetworkError):
    """A committed definition whose manifest is not in the consortium folder."""


# ----- build and package --------------------------------------------------------------------------------------


def source_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(SOURCE_DIR.rglob("*")):
        if path.is_file() and (path.suffix == ".go" or path.name in ("go.mod", "go.sum")):
            if path.name.endswith("_test.go"):
                continue
            h.update(path.relative_to(SOURCE_DIR).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


_BUILDING = threading.Lock()  # the orgs' servers are prepared in parallel: one build, which the others wait for


def build_server() -> Path:
    """Compile the chaincode server once per source digest, into the cache."""
    binary = cache_root() / "chaincode" / source_digest() / "careledger-chaincode"
    with _BUILDING:
        if not binary.exists():
            _build(binary)
    return binary


def _build(binary: Path) -> None:
    """Build into a file of this process's own, then rename it into place: another checkout sharing the cache may
    build the same source at the same time, and a server must never start from a half-written file."""
    binary.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0"}
    tmp = binary.with_name(f".build-{os.getpid()}")
    argv = ["go", "build", "-trimpath", "-o", str(tmp), "."]
    proc = subprocess.run(argv, cwd=SOURCE_DIR, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildFailed(f"building the chaincode failed:\n{proc.stderr.strip()[-4000:]}")
    try:
        tmp.replace(binary)
    except FileNotFoundError:  # the cache is shared by checkouts: another one built the same source meanwhile
        if not binary.exists():
            raise


def _tls_files(topology: Topology, org: Org) -> dict[str, Path]:
    tls = crypto.chaincode_tls_dir(topology, org)
    return {
        "ca": topology.own_tls_ca_cert(org),
        "server_cert": tls / "server.crt",
        "server_key": tls / "server.key",
        "client_cert": tls / "client.crt",  # what the peer presents to its org's chaincode server
        "client_key": tls / "client.key",
    }


def connection_json(topology: Topology, org: Org) -> bytes:
    tls = _tls_files(topology, org)
    conn = {
        "address": topology.chaincode_address(org),
        "dial_timeout": "10s",
        "tls_required": True,
        "client_auth_required": True,
        "root_cert": tls["ca"].read_text(),
        "client_cert": tls["client_cert"].read_text(),
        "client_key": tls["client_key"].read_text(),
    }
    return json.dumps(conn, indent=2, sort_keys=True).encode()


def _targz(files: dict[str, bytes]) -> bytes:
    """A reproducible .tar.gz: fixed order, times, owners and modes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(files[name]))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def package(topology: Topology, org: Org) -> Package:
    """The org's chaincode package, in its home."""
    crypto.ensure_chaincode_tls(topology, org)
    label = f"{topology.chaincode_name}_{source_digest()}"
    code = _targz({"connection.json": connection_json(topology, org)})
    metadata = json.dumps({"type": "ccaas", "label": label}).encode()
    archive = _targz({"metadata.json": metadata, "code.tar.gz": code})
    # The package carries the client key the peer presents to the chaincode server: a secret like any key.
    path = topology.chaincode_home(org) / f"{label}.tar.gz"
    if not path.exists() or path.read_bytes() != archive:
        replace_secret(path, archive)
    return Package(org, label, path, f"{label}:{hashlib.sha256(archive).hexdigest()}")


# ----- each org's server --------------------------------------------------------------------------------------


def server_name(org: Org) -> str:
    return f"{SERVER_PREFIX}.{org.subdomain}"


def server_process(topology: Topology, org: Org) -> ManagedProcess:
    name = server_name(org)
    return ManagedProcess(name, topology.pid_file(name), topology.log_file(name))


def config_file(topology: Topology, org: Org) -> Path:
    return topology.chaincode_home(org) / "config.json"


def _serving_file(topology: Topology, org: Org) -> Path:
    return topology.chaincode_home(org) / "serving"


def _loaded(topology: Topology, org: Org, content: bytes) -> bool:
    marker = config_file(topology, org).with_name("config.json.loaded")
    try:
        return marker.read_text().strip() == hashlib.sha256(content).hexdigest()
    except FileNotFoundError:
        return False


def reload_config(topology: Topology, org: Org, timeout: float = 10.0) -> bool:
    """Give the org's running server the config the topology says now (write, SIGHUP, wait until it reports it
    loaded). True when it changed. A server that is not running takes it when it starts."""
    content = chaincode_config.contracts_config(topology).encode()
    path = config_file(topology, org)
    if path.exists() and path.read_bytes() == content:
        return False
    replace_secret(path, content)
    proc = server_process(topology, org)
    pid = proc.pid()
    if pid is None:
        return True
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while not _loaded(topology, org, content):
        if time.monotonic() > deadline:
            raise NetworkError(f"{proc.name} did not load its new config; see {proc.log_file}\n{proc.log_tail(10)}")
        time.sleep(0.05)
    return True


def ensure_server(topology: Topology, org: Org, pkg: Package) -> str | None:
    """Run the org's chaincode server for this package id, with the current config. Restarts it when it serves
    another package, reloads its config when that changed. Returns what it did, or None."""
    proc = server_process(topology, org)
    serving = _serving_file(topology, org)
    if proc.running() and serving.exists() and serving.read_text().strip() == pkg.package_id:
        return f"{proc.name} took the new consortium config" if reload_config(topology, org) else None
    proc.stop()
    reload_config(topology, org)  # writes the file; the server reads it at start
    crypto.ensure_chaincode_tls(topology, org)
    binary = build_server()
    host, port = topology.chaincode_address(org).rsplit(":", 1)
    ensure_port_free(proc.name, host, int(port), wait=10.0)  # the server we just stopped may still hold it
    tls = _tls_files(topology, org)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CHAINCODE_ID": pkg.package_id,
        "CHAINCODE_SERVER_ADDRESS": topology.chaincode_address(org),
        "CHAINCODE_TLS_CERT": str(tls["server_cert"]),
        "CHAINCODE_TLS_KEY": str(tls["server_key"]),
        "CHAINCODE_TLS_CLIENT_CA": str(tls["ca"]),
        "CARELEDGER_CHAINCODE_CONFIG_FILE": str(config_file(topology, org)),
    }
    proc.start([str(binary)], env, launcher=topology.launcher_of(org))
    proc.wait_until(lambda: accepts(host, int(port)), "listening", 20)
    serving.write_text(pkg.package_id + "\n")
    return f"{proc.name} serving {pkg.label} at {topology.chaincode_address(org)}"


# ----- definitions ---------------------------------------------------------------------------------------------


def manifest(topology: Topology, channel: str) -> dict[str, Any]:
    """Everything a channel's definition must change with: the code, the channel's contracts, members and their
    kinds, collections and endorsement policy."""
    members = topology.channels[channel]
    return {
        "chaincode": topology.chaincode_name,
        "source": source_digest(),
        "channel": channel,
        "contracts": topology.contracts.get(channel, []),
        "members": [o.msp_id for o in members],
        "orgKinds": {o.msp_id: o.kind for o in members},
        "collections": chaincode_config.collections(topology, channel),
        "endorsementPolicy": chaincode_config.endorsement_policy(topology, channel),
    }


def _version(doc: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def _publish(topology: Topology, channel: str, doc: dict[str, Any]) -> Target:
    version = _version(doc)
    folder = topology.chaincode_definitions_dir(channel)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{version}.json"
    if not path.exists():
        tmp = path.with_name(f".{version}.{os.getpid()}")
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
    if doc["collections"]:
        chaincode_config.write_collections(folder / f"{version}.collections.json", doc["collections"])
    return Target(channel, version, doc, path)


def target(topology: Topology, channel: str) -> Target:
    """The definition the channel should have for its members now (its manifest published)."""
    return _publish(topology, channel, manifest(topology, channel))


def chaincode_version(topology: Topology, channel: str) -> str:
    return _version(manifest(topology, channel))


def published_target(topology: Topology, channel: str, version: str) -> Target:
    """A definition by version, from its published manifest (what a joining org approves: the one in force)."""
    path = topology.chaincode_definitions_dir(channel) / f"{version}.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise DefinitionUnknown(
            f"the chaincode definition in force on {channel} is version {version}, whose manifest ({path}) is not"
            " here; a member publishes it with `careledger chaincode approve`"
        ) from None
    if _version(doc) != version:
        raise DefinitionUnknown(f"{path} does not hash to version {version}: it was altered")
    return _publish(topology, channel, doc)


# ----- lifecycle ----------------------------------------------------------------------------------------------


def installed(admin: Admin, org: Org) -> set[str]:
    out = admin.peer(org, ["lifecycle", "chaincode", "queryinstalled", "-O", "json"], "query installed chaincode")
    data = json.loads(out) if out.strip() else {}
    return {c["package_id"] for c in data.get("installed_chaincodes") or []}


def install(admin: Admin, pkg: Package) -> bool:
    if pkg.package_id in installed(admin, pkg.org):
        return False
    admin.peer(pkg.org, ["lifecycle", "chaincode", "install", str(pkg.path)], f"install on {pkg.org.name}")
    return True


def committed(admin: Admin, org: Org, channel: str) -> list[Definition]:
    args = ["lifecycle", "chaincode", "querycommitted", "-C", channel, "-O", "json"]
    data = json.loads(admin.peer(org, args, f"query committed chaincode on {channel}") or "{}")
    return [Definition(d["name"], d["version"], int(d["sequence"])) for d in data.get("chaincode_definitions") or []]


def current(admin: Admin, org: Org, channel: str) -> Definition | None:
    name = admin.topology.chaincode_name
    return next((d for d in committed(admin, org, channel) if d.name == name), None)


def _flags(topology: Topology, t: Target, sequence: int) -> list[str]:
    flags = ["-C", t.channel, "-n", topology.chaincode_name, "--version", t.version, "--sequence", str(sequence)]
    flags += ["--signature-policy", t.policy]
    if t.collections:
        flags += ["--collections-config", str(t.manifest_file.with_name(f"{t.version}.collections.json"))]
    return flags


def approvals(admin: Admin, org: Org, t: Target, sequence: int) -> dict[str, bool]:
    """Which members have approved this definition at this (uncommitted) sequence, as the org's peer sees it."""
    args = ["lifecycle", "chaincode", "checkcommitreadiness", *_flags(admin.topology, t, sequence), "-O", "json"]
    out = admin.peer(org, args, f"check commit readiness on {t.channel}")
    return {k: bool(v) for k, v in json.loads(out)["approvals"].items()}


def approved_in_force(admin: Admin, org: Org, channel: str, sequence: int) -> bool:
    """Whether the org approved the committed sequence (a joining org must, to endorse)."""
    args = ["lifecycle", "chaincode", "queryapproved", "-C", channel, "-n", admin.topology.chaincode_name]
    try:
        admin.peer(org, [*args, "--sequence", str(sequence), "-O", "json"], f"query approved on {channel}")
    except CommandFailed:
        return False
    return True


def approve(admin: Admin, pkg: Package, t: Target, sequence: int) -> None:
    args = ["lifecycle", "chaincode", "approveformyorg", *_flags(admin.topology, t, sequence)]
    args += ["--package-id", pkg.package_id, *admin.orderer_flags(pkg.org)]
    admin.peer(pkg.org, args, f"approve on {t.channel} for {pkg.org.name}")


def commit(admin: Admin, org: Org, t: Target, sequence: int) -> None:
    """Commit, endorsed by every member's peer (the lifecycle endorsement policy needs a majority of them)."""
    topo = admin.topology
    peer_flags: list[str] = []
    for member in topo.channels[t.channel]:
        p = topo.peer_of(member)
        peer_flags += ["--peerAddresses", p.address, "--tlsRootCertFiles", str(topo.tls_ca_cert(member))]
    args = ["lifecycle", "chaincode", "commit", *_flags(topo, t, sequence), *peer_flags, *admin.orderer_flags(org)]
    try:
        admin.peer(org, args, f"commit on {t.channel}")
    except CommandFailed:
        # Another party may have committed the same definition meanwhile: then the goal is reached.
        now = current(admin, org, t.channel)
        if not (now and now.version == t.version):
            raise


def prepare_org(admin: Admin, org: Org) -> tuple[Package, list[str]]:
    """The org's package, installed on its peer, its server running with the current config."""
    pkg = package(admin.topology, org)
    done: list[str] = []
    if install(admin, pkg):
        done.append(f"installed {pkg.label} on {admin.topology.peer_of(org).name}")
    if (line := ensure_server(admin.topology, org, pkg)) is not None:
        done.append(line)
    return pkg, done


def deploy(admin: Admin, packages: dict[str, Package], channel: str) -> str:
    """Bring the channel's definition to its target: every member that has not approved it approves (each with its
    own package), then it is committed. Returns a line saying what happened."""
    t = admin.topology
    members = t.channels[channel]
    goal = target(t, channel)
    now = current(admin, members[0], channel)
    if now and now.version == goal.version:
        return f"{channel}: {t.chaincode_name} {goal.version} already committed (sequence {now.sequence})"
    sequence = now.sequence + 1 if now else 1
    pending = [o for o in members if not approvals(admin, members[0], goal, sequence).get(o.msp_id)]
    with ThreadPoolExecutor(max_workers=max(1, len(pending))) as pool:
        list(pool.map(lambda o: approve(admin, packages[o.name], goal, sequence), pending))
    commit(admin, members[0], goal, sequence)
    return f"{channel}: committed {t.chaincode_name} {goal.version} at sequence {sequence}"


def ensure_deployed(admin: Admin) -> tuple[dict[str, Package], list[str]]:
    """Package, install and serve for every member org; commit each channel's definition."""
    t = admin.topology
    done: list[str] = []
    with ThreadPoolExecutor(max_workers=len(t.member_orgs)) as pool:
        prepared = list(pool.map(lambda o: prepare_org(admin, o), t.member_orgs))
    packages = {o.name: pkg for o, (pkg, _) in zip(t.member_orgs, prepared, strict=True)}
    for _, lines in prepared:
        done += lines
    with ThreadPoolExecutor(max_workers=len(t.channels)) as pool:
        done += list(pool.map(lambda ch: deploy(admin, packages, ch), t.channels))
    return packages, done
