"""An org's definition: everything other orgs need to know about it, and nothing secret.

The org writes it from its own home (`publish`); others receive the file (`import_file`). It holds the org's MSP
root and TLS root CA certificates, its NodeOU configuration, its admins' certificates (so others can tell whose
signature a config update carries), and its endpoints: peers and anchor peers, the gateway, and for an ordering org
its orderers with their consenter TLS certificates. In Fabric terms it is what the org's `ConfigGroup` in a channel
configuration is made of (what `configtxgen -printOrg` prints), in a form of our own that a person can read.

Published, it lands in `<run>/consortium/orgs/<Org>/`: `org.json`, and a public MSP folder (cacerts, tlscacerts,
config.yaml) that configtxgen reads for genesis blocks; an ordering org adds `nodes/<node>/tls.pem`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from consortium.errors import NetworkError
from consortium.topology import Org, Topology

FORMAT = "careledger-org/1"
KINDS = ("provider", "insurer", "manufacturer")
NAME_PATTERN = re.compile(r"^[A-Z][A-Za-z0-9]{1,40}Org$")
NODE_OUS = {"client": "client", "peer": "peer", "admin": "admin", "orderer": "orderer"}


class BadDefinition(NetworkError):
    """An org definition file that cannot be used, with the reason."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Consenter:
    host: str
    port: int
    tls_cert: str  # PEM


