"""CareLedger's chaincode as a service: build the server, package it, run it, and deploy it with the lifecycle.

The package holds only connection.json (where peers dial the server, with mutual TLS material). It is built
byte-for-byte reproducibly, so the package id (label + SHA-256 of the archive) only changes when the chaincode's
source or the network's crypto/addresses change. The version is the digest of the chaincode source and of its
consortium config and collections (network/chaincode_config.py): a change to any of them gets a new version, approved
and committed with the next sequence on every channel.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import socket
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from consortium.errors import BuildFailed, CommandFailed
from consortium.processes import ManagedProcess, ensure_port_free
from consortium.secrets import replace_secret
from consortium.topology import REPO_ROOT, Org, Topology
from network import chaincode_config
from network.admin import Admin
from network.binaries import cache_root

SOURCE_DIR = REPO_ROOT / "chaincode"
SERVER_NAME = "chaincode"


@dataclass(frozen=True)
class Package:
    label: str
    version: str
    path: Path
    package_id: str


@dataclass(frozen=True)
class Definition:
    """A chaincode definition committed on a channel."""

    name: str
    version: str
    sequence: int


# ----- build and package --------------------------------------------------------------------------------------


def chaincode_version(topology: Topology) -> str:
    h = hashlib.sha256(source_digest().encode())
    h.update(chaincode_config.digest(topology))
    return h.hexdigest()[:12]


def source_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(SOURCE_DIR.rglob("*")):
        if path.is_file() and (path.suffix == ".go" or path.name in ("go.mod", "go.sum")):
            if path.name.endswith("_test.go"):
                continue
            h.update(path.relative_to(SOURCE_DIR).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def build_server() -> Path:
    """Compile the chaincode server once per source digest, into the cache."""
    binary = cache_root() / "chaincode" / source_digest() / "careledger-chaincode"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0"}
    argv = ["go", "build", "-trimpath", "-o", str(binary), "."]
    proc = subprocess.run(argv, cwd=SOURCE_DIR, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildFailed(f"building the chaincode failed:\n{proc.stderr.strip()[-4000:]}")
    return binary


def _tls_files(topology: Topology) -> dict[str, Path]:
    org = topology.chaincode_tls_org
    server = topology.org_dir(org) / "peers" / f"server.{org.domain}" / "tls"
    client = topology.user_dir(org) / "tls"
    return {
        "ca": topology.tls_ca_cert(org),
        "server_cert": server / "server.crt",
        "server_key": server / "server.key",
        "client_cert": client / "client.crt",
        "client_key": client / "client.key",
    }


def connection_json(topology: Topology) -> bytes:
    tls = _tls_files(topology)
    conn = {
        "address": topology.chaincode_address,
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


def package(topology: Topology) -> Package:
    label = f"{topology.chaincode_name}_{chaincode_version(topology)}"
    code = _targz({"connection.json": connection_json(topology)})
    metadata = json.dumps({"type": "ccaas", "label": label}).encode()
    archive = _targz({"metadata.json": metadata, "code.tar.gz": code})
    # The package carries the client key peers present to the chaincode server: a secret like any key.
    path = topology.home / "chaincode" / f"{label}.tar.gz"
    if not path.exists() or path.read_bytes() != archive:
        replace_secret(path, archive)
    return Package(label, chaincode_version(topology), path, f"{label}:{hashlib.sha256(archive).hexdigest()}")


# ----- the server process -------------------------------------------------------------------------------------


def server_process(topology: Topology) -> ManagedProcess:
    return ManagedProcess(SERVER_NAME, topology.pid_file(SERVER_NAME), topology.log_file(SERVER_NAME))


def _serving_file(topology: Topology) -> Path:
    return topology.home / "chaincode" / "serving"


def ensure_server(topology: Topology, pkg: Package) -> bool:
    """Run the chaincode server for this package id; restart it if it serves another. True if it (re)started."""
    proc = server_process(topology)
    serving = _serving_file(topology)
    if proc.running() and serving.exists() and serving.read_text().strip() == pkg.package_id:
        return False
    proc.stop()
    binary = build_server()
    host, port = topology.chaincode_address.rsplit(":", 1)
    ensure_port_free(SERVER_NAME, host, int(port), wait=10.0)  # the server we just stopped may still hold it
    tls = _tls_files(topology)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CHAINCODE_ID": pkg.package_id,
        "CHAINCODE_SERVER_ADDRESS": topology.chaincode_address,
        "CHAINCODE_TLS_CERT": str(tls["server_cert"]),
        "CHAINCODE_TLS_KEY": str(tls["server_key"]),
        "CHAINCODE_TLS_CLIENT_CA": str(tls["ca"]),
        "CARELEDGER_CHAINCODE_CONFIG": chaincode_config.contracts_config(topology),
    }
    proc.start([str(binary)], env)
    proc.wait_until(lambda: _accepts(host, int(port)), "listening", 20)
    serving.write_text(pkg.package_id + "\n")
    return True


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# ----- lifecycle ----------------------------------------------------------------------------------------------


def installed(admin: Admin, org: Org) -> set[str]:
    out = admin.peer(org, ["lifecycle", "chaincode", "queryinstalled", "-O", "json"], "query installed chaincode")
    data = json.loads(out) if out.strip() else {}
    return {c["package_id"] for c in data.get("installed_chaincodes") or []}


def committed(admin: Admin, org: Org, channel: str) -> list[Definition]:
    args = ["lifecycle", "chaincode", "querycommitted", "-C", channel, "-O", "json"]
    data = json.loads(admin.peer(org, args, f"query committed chaincode on {channel}") or "{}")
    return [Definition(d["name"], d["version"], int(d["sequence"])) for d in data.get("chaincode_definitions") or []]


def _definition_flags(topology: Topology, channel: str, version: str, sequence: int) -> list[str]:
    flags = ["-C", channel, "-n", topology.chaincode_name, "--version", version, "--sequence", str(sequence)]
    collections = chaincode_config.collections_file(topology, channel)
    return [*flags, "--collections-config", str(collections)] if collections else flags


def _approvals(admin: Admin, org: Org, flags: list[str], channel: str) -> dict[str, bool]:
    args = ["lifecycle", "chaincode", "checkcommitreadiness", *flags, "-O", "json"]
    out = admin.peer(org, args, f"check commit readiness on {channel}")
    return {k: bool(v) for k, v in json.loads(out)["approvals"].items()}


def deploy(admin: Admin, pkg: Package, channel: str) -> str:
    """Bring the channel's definition to this package's version. Returns a line saying what happened."""
    t = admin.topology
    members = t.channels[channel]
    current = next((d for d in committed(admin, members[0], channel) if d.name == t.chaincode_name), None)
    if current and current.version == pkg.version:
        return f"{channel}: {t.chaincode_name} {pkg.version} already committed (sequence {current.sequence})"
    sequence = current.sequence + 1 if current else 1
    flags = _definition_flags(t, channel, pkg.version, sequence)
    approvals = _approvals(admin, members[0], flags, channel)
    pending = [org for org in members if not approvals.get(org.msp_id)]

    def approve(org: Org) -> None:
        args = ["lifecycle", "chaincode", "approveformyorg", *flags, "--package-id", pkg.package_id]
        admin.peer(org, [*args, *admin.orderer_flags(org)], f"approve on {channel} for {org.name}")

    with ThreadPoolExecutor(max_workers=len(members)) as pool:
        list(pool.map(approve, pending))
    peer_flags: list[str] = []
    for org in members:
        peer_flags += ["--peerAddresses", t.peer_of(org).address, "--tlsRootCertFiles", str(t.tls_ca_cert(org))]
    args = ["lifecycle", "chaincode", "commit", *flags, *peer_flags, *admin.orderer_flags(members[0])]
    try:
        admin.peer(members[0], args, f"commit on {channel}")
    except CommandFailed:
        # Another `up` may have committed the same definition meanwhile: then the goal is reached.
        now = next((d for d in committed(admin, members[0], channel) if d.name == t.chaincode_name), None)
        if not (now and now.version == pkg.version):
            raise
    return f"{channel}: committed {t.chaincode_name} {pkg.version} at sequence {sequence}"


def ensure_deployed(admin: Admin) -> tuple[Package, list[str]]:
    """Package, install on every member peer, serve, and commit on every channel."""
    t = admin.topology
    pkg = package(t)
    done: list[str] = []

    def install(org: Org) -> None:
        if pkg.package_id not in installed(admin, org):
            admin.peer(org, ["lifecycle", "chaincode", "install", str(pkg.path)], f"install on {org.name}")
            done.append(f"installed {pkg.label} on {t.peer_of(org).name}")

    with ThreadPoolExecutor(max_workers=len(t.member_orgs)) as pool:
        list(pool.map(install, t.member_orgs))
    if ensure_server(t, pkg):
        done.append(f"chaincode server serving {pkg.label} at {t.chaincode_address}")
    with ThreadPoolExecutor(max_workers=len(t.channels)) as pool:
        done += list(pool.map(lambda ch: deploy(admin, pkg, ch), t.channels))
    return pkg, done
