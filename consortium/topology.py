"""The consortium as data: orgs, nodes, channels, addresses and where each node's files live.

Everything else in `network` reads this model; nothing else knows a port number or a crypto path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import yaml

from consortium.errors import NetworkError
from consortium.secrets import read_secret

DEFINITION_FILE = Path(__file__).with_name("consortium.yaml")
REPO_ROOT = Path(__file__).resolve().parent.parent

NodeKind = Literal["orderer", "peer"]

# Port offsets from the port base. Each node owns a block of ten ports.
ORDERER_BLOCK = 0  # orderer i: base + 10*i + {0 listen, 1 admin, 2 operations}
PEER_BLOCK = 100  # peer j: base + 100 + 10*j + {0 listen, 1 chaincode, 2 operations}
CHAINCODE_PORT = 200
REDIS_PORT = 300
POSTGRES_PORT = 301
GATEWAY_BLOCK = 400  # gateway j: base + 400 + j

REDIS_ADMIN_USER = "careledger-admin"


class UnknownName(NetworkError, KeyError):
    """An org or node name the consortium does not have."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


@dataclass(frozen=True)
class Org:
    name: str
    msp_id: str
    subdomain: str
    domain: str
    kind: str  # orderer | provider | insurer | manufacturer

    @property
    def is_orderer(self) -> bool:
        return self.kind == "orderer"

    @property
    def org_type_dir(self) -> str:
        return "ordererOrganizations" if self.is_orderer else "peerOrganizations"


@dataclass(frozen=True)
class Node:
    short: str  # o1, peer0
    kind: NodeKind
    org: Org
    host: str
    port: int  # gRPC listen port (orderer: cluster + broadcast/deliver; peer: endorser/gateway/deliver)
    second_port: int  # orderer: channel participation admin; peer: chaincode listener
    ops_port: int  # operations: /healthz, /metrics

    @property
    def name(self) -> str:
        """A short unique name for logs and status, e.g. ``peer0.hospital``."""
        return f"{self.short}.{self.org.subdomain}"

    @property
    def tls_hostname(self) -> str:
        return f"{self.short}.{self.org.domain}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ops_url(self) -> str:
        """The operations service (/healthz, /metrics, /logspec): HTTPS, and only with a client certificate."""
        return f"https://{self.host}:{self.ops_port}"

    @property
    def ports(self) -> tuple[int, int, int]:
        """Every port the node listens on."""
        return (self.port, self.second_port, self.ops_port)


@dataclass(frozen=True)
class Ordering:
    batch_timeout: str
    max_message_count: int
    absolute_max_bytes: str
    preferred_max_bytes: str
    tick_interval: str
    election_tick: int
    heartbeat_tick: int