@dataclass(frozen=True)
class OrgDefinition:
    name: str
    msp_id: str
    kind: str
    subdomain: str
    domain: str
    host: str
    root_certs: list[str]  # PEM
    tls_root_certs: list[str]
    admins: list[str]
    anchor_peers: list[Endpoint] = field(default_factory=list)
    gateway: str = ""
    orderer_endpoints: list[str] = field(default_factory=list)
    consenters: list[Consenter] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "msp_id": self.msp_id,
            "kind": self.kind,
            "subdomain": self.subdomain,
            "domain": self.domain,
            "host": self.host,
            "root_certs": self.root_certs,
            "tls_root_certs": self.tls_root_certs,
            "node_ous": {"enable": True, **NODE_OUS},
            "admins": self.admins,
            "endpoints": {
                "anchor_peers": [{"host": e.host, "port": e.port} for e in self.anchor_peers],
                "gateway": self.gateway,
                "orderers": self.orderer_endpoints,
                "consenters": [{"host": c.host, "port": c.port, "tls_cert": c.tls_cert} for c in self.consenters],
            },
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> OrgDefinition:
        if doc.get("format") != FORMAT:
            raise BadDefinition(f"not a CareLedger org definition (format {doc.get('format')!r}, expected {FORMAT})")
        try:
            ends = doc.get("endpoints") or {}
            d = cls(
                name=str(doc["name"]),
                msp_id=str(doc["msp_id"]),
                kind=str(doc["kind"]),
                subdomain=str(doc["subdomain"]),
                domain=str(doc["domain"]),
                host=str(doc["host"]),
                root_certs=list(doc["root_certs"]),
                tls_root_certs=list(doc["tls_root_certs"]),
                admins=list(doc.get("admins") or []),
                anchor_peers=[Endpoint(str(e["host"]), int(e["port"])) for e in ends.get("anchor_peers") or []],
                gateway=str(ends.get("gateway") or ""),
                orderer_endpoints=list(ends.get("orderers") or []),
                consenters=[
                    Consenter(str(c["host"]), int(c["port"]), str(c["tls_cert"])) for c in ends.get("consenters") or []
                ],
            )
        except (KeyError, TypeError, ValueError) as e:
            raise BadDefinition(f"the org definition lacks or garbles {e}") from None
        d.check()
        return d

    def check(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise BadDefinition(f"org name {self.name!r}: letters and digits, starting upper-case, ending in 'Org'")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{0,40}MSP", self.msp_id):
            raise BadDefinition(f"MSP id {self.msp_id!r}: letters and digits ending in 'MSP'")
        if self.kind not in (*KINDS, "orderer"):
            raise BadDefinition(f"kind {self.kind!r}: one of {', '.join(KINDS)}")
        if not self.root_certs or not self.tls_root_certs:
            raise BadDefinition("an org definition needs its root CA and TLS root CA certificates")
        for pem_text in [*self.root_certs, *self.tls_root_certs, *self.admins]:
            try:
                x509.load_pem_x509_certificate(pem_text.encode())
            except ValueError as e:
                raise BadDefinition(f"a certificate in the definition does not parse: {e}") from None
        for pem_text in [*self.admins]:
            if "PRIVATE KEY" in pem_text:
                raise BadDefinition("the definition carries a private key: it must never leave the org's home")

    def org(self, topology: Topology) -> Org:
        return Org(self.name, self.msp_id, self.subdomain, self.domain, self.kind, self.host)


def _read(path: Path) -> str:
    return path.read_text()


def of_org(topology: Topology, org: Org) -> OrgDefinition:
    """The org's definition, read from its own home (what the org itself publishes)."""
    base = topology.org_dir(org)
    root = _read(next((base / "ca").glob("*-cert.pem")))
    tls_root = _read(topology.own_tls_ca_cert(org))
    admin = _read(next((topology.user_dir(org) / "msp" / "signcerts").glob("*.pem")))
    d = OrgDefinition(
        name=org.name,
        msp_id=org.msp_id,
        kind=org.kind,
        subdomain=org.subdomain,
        domain=org.domain,
        host=org.host,
        root_certs=[root],
        tls_root_certs=[tls_root],
        admins=[admin],
    )
    if org.is_orderer:
        orderers = topology.orderers
        return dataclasses.replace(
            d,
            orderer_endpoints=[n.address for n in orderers],
            consenters=[
                Consenter(n.host, n.port, _read(topology.node_dir(n) / "tls" / "server.crt")) for n in orderers
            ],
        )
    peer = topology.peer_of(org)
    return dataclasses.replace(d, anchor_peers=[Endpoint(peer.host, peer.port)], gateway=topology.gateway_url(org))


def node_ous_yaml(ca_file: str) -> str:
    lines = ["NodeOUs:", "  Enable: true"]
    for role, ou in NODE_OUS.items():
        lines += [
            f"  {role.capitalize()}OUIdentifier:",
            f"    Certificate: {ca_file}",
            f"    OrganizationalUnitIdentifier: {ou}",
        ]
    return "\n".join(lines) + "\n"


def write_public(topology: Topology, d: OrgDefinition) -> Path:
    """Write the definition into the consortium's public folder; returns org.json's path."""
    org = d.org(topology)
    msp = topology.public_msp_dir(org)
    for sub in ("cacerts", "tlscacerts"):
        (msp / sub).mkdir(parents=True, exist_ok=True)
    (msp / "cacerts" / "ca.pem").write_text(d.root_certs[0])
    (msp / "tlscacerts" / "tlsca.pem").write_text(d.tls_root_certs[0])
    (msp / "config.yaml").write_text(node_ous_yaml("cacerts/ca.pem"))
    for c in d.consenters:
        node = next((n for n in topology.orderers if n.host == c.host and n.port == c.port), None)
        if node is not None:
            path = topology.public_tls_cert(node)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(c.tls_cert)
    path = topology.org_definition_file(org)
    tmp = path.with_name(".org.json.new")
    tmp.write_text(json.dumps(d.to_json(), indent=2) + "\n")
    tmp.replace(path)
    return path


def publish(topology: Topology, org: Org) -> Path:
    """The org publishes its definition (from its own home) into the consortium's public folder."""
    return write_public(topology, of_org(topology, org))


def load_file(path: Path) -> OrgDefinition:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadDefinition(f"there is no org definition file {path}") from None
    except json.JSONDecodeError as e:
        raise BadDefinition(f"{path} is not JSON: {e}") from None
    return OrgDefinition.from_json(doc)


def published(topology: Topology, org: Org) -> OrgDefinition:
    return load_file(topology.org_definition_file(org))


def import_definition(topology: Topology, d: OrgDefinition) -> Org:
    """Make an org known to this run folder's consortium definition: its public files and an overlay entry.
    Importing the same definition again changes nothing; another org under the same name or MSP id is refused."""
    for existing in topology.all_orgs:
        same = existing.name == d.name or existing.msp_id == d.msp_id
        if same and (existing.name, existing.msp_id) != (d.name, d.msp_id):
            raise BadDefinition(f"{d.name} ({d.msp_id}) clashes with the member {existing.name} ({existing.msp_id})")
        if same and topology.org_definition_file(existing).exists():
            have = published(topology, existing)
            if have.root_certs != d.root_certs or have.tls_root_certs != d.tls_root_certs:
                raise BadDefinition(f"{d.name} is already known here with other CA certificates")
    write_public(topology, d)
    if not topology.has_org(d.name):
        with topology.editing_overlay() as overlay:
            orgs = overlay.setdefault("orgs", [])
            if not any(o.get("name") == d.name for o in orgs):
                orgs.append(
                    {"name": d.name, "msp_id": d.msp_id, "subdomain": d.subdomain, "kind": d.kind, "host": d.host}
                )
    return topology.org(d.name)
