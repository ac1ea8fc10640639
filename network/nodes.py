"""Orderer and peer processes: Fabric's sampleconfig as the base, every per-node setting as an env override.

Nothing is copied from sampleconfig into the run folder: FABRIC_CFG_PATH points at the cached copy of the
module's sampleconfig, and every path setting that would resolve inside it (MSP, TLS, ledger, WAL, snapshots) is
overridden with an absolute path, so no node can silently run as the sample identity.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

from consortium.processes import ManagedProcess, ensure_port_free
from consortium.topology import Node, Topology
from network.binaries import FabricBinaries

HEALTH_TIMEOUT = 60.0


def _orderer_list(paths: list[Path]) -> str:
    """Orderer config lists from env use the '[a, b]' form (viperutil's decode hook)."""
    return "[" + ", ".join(str(p) for p in paths) + "]"


def _all_tls_cas(topology: Topology) -> list[Path]:
    return [topology.tls_ca_cert(org) for org in [topology.orderer_org, *topology.member_orgs]]


def base_env(binaries: FabricBinaries) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ")}
    return {**keep, "FABRIC_CFG_PATH": str(binaries.sampleconfig), "FABRIC_LOGGING_SPEC": "info"}


def orderer_env(topology: Topology, binaries: FabricBinaries, node: Node) -> dict[str, str]:
    tls = topology.node_dir(node) / "tls"
    data = topology.data_dir(node.name)
    orderer_ca = [topology.tls_ca_cert(topology.orderer_org)]
    return {
        **base_env(binaries),
        "ORDERER_GENERAL_LISTENADDRESS": node.host,
        "ORDERER_GENERAL_LISTENPORT": str(node.port),
        "ORDERER_GENERAL_LOCALMSPID": node.org.msp_id,
        "ORDERER_GENERAL_LOCALMSPDIR": str(topology.node_dir(node) / "msp"),
        "ORDERER_GENERAL_BOOTSTRAPMETHOD": "none",
        "ORDERER_GENERAL_TLS_ENABLED": "true",
        "ORDERER_GENERAL_TLS_CERTIFICATE": str(tls / "server.crt"),
        "ORDERER_GENERAL_TLS_PRIVATEKEY": str(tls / "server.key"),
        "ORDERER_GENERAL_TLS_ROOTCAS": _orderer_list([tls / "ca.crt"]),
        "ORDERER_GENERAL_TLS_CLIENTAUTHREQUIRED": "true",
        "ORDERER_GENERAL_TLS_CLIENTROOTCAS": _orderer_list(_all_tls_cas(topology)),
        "ORDERER_GENERAL_CLUSTER_CLIENTCERTIFICATE": str(tls / "server.crt"),
        "ORDERER_GENERAL_CLUSTER_CLIENTPRIVATEKEY": str(tls / "server.key"),
        "ORDERER_GENERAL_CLUSTER_ROOTCAS": _orderer_list([tls / "ca.crt"]),
        "ORDERER_CHANNELPARTICIPATION_ENABLED": "true",
        "ORDERER_ADMIN_LISTENADDRESS": f"{node.host}:{node.second_port}",
        "ORDERER_ADMIN_TLS_ENABLED": "true",
        "ORDERER_ADMIN_TLS_CERTIFICATE": str(tls / "server.crt"),
        "ORDERER_ADMIN_TLS_PRIVATEKEY": str(tls / "server.key"),
        "ORDERER_ADMIN_TLS_ROOTCAS": _orderer_list([tls / "ca.crt"]),
        "ORDERER_ADMIN_TLS_CLIENTAUTHREQUIRED": "true",
        "ORDERER_ADMIN_TLS_CLIENTROOTCAS": _orderer_list(orderer_ca),
        "ORDERER_OPERATIONS_LISTENADDRESS": f"{node.host}:{node.ops_port}",
        "ORDERER_OPERATIONS_TLS_ENABLED": "false",
        "ORDERER_METRICS_PROVIDER": "prometheus",
        "ORDERER_FILELEDGER_LOCATION": str(data / "ledger"),
        "ORDERER_CONSENSUS_WALDIR": str(data / "etcdraft" / "wal"),
        "ORDERER_CONSENSUS_SNAPDIR": str(data / "etcdraft" / "snapshot"),
    }


def peer_env(topology: Topology, binaries: FabricBinaries, node: Node) -> dict[str, str]:
    tls = topology.node_dir(node) / "tls"
    data = topology.data_dir(node.name)
    builders = f"[{{name: ccaas_builder, path: {binaries.builder_dir}, propagateEnvironment: []}}]"
    return {
        **base_env(binaries),
        "CORE_PEER_ID": node.tls_hostname,
        "CORE_PEER_ADDRESS": node.address,
        "CORE_PEER_LISTENADDRESS": node.address,
        "CORE_PEER_CHAINCODEADDRESS": f"{node.host}:{node.second_port}",
        "CORE_PEER_CHAINCODELISTENADDRESS": f"{node.host}:{node.second_port}",
        "CORE_PEER_GOSSIP_BOOTSTRAP": node.address,
        "CORE_PEER_GOSSIP_EXTERNALENDPOINT": node.address,
        # A peer that joins a channel first cannot yet authenticate the other orgs' anchor peers ("could not acquire
        # policy manager"); it retries after reconnectInterval, 25 s by default. Retry quickly on one machine.
        "CORE_PEER_GOSSIP_RECONNECTINTERVAL": "2s",
        "CORE_PEER_LOCALMSPID": node.org.msp_id,
        "CORE_PEER_MSPCONFIGPATH": str(topology.node_dir(node) / "msp"),
        "CORE_PEER_TLS_ENABLED": "true",
        "CORE_PEER_TLS_CERT_FILE": str(tls / "server.crt"),
        "CORE_PEER_TLS_KEY_FILE": str(tls / "server.key"),
        "CORE_PEER_TLS_ROOTCERT_FILE": str(tls / "ca.crt"),
        "CORE_PEER_TLS_CLIENTAUTHREQUIRED": "true",
        # The peer reads this list with viper: whitespace separated.
        "CORE_PEER_TLS_CLIENTROOTCAS_FILES": " ".join(str(p) for p in _all_tls_cas(topology)),
        "CORE_PEER_TLS_CLIENTCERT_FILE": str(tls / "server.crt"),
        "CORE_PEER_TLS_CLIENTKEY_FILE": str(tls / "server.key"),
        "CORE_PEER_GATEWAY_ENABLED": "true",
        "CORE_PEER_FILESYSTEMPATH": str(data / "ledger"),
        "CORE_LEDGER_SNAPSHOTS_ROOTDIR": str(data / "snapshots"),
        "CORE_OPERATIONS_LISTENADDRESS": f"{node.host}:{node.ops_port}",
        "CORE_OPERATIONS_TLS_ENABLED": "false",
        "CORE_METRICS_PROVIDER": "prometheus",
        # No container engine: an empty endpoint keeps the peer from registering a Docker health check, and
        # chaincode runs only through our external builder (chaincode-as-a-service).
        "CORE_VM_ENDPOINT": "",
        "CORE_CHAINCODE_EXTERNALBUILDERS": builders,
    }


def process(topology: Topology, node: Node) -> ManagedProcess:
    return ManagedProcess(node.name, topology.pid_file(node.name), topology.log_file(node.name))


def healthy(node: Node) -> bool:
    try:
        with urllib.request.urlopen(node.ops_url + "/healthz", timeout=2) as resp:
            return bool(json.load(resp).get("status") == "OK")
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start(topology: Topology, binaries: FabricBinaries, node: Node) -> bool:
    """Start the node unless it runs already. Returns True when it started it. Does not wait for health."""
    proc = process(topology, node)
    if proc.running():
        return False
    for port in (node.port, node.second_port, node.ops_port):
        ensure_port_free(node.name, node.host, port)
    topology.data_dir(node.name).mkdir(parents=True, exist_ok=True)
    if node.kind == "orderer":
        proc.start([binaries.tool("orderer")], orderer_env(topology, binaries, node))
    else:
        proc.start([binaries.tool("peer"), "node", "start"], peer_env(topology, binaries, node))
    return True


def listening(node: Node) -> bool:
    """Whether the node's gRPC port accepts connections (the operations server can answer before it does)."""
    try:
        with socket.create_connection((node.host, node.port), timeout=1):
            return True
    except OSError:
        return False


def wait_healthy(topology: Topology, node: Node, timeout: float = HEALTH_TIMEOUT) -> None:
    process(topology, node).wait_until(lambda: healthy(node) and listening(node), "healthy and listening", timeout)
