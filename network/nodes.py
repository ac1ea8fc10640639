"""Orderer and peer processes: Fabric's sampleconfig as the base, every per-node setting as an env override.

Each node reads only its org's home (`<run>/orgs/<Org>/`): its identity, its TLS pair, its org's TLS CA, its ledger.
Other orgs' TLS CAs are not configured: Fabric adds every channel member's TLS root CA, from the channel
configuration, to a node's trusted client roots as it joins channels and as their configuration changes.

Nothing is copied from sampleconfig into the run folder: FABRIC_CFG_PATH points at the cached copy of the
module's sampleconfig, and every path setting that would resolve inside it (MSP, TLS, ledger, WAL, snapshots) is
overridden with an absolute path, so no node can silently run as the sample identity.

Operations endpoints (/healthz, /metrics, /logspec, /version) are served over TLS with the node's TLS certificate
and require a client certificate from the node's own org's TLS CA (Fabric refuses the TLS handshake without one, for
every path). The tooling presents the org admin's TLS client certificate.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from consortium.processes import ManagedProcess, accepts, ensure_port_free
from consortium.secrets import private_dir
from consortium.topology import Node, Topology
from network.binaries import FabricBinaries

HEALTH_TIMEOUT = 60.0


def _orderer_list(paths: list[Path]) -> str:
    """Orderer config lists from env use the '[a, b]' form (viperutil's decode hook)."""
    return "[" + ", ".join(str(p) for p in paths) + "]"


def base_env(binaries: FabricBinaries) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ")}
    return {**keep, "FABRIC_CFG_PATH": str(binaries.sampleconfig), "FABRIC_LOGGING_SPEC": "info"}


def orderer_env(topology: Topology, binaries: FabricBinaries, node: Node) -> dict[str, str]:
    tls = topology.node_dir(node) / "tls"
    data = topology.node_data_dir(node)
    orderer_ca = [tls / "ca.crt"]
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
        "ORDERER_GENERAL_TLS_CLIENTROOTCAS": _orderer_list(orderer_ca),
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
        "ORDERER_OPERATIONS_TLS_ENABLED": "true",
        "ORDERER_OPERATIONS_TLS_CERTIFICATE": str(tls / "server.crt"),
        "ORDERER_OPERATIONS_TLS_PRIVATEKEY": str(tls / "server.key"),
        "ORDERER_OPERATIONS_TLS_CLIENTAUTHREQUIRED": "true",
        "ORDERER_OPERATIONS_TLS_CLIENTROOTCAS": _orderer_list(orderer_ca),
        "ORDERER_METRICS_PROVIDER": "prometheus",
        "ORDERER_FILELEDGER_LOCATION": str(data / "ledger"),
        "ORDERER_CONSENSUS_WALDIR": str(data / "etcdraft" / "wal"),
        "ORDERER_CONSENSUS_SNAPDIR": str(data / "etcdraft" / "snapshot"),
    }


def peer_env(topology: Topology, binaries: FabricBinaries, node: Node) -> dict[str, str]:
    tls = topology.node_dir(node) / "tls"
    data = topology.node_data_dir(node)
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
        # A block whose private data a peer lacks waits this long for it before committing without it (it is fetched
        # later by reconciliation). A signed transaction sent again after an unknown outcome (a killed orderer or
        # gateway) is in a later block too, invalid as a duplicate, its private data gone from the transient store:
        # with the default 60 s every write on the channel waited a minute behind it. Endorsers hold the private data
        # of their own transactions, so nothing valid needs long.
        "CORE_PEER_GOSSIP_PVTDATA_PULLRETRYTHRESHOLD": "5s",
        # Such a copy is invalid whatever its private data: do not wait for that data at all (reconciliation may
        # fetch it later). Otherwise every block holding a copy waited the 5 s above, commits slowed, more sends
        # timed out and were sent again, and the channel crawled (one block every 6 s, seen under load).
        "CORE_PEER_GOSSIP_PVTDATA_SKIPPULLINGINVALIDTRANSACTIONSDURINGCOMMIT": "true",
        "CORE_PEER_LOCALMSPID": node.org.msp_id,
        "CORE_PEER_MSPCONFIGPATH": str(topology.node_dir(node) / "msp"),
        "CORE_PEER_TLS_ENABLED": "true",
        "CORE_PEER_TLS_CERT_FILE": str(tls / "server.crt"),
        "CORE_PEER_TLS_KEY_FILE": str(tls / "server.key"),
        "CORE_PEER_TLS_ROOTCERT_FILE": str(tls / "ca.crt"),
        "CORE_PEER_TLS_CLIENTAUTHREQUIRED": "true",
        # The peer reads this list with viper: whitespace separated. Its own org's TLS CA (its admin and clients);
        # channel members' CAs come from the channel configurations.
        "CORE_PEER_TLS_CLIENTROOTCAS_FILES": str(tls / "ca.crt"),
        "CORE_PEER_TLS_CLIENTCERT_FILE": str(tls / "server.crt"),
        "CORE_PEER_TLS_CLIENTKEY_FILE": str(tls / "server.key"),
        "CORE_PEER_GATEWAY_ENABLED": "true",
        "CORE_PEER_FILESYSTEMPATH": str(data / "ledger"),
        "CORE_LEDGER_SNAPSHOTS_ROOTDIR": str(data / "snapshots"),
        "CORE_OPERATIONS_LISTENADDRESS": f"{node.host}:{node.ops_port}",
        "CORE_OPERATIONS_TLS_ENABLED": "true",
        "CORE_OPERATIONS_TLS_CERT_FILE": str(tls / "server.crt"),
        "CORE_OPERATIONS_TLS_KEY_FILE": str(tls / "server.key"),
        "CORE_OPERATIONS_TLS_CLIENTAUTHREQUIRED": "true",
        "CORE_OPERATIONS_TLS_CLIENTROOTCAS_FILES": str(tls / "ca.crt"),
        "CORE_METRICS_PROVIDER": "prometheus",
        # No container engine: an empty endpoint keeps the peer from registering a Docker health check, and
        # chaincode runs only through our external builder (chaincode-as-a-service).
        "CORE_VM_ENDPOINT": "",
        "CORE_CHAINCODE_EXTERNALBUILDERS": builders,
    }