class Topology:
    """The consortium definition rendered for one run folder and one port base."""

    def __init__(self, definition: dict[str, Any], home: Path, port_base: int) -> None:
        self.definition = definition
        self.home = home
        self.port_base = port_base
        self.domain: str = definition["domain"]
        self.host: str = definition["host"]
        self.fabric_version: str = definition["fabric"]["version"]
        self.chaincode_name: str = definition["chaincode"]["name"]
        o = definition["ordering"]
        self.ordering = Ordering(
            batch_timeout=o["batch_timeout"],
            max_message_count=int(o["max_message_count"]),
            absolute_max_bytes=o["absolute_max_bytes"],
            preferred_max_bytes=o["preferred_max_bytes"],
            tick_interval=o["tick_interval"],
            election_tick=int(o["election_tick"]),
            heartbeat_tick=int(o["heartbeat_tick"]),
        )

    # ----- orgs and nodes -------------------------------------------------------------------------------------

    def _org(self, spec: dict[str, Any], kind: str) -> Org:
        sub = spec["subdomain"]
        return Org(
            name=spec["name"],
            msp_id=spec["msp_id"],
            subdomain=sub,
            domain=f"{sub}.{self.domain}",
            kind=kind,
        )

    @cached_property
    def orderer_org(self) -> Org:
        o = self.definition["ordering"]
        return self._org({"name": o["org"], "msp_id": o["msp_id"], "subdomain": o["subdomain"]}, "orderer")

    @cached_property
    def member_orgs(self) -> list[Org]:
        return [self._org(spec, spec["kind"]) for spec in self.definition["orgs"]]

    @cached_property
    def chaincode_tls_org(self) -> Org:
        """A TLS-only identity for the chaincode server; it is a member of no channel."""
        sub = self.definition["chaincode"]["tls_subdomain"]
        return Org(name="ChaincodeServer", msp_id="", subdomain=sub, domain=f"{sub}.{self.domain}", kind="chaincode")

    def org(self, name: str) -> Org:
        for org in self.member_orgs:
            if name in (org.name, org.msp_id):
                return org
        raise UnknownName(
            f"there is no member org {name!r}; the members are {', '.join(o.name for o in self.member_orgs)}"
        )

    @cached_property
    def orderers(self) -> list[Node]:
        base = self.port_base + ORDERER_BLOCK
        return [
            Node(short, "orderer", self.orderer_org, self.host, base + 10 * i, base + 10 * i + 1, base + 10 * i + 2)
            for i, short in enumerate(self.definition["ordering"]["nodes"])
        ]

    @cached_property
    def peers(self) -> list[Node]:
        base = self.port_base + PEER_BLOCK
        return [
            Node("peer0", "peer", org, self.host, base + 10 * j, base + 10 * j + 1, base + 10 * j + 2)
            for j, org in enumerate(self.member_orgs)
        ]

    @property
    def nodes(self) -> list[Node]:
        return [*self.orderers, *self.peers]

    def peer_of(self, org: Org | str) -> Node:
        name = org if isinstance(org, str) else org.name
        target = self.org(name)
        return next(p for p in self.peers if p.org == target)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise UnknownName(f"there is no node {name!r}; the nodes are {', '.join(n.name for n in self.nodes)}")

    # ----- channels -------------------------------------------------------------------------------------------

    @cached_property
    def channels(self) -> dict[str, list[Org]]:
        return {ch: [self.org(m) for m in members] for ch, members in self.definition["channels"].items()}

    @property
    def identity_systems(self) -> tuple[str, ...]:
        """The person identifier systems of the consortium, in priority order."""
        return tuple(str(s) for s in self.definition.get("patient_identity") or [])

    @property
    def payers(self) -> dict[str, Any]:
        """Per insurer MSP: the names and identifiers claims may name it by."""
        return dict(self.definition.get("payers") or {})

    def channels_of(self, org: Org) -> list[str]:
        return [ch for ch, members in self.channels.items() if org in members]

    @cached_property
    def contracts(self) -> dict[str, list[str]]:
        """Channel name -> the contracts that serve on it."""
        declared = self.definition["chaincode"].get("contracts") or {}
        return {ch: list(declared.get(ch) or []) for ch in self.channels}

    # ----- other services -------------------------------------------------------------------------------------

    @property
    def chaincode_address(self) -> str:
        return f"{self.host}:{self.port_base + CHAINCODE_PORT}"

    @property
    def redis_port(self) -> int:
        return self.port_base + REDIS_PORT

    # Redis has no default user: each member org has its own (limited to its own keys, see consortium.redis_keys)
    # and the set-up and operators have an admin user. Passwords are secret files made by `careledger network up`.

    def redis_user(self, org: Org) -> str:
        return org.msp_id

    def redis_password_file(self, org: Org) -> Path:
        return self.gateway_home(org) / "redis.password"

    @property
    def redis_dir(self) -> Path:
        """Redis's users (ACL file) and the admin password."""
        return self.home / "redis"

    @property
    def redis_admin_password_file(self) -> Path:
        return self.redis_dir / "admin.password"

    @property
    def redis_acl_file(self) -> Path:
        return self.redis_dir / "users.acl"

    def _redis_url(self, user: str, password_file: Path) -> str:
        password = read_secret(password_file, f"the Redis password of {user}").decode().strip()
        return f"redis://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:{self.redis_port}/0"

    def redis_url_for(self, org: Org | str) -> str:
        """The URL an org's processes connect to Redis with: the org's own user, which reaches only its keys."""
        target = self.org(org) if isinstance(org, str) else org
        return self._redis_url(self.redis_user(target), self.redis_password_file(target))

    @property
    def redis_admin_url(self) -> str:
        """The admin user's URL: for the set-up, operators and tests, never for an org's processes."""
        return self._redis_url(REDIS_ADMIN_USER, self.redis_admin_password_file)

    @property
    def postgres_port(self) -> int:
        return self.port_base + POSTGRES_PORT

    @property
    def postgres_passfile(self) -> Path:
        """The password of the run folder's PostgreSQL, as a libpq password file (0600; made at set-up)."""
        return self.home / "postgres" / "pgpass"

    def postgres_url(self, database: str) -> str:
        """A database of the run folder's PostgreSQL, which `careledger network up` starts."""
        return f"postgresql://careledger@{self.host}:{self.postgres_port}/{database}?passfile={self.postgres_passfile}"

    def gateway_port(self, org: Org) -> int:
        return self.port_base + GATEWAY_BLOCK + self.member_orgs.index(org)

    # ----- files ----------------------------------------------------------------------------------------------

    @property
    def crypto_dir(self) -> Path:
        return self.home / "crypto"

    def org_dir(self, org: Org) -> Path:
        return self.crypto_dir / org.org_type_dir / org.domain

    def org_msp_dir(self, org: Org) -> Path:
        return self.org_dir(org) / "msp"

    def tls_ca_cert(self, org: Org) -> Path:
        return self.org_dir(org) / "tlsca" / f"tlsca.{org.domain}-cert.pem"

    def gateway_tls_dir(self, org: Org) -> Path:
        """The org's FHIR gateway TLS identity: server certificate, and client certificate for org-to-org calls."""
        return self.org_dir(org) / "gateway" / "tls"

    def gateway_home(self, org: Org) -> Path:
        """Where the org's gateway and workers keep its store and keys."""
        return self.home / "gateway" / org.name

    def master_key_file(self, org: Org) -> Path:
        """The org's master key (wraps every patient's data key); production: a KMS."""
        return self.gateway_home(org) / "master.key"

    def token_issuer_key_file(self, org: Org) -> Path:
        """The development token issuer's signing key (stands in for the org's OAuth2 server)."""
        return self.gateway_home(org) / "token-issuer.key"

    def token_issuer_public_key_file(self, org: Org) -> Path:
        return self.gateway_home(org) / "token-issuer.pub"

    @property
    def pseudonym_key_file(self) -> Path:
        """The consortium pseudonym key every member holds (production: distributed out of band)."""
        return self.home / "consortium" / "pseudonym.key"

    def node_dir(self, node: Node) -> Path:
        sub = "orderers" if node.kind == "orderer" else "peers"
        return self.org_dir(node.org) / sub / node.tls_hostname

    def user_dir(self, org: Org, user: str = "Admin") -> Path:
        return self.org_dir(org) / "users" / f"{user}@{org.domain}"

    def data_dir(self, name: str) -> Path:
        return self.home / "data" / name

    def log_file(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.home / "pids" / f"{name}.pid"

    @property
    def supervisor_dir(self) -> Path:
        """supervisord's configuration, socket and one program file per gateway, listener and worker."""
        return self.home / "supervisor"

    @property
    def channel_artifacts_dir(self) -> Path:
        return self.home / "channels"

    @property
    def generated_config_dir(self) -> Path:
        return self.home / "config"


def load(home: Path | None = None, port_base: int | None = None) -> Topology:
    """Load the consortium for a run folder (CARELEDGER_HOME) and port base (CARELEDGER_PORT_BASE)."""
    definition = yaml.safe_load(DEFINITION_FILE.read_text())
    home = home or Path(os.environ.get("CARELEDGER_HOME", REPO_ROOT / "run"))
    if port_base is None:
        port_base = int(os.environ.get("CARELEDGER_PORT_BASE", definition["port_base"]))
    return Topology(definition, home.resolve(), port_base)
