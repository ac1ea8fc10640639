"""Every certificate the consortium's orgs hold, with its expiry; and renewing an org's node and TLS certificates
while the network runs.

Renewal issues new leaf certificates from the org's own CAs, in its own home, with cryptogen's profile
(network/crypto.py), and puts them to use one node at a time. By default each certificate is re-issued for the key it
certifies (a renewal before expiry); with `new_keys` every node also gets new key pairs (after a key may have leaked).

- a peer: new enrolment and TLS certificates, then one restart (its TLS certificate chains to the org's TLS root in
  the channel configuration, which does not change); the org's gateway re-reads its renewed TLS pair without a
  restart;
- an orderer: new enrolment and TLS certificates; its TLS certificate is also its consenter identity, written in every
  channel's configuration, so first a config update of the consenter set on every channel (signed by the ordering
  org's admin), then a restart, then the next orderer once this one serves and a Raft leader exists again. Two of
  three consenters keep ordering throughout. Orderers recognise each other's cluster connections by public key, so a
  renewed certificate for the same key is accepted both before and after the update and the orderer is never cut
  off (Fabric still treats the update as a rotation: a renewed Raft leader hands leadership over, and the others
  reconnect to the orderer, a moment in which a transaction may be dropped and is sent again). A new key is another
  matter: from the update on, the other consenters refuse the orderer's connections until it restarts with its new
  pair, so transactions it took in that window (a few seconds) never reach the Raft leader and are sent again by their
  clients (who wait for the commit, never for the orderer's receipt).

Not renewed here, though listed and warned about like any other: CA certificates (a new root is a new org definition
and a channel config update of its MSP), admin and client certificates (people's and applications' identities,
re-enrolled by their owners), and the chaincode server's pairs (carried in the org's chaincode package: a new
package is a new approval on every channel, which `careledger network up` does with the next chaincode upgrade).
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from consortium.errors import NetworkError
from consortium.secrets import replace_secret
from consortium.topology import Node, Org, Topology
from network import channels, crypto, membership, nodes, orgdef
from network.admin import Admin

WARN_DAYS = 30
Progress = Callable[[str], None]


@dataclass(frozen=True)
class CertInfo:
    org: str
    kind: str  # ca | tls ca | peer | orderer | peer tls | orderer tls | admin | admin tls | client | client tls | ...
    subject: str
    path: Path
    not_after: datetime.datetime
    serial: int

    def days_left(self, now: datetime.datetime | None = None) -> float:
        now = now or datetime.datetime.now(datetime.UTC)
        return (self.not_after - now).total_seconds() / 86400

    def expiring(self, days: int = WARN_DAYS, now: datetime.datetime | None = None) -> bool:
        return self.days_left(now) < days


def _info(org: Org, kind: str, path: Path) -> CertInfo | None:
    if not path.exists():
        return None
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    subject = str(cn[0].value) if cn else cert.subject.rfc4514_string()
    return CertInfo(org.name, kind, subject, path, cert.not_valid_after_utc, cert.serial_number)


def _signcert(msp: Path) -> Path:
    return next(iter(sorted((msp / "signcerts").glob("*.pem"))), msp / "signcerts" / "missing.pem")


def of_org(topology: Topology, org: Org) -> list[CertInfo]:
    """Every certificate in the org's home, each once: CAs, nodes (enrolment and TLS), admin, users, gateway,
    chaincode server."""
    base = topology.org_dir(org)
    found: list[CertInfo | None] = [
        _info(org, "ca", next(iter(sorted((base / "ca").glob("*-cert.pem"))), base / "ca" / "missing")),
        _info(org, "tls ca", topology.own_tls_ca_cert(org)),
    ]
    for node in topology.nodes_of(org):
        d = topology.node_dir(node)
        found += [_info(org, node.kind, _signcert(d / "msp")), _info(org, f"{node.kind} tls", d / "tls" / "server.crt")]
    users = base / "users"
    for user_dir in sorted(users.iterdir()) if users.exists() else []:
        role = "admin" if user_dir.name.startswith("Admin@") else "client"
        found += [
            _info(org, role, _signcert(user_dir / "msp")),
            _info(org, f"{role} tls", user_dir / "tls" / "client.crt"),
        ]
    if not org.is_orderer:
        found.append(_info(org, "gateway tls", topology.gateway_tls_dir(org) / "server.crt"))
        cc_tls = crypto.chaincode_tls_dir(topology, org)
        found.append(_info(org, "chaincode server tls", cc_tls / "server.crt"))
        found.append(_info(org, "chaincode client tls", cc_tls / "client.crt"))
    return [f for f in found if f is not None]


def inventory(topology: Topology, only: list[Org] | None = None) -> list[CertInfo]:
    out: list[CertInfo] = []
    for org in only or topology.all_orgs:
        if topology.crypto_dir(org).exists():
            out += of_org(topology, org)
    return out


# ----- renewal ---------------------------------------------------------------------------------------------------


def _renew_node_files(topology: Topology, node: Node, new_keys: bool) -> None:
    """New enrolment and TLS certificates for one node, for its keys or for new ones (files replaced atomically,
    key first)."""
    org = node.org
    d = topology.node_dir(node)
    enrol_ca = crypto.load_ca(topology.org_dir(org) / "ca")
    tls_ca = crypto.load_ca(topology.own_tls_ca_cert(org).parent)
    enrol_key = d / "msp" / "keystore" / "priv_sk"  # cryptogen's name for the key
    kept = _kept_key(enrol_key, new_keys)
    cert, key = crypto.issue(enrol_ca, node.tls_hostname, tls=False, ou=node.kind, key=kept)
    signcert = _signcert(d / "msp")
    if kept is None:
        replace_secret(enrol_key, crypto.key_pem(key))
    tmp = d / "msp" / f".{signcert.name}.new"  # not in signcerts/, where the node reads every file
    tmp.write_bytes(crypto.pem(cert))
    tmp.replace(signcert)
    san = [node.tls_hostname, node.short, *crypto.sans(org)]
    kept = _kept_key(d / "tls" / "server.key", new_keys)
    tls_cert, tls_key = crypto.issue(tls_ca, node.tls_hostname, tls=True, san=san, key=kept)
    crypto.write_pair(d / "tls", "server", tls_cert, tls_key)


def _kept_key(path: Path, new_keys: bool) -> ec.EllipticCurvePrivateKey | None:
    """The key a renewed certificate certifies again; None for a new one (asked for, or there is none yet)."""
    return None if new_keys or not path.exists() else crypto.load_key(path)


def _restart(admin: Admin, node: Node) -> None:
    t = admin.topology
    nodes.process(t, node).stop()
    nodes.start(t, admin.binaries, node)
    nodes.wait_healthy(t, node)


def _wait_orderer_back(admin: Admin, node: Node, timeout: float = 60.0) -> None:
    """Until every channel has a Raft leader again and this orderer holds as many blocks as the others."""
    t = admin.topology
    channels.wait_for_leaders(t, timeout)
    deadline = time.monotonic() + timeout
    for channel in t.channels:
        others = [o for o in t.orderers if o != node]
        target = max(_orderer_height(admin, o, channel) for o in others)
        while _orderer_height(admin, node, channel) < target:
            if time.monotonic() > deadline:
                raise NetworkError(f"{node.name} did not catch up on {channel} after its restart")
            time.sleep(0.2)


def _orderer_height(admin: Admin, orderer: Node, channel: str) -> int:
    out = admin.osnadmin(orderer, ["channel", "list", "--channelID", channel], f"height of {channel}")
    return int(json.loads(out[out.index("{") :])["height"])


def renew(admin: Admin, org_name: str, progress: Progress = print, new_keys: bool = False) -> list[CertInfo]:
    """Renew the org's node and TLS certificates (and its gateway's TLS pair), one node at a time, without
    stopping the consortium; `new_keys`: with new key pairs. Returns the certificates as they are afterwards."""
    t = admin.topology
    org = t.any_org(org_name)
    if org.is_orderer:
        for node in t.orderers:
            _renew_orderer(admin, node, progress, new_keys)
    else:
        for node in t.nodes_of(org):
            _renew_node_files(t, node, new_keys)
            _restart(admin, node)
            progress(f"{node.name}: new enrolment and TLS certificates{_keys(new_keys)}, restarted, healthy")
        tls_ca = crypto.load_ca(t.own_tls_ca_cert(org).parent)
        name, out = f"gateway.{org.domain}", t.gateway_tls_dir(org)
        kept = _kept_key(out / "server.key", new_keys)
        cert, key = crypto.issue(tls_ca, name, tls=True, san=[name, *crypto.sans(org)], key=kept)
        crypto.write_pair(out, "server", cert, key)
        progress(f"{org.name}'s gateway TLS pair re-issued (a running gateway takes it without a restart)")
    orgdef.publish(t, org)
    return of_org(t, org)


def _renew_orderer(admin: Admin, node: Node, progress: Progress, new_keys: bool) -> None:
    t = admin.topology
    _renew_node_files(t, node, new_keys)
    new_tls = (t.node_dir(node) / "tls" / "server.crt").read_bytes()
    for channel in t.channels:
        update = membership.propose_consenter_cert(admin, channel, node.host, node.port, new_tls)
        if update is None:
            continue
        membership.sign(admin, update, t.orderer_org.name)
        membership.submit(admin, update, t.orderer_org.name)
        progress(f"{channel}: consenter {node.name} now known by its new TLS certificate")
    _restart(admin, node)
    _wait_orderer_back(admin, node)
    progress(
        f"{node.name}: restarted with its new certificates{_keys(new_keys)}, caught up; Raft has a leader on every"
        " channel"
    )


def _keys(new_keys: bool) -> str:
    return " (new keys)" if new_keys else " (same keys)"