def process(topology: Topology, node: Node) -> ManagedProcess:
    return ManagedProcess(node.name, topology.pid_file(node.name), topology.log_file(node.name))


def client_context(topology: Topology, node: Node) -> ssl.SSLContext:
    """TLS to one of the node's endpoints as its org's admin: the node's org TLS CA, the admin's client certificate."""
    ctx = ssl.create_default_context(cafile=str(topology.own_tls_ca_cert(node.org)))
    admin_tls = topology.user_dir(node.org) / "tls"
    ctx.load_cert_chain(admin_tls / "client.crt", admin_tls / "client.key")
    return ctx


def operations_get(topology: Topology, node: Node, path: str, timeout: float = 2.0) -> bytes:
    """GET an operations endpoint (e.g. /metrics) over mutual TLS."""
    ctx = client_context(topology, node)
    with urllib.request.urlopen(node.ops_url + path, context=ctx, timeout=timeout) as resp:
        return bytes(resp.read())


def healthy(topology: Topology, node: Node) -> bool:
    try:
        return bool(json.loads(operations_get(topology, node, "/healthz")).get("status") == "OK")
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start(topology: Topology, binaries: FabricBinaries, node: Node) -> bool:
    """Start the node unless it runs already. Returns True when it started it. Does not wait for health."""
    proc = process(topology, node)
    if proc.running():
        return False
    for port in node.ports:
        # A node just stopped (a restart with renewed certificates, a fault) may hold its ports a moment longer.
        ensure_port_free(node.name, node.host, port, wait=10.0)
    data = topology.node_data_dir(node)
    private_dir(data)
    launcher = topology.launcher_of(node.org)
    if node.kind == "orderer":
        proc.start([binaries.tool("orderer")], orderer_env(topology, binaries, node), launcher=launcher)
    else:
        # The peer keeps installed chaincode packages (they hold the chaincode server's client key) in this folder;
        # it would create it group-readable, and keeps the mode of one that exists.
        private_dir(data / "ledger" / "lifecycle" / "chaincodes")
        proc.start([binaries.tool("peer"), "node", "start"], peer_env(topology, binaries, node), launcher=launcher)
    return True


def serving(topology: Topology, node: Node) -> bool:
    """Whether the node's gRPC server completes a TLS handshake on its main port.

    Accepting a TCP connection is not enough: Fabric opens the main port's socket early but serves it last, after
    its other listeners (an orderer's channel participation admin server, a peer's chaincode listener) are up.
    """
    ctx = client_context(topology, node)
    ctx.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((node.host, node.port), timeout=1) as raw,
            ctx.wrap_socket(raw, server_hostname=node.host),
        ):
            return True
    except OSError:
        return False


def ready(topology: Topology, node: Node) -> bool:
    """Every listener the node has answers: main (gRPC), second (orderer admin / peer chaincode), operations."""
    return all(accepts(node.host, p) for p in node.ports) and healthy(topology, node) and serving(topology, node)


def wait_healthy(topology: Topology, node: Node, timeout: float = HEALTH_TIMEOUT) -> None:
    process(topology, node).wait_until(lambda: ready(topology, node), "serving on every port", timeout)
