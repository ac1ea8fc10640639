"""The consortium as data: orgs, nodes, channels, addresses and where each party's files live.

Everything else reads this model; nothing else knows a port number, a host or a file path.

The definition is the repository's consortium.yaml with the run folder's overlay (`<run>/consortium/overlay.yaml`)
merged over it. The tooling writes the overlay when membership changes (an org created, a channel joined or left)
and when a deployment places orgs on their own hosts; long-running processes pick changes up with `refresh()`.

Files, per party (see docs/OPERATIONS.md):

    <run>/orgs/<Org>/            an org's home: its keys and everything its nodes, gateway and workers read
        crypto/                  its identities (cryptogen for this org alone, then our own renewals)
        data/<node>/             its nodes' ledgers (orderers: also the Raft WAL and snapshots)
        gateway/                 its gateway's and workers' store, master key, token issuer, Redis password, ...
        chaincode/               its chaincode package, its chaincode server's TLS pair and config
    <run>/consortium/            public only: what orgs exchange
        overlay.yaml             membership and placement as the tooling knows it now
        orgs/<Org>/              each org's published definition (org.json) and public MSP folder
        chaincode/<channel>/     each chaincode definition the tooling proposed, by version
        updates/                 config-update envelopes passed between admins for signatures
    <run>/channels/              genesis blocks (public)
    <run>/redis, <run>/postgres, <run>/data/{redis,postgres}   shared services of this host
    <run>/logs, <run>/pids, <run>/supervisor                    the tooling's view of processes
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import yaml

from consortium.errors import NetworkError
from consortium.secrets import private_dir, read_secret

DEFINITION_FILE = Path(__file__).with_name("consortium.yaml")
REPO_ROOT = Path(__file__).resolve().parent.parent

NodeKind = Literal["orderer", "peer"]

# Port offsets from the port base. Each node owns a block of ten ports.
ORDERER_BLOCK = 0  # orderer i: base + 10*i + {0 listen, 1 admin, 2 operations}
PEER_BLOCK = 100  # org j's peer: base + 100 + 10*j + {0 listen, 1 chaincode, 2 operations, 3 chaincode server}
CHAINCODE_SERVER_OFFSET = 3  # the org's own chaincode-as-a-service process, in its peer's block
REDIS_PORT = 300
POSTGRES_PORT = 301
GATEWAY_BLOCK = 400  # org j's gateway: base + 400 + j
MAX_MEMBER_ORGS = 30  # peer blocks from base+100 must stay below redis at base+300

REDIS_ADMIN_USER = "careledger-admin"
OVERLAY_NAME = "overlay.yaml"


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
    host: str = "127.0.0.1"  # where its nodes, chaincode server and gateway listen
    netns: str = ""  # a Linux network namespace its processes run in ("" = the caller's)

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


def merge(definition: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """The definition with an overlay merged over it.

    `orgs` entries are matched by name: an existing org's fields are updated (e.g. its host), a new one is appended
    (so existing orgs keep their port blocks). `channels` entries replace that channel's member list. Any other
    mapping is merged key by key; anything else replaces.
    """
    out = copy.deepcopy(definition)
    for key, value in (overlay or {}).items():
        if key == "orgs":
            by_name = {o["name"]: o for o in out.setdefault("orgs", [])}
            for spec in value or []:
                if spec["name"] in by_name:
                    by_name[spec["name"]].update(spec)
                else:
                    out["orgs"].append(dict(spec))
                    by_name[spec["name"]] = out["orgs"][-1]
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged_dict(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merged_dict(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merged_dict(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class Topology:
    """The consortium definition rendered for one run folder and one port base."""

    _CACHED = ("orderer_org", "member_orgs", "orderers", "peers", "channels", "contracts")

    def __init__(self, definition: dict[str, Any], home: Path, port_base: int) -> None:
        self.base_definition = definition
        self.home = home
        self.port_base = port_base
        self.generation = 0  # incremented by every refresh() that found a changed overlay
        self._overlay_stamp = self._stamp()
        self._apply(merge(definition, self._read_overlay()))

    def _apply(self, definition: dict[str, Any]) -> None:
        self.definition = definition
        self.domain: str = definition["domain"]
        self.host: str = definition["host"]  # the default host of every org and service
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
        services = definition.get("services") or {}
        self.services_host: str = services.get("host") or self.host  # redis and postgres
        self.services_netns: str = services.get("netns") or ""
        for name in self._CACHED:
            self.__dict__.pop(name, None)

    # ----- the overlay ----------------------------------------------------------------------------------------

    @property
    def consortium_dir(self) -> Path:
        """Public material the orgs exchange: the overlay, org definitions, chaincode definitions, update files."""
        return self.home / "consortium"

    @property
    def overlay_file(self) -> Path:
        return self.consortium_dir / OVERLAY_NAME

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.overlay_file.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _read_overlay(self) -> dict[str, Any]:
        try:
            return dict(yaml.safe_load(self.overlay_file.read_text()) or {})
        except FileNotFoundError:
            return {}

    def refresh(self) -> bool:
        """Re-read the overlay if it changed since it was read; True when it did (then `generation` moves on).
        Cheap (one stat) when nothing changed, so long-running processes call it whenever they meet a name they do
        not know, and gateways every few seconds."""
        stamp = self._stamp()
        if stamp == self._overlay_stamp:
            return False
        self._overlay_stamp = stamp
        self._apply(merge(self.base_definition, self._read_overlay()))
        self.generation += 1
        return True

    @contextlib.contextmanager
    def editing_overlay(self) -> Iterator[dict[str, Any]]:
        """Change the overlay under a lock: yields its content, writes it back, then refreshes this topology."""
        self.consortium_dir.mkdir(parents=True, exist_ok=True)
        with (self.consortium_dir / ".overlay.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            overlay = self._read_overlay()
            yield overlay
            tmp = self.overlay_file.with_name(f".{OVERLAY_NAME}.{os.getpid()}")
            header = "# Written by the careledger tooling; merged over consortium/consortium.yaml.\n"
            tmp.write_text(header + yaml.safe_dump(overlay, sort_keys=False))
            os.replace(tmp, self.overlay_file)
        self.refresh()

    # ----- orgs and nodes -------------------------------------------------------------------------------------

    def _org(self, spec: dict[str, Any], kind: str) -> Org:
        sub = spec["subdomain"]
        return Org(
            name=spec["name"],
            msp_id=spec["msp_id"],
            subdomain=sub,
            domain=f"{sub}.{self.domain}",
            kind=kind,
            host=spec.get("host") or self.host,
            netns=spec.get("netns") or "",
        )

    @cached_property
    def orderer_org(self) -> Org:
        o = self.definition["ordering"]
        spec = {k: o.get(k) for k in ("subdomain", "host", "netns")}
        return self._org({"name": o["org"], "msp_id": o["msp_id"], **spec}, "orderer")

    @cached_property
    def member_orgs(self) -> list[Org]:
        orgs = [self._org(spec, spec["kind"]) for spec in self.definition["orgs"]]
        if len(orgs) > MAX_MEMBER_ORGS:
            raise NetworkError(f"at most {MAX_MEMBER_ORGS} member orgs fit the port layout, not {len(orgs)}")
        return orgs

    @property
    def all_orgs(self) -> list[Org]:
        return [self.orderer_org, *self.member_orgs]

    def org(self, name: str) -> Org:
        """A member org by name or MSP id."""
        for attempt in range(2):
            for org in self.member_orgs:
                if name in (org.name, org.msp_id):
                    return org
            if attempt == 0 and not self.refresh():
                break
        raise UnknownName(
            f"there is no member org {name!r}; the members are {', '.join(o.name for o in self.member_orgs)}"
        )

    def any_org(self, name: str) -> Org:
        """A member org or the orderer org, by name or MSP id."""
        o = self.orderer_org
        return o if name in (o.name, o.msp_id) else self.org(name)

    def has_org(self, name: str) -> bool:
        try:
            self.any_org(name)
        except UnknownName:
            return False
        return True

    @cached_property
    def orderers(self) -> list[Node]:
        base = self.port_base + ORDERER_BLOCK
        org = self.orderer_org
        return [
            Node(short, "orderer", org, org.host, base + 10 * i, base + 10 * i + 1, base + 10 * i + 2)
            for i, short in enumerate(self.definition["ordering"]["nodes"])
        ]

    @cached_property
    def peers(self) -> list[Node]:
        base = self.port_base + PEER_BLOCK
        return [
            Node("peer0", "peer", org, org.host, base + 10 * j, base + 10 * j + 1, base + 10 * j + 2)
            for j, org in enumerate(self.member_orgs)
        ]

    @property
    def nodes(self) -> list[Node]:
        return [*self.orderers, *self.peers]

    def nodes_of(self, org: Org) -> list[Node]:
        return [n for n in self.nodes if n.org == org]

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

    def former_members(self, channel: str) -> list[tuple[str, str]]:
        """Orgs that left the channel, as (MSP id, kind): the chaincode definition keeps their private data
        collections (Fabric never drops a collection), with only the remaining members in their policies."""
        former = self.definition.get("former_members", {}).get(channel) or []
        return [(str(f["msp_id"]), str(f["kind"])) for f in former]

    def channels_of(self, org: Org) -> list[str]:
        return [ch for ch, members in self.channels.items() if org in members]

    @cached_property
    def contracts(self) -> dict[str, list[str]]:
        """Channel name -> the contracts that serve on it."""
        declared = self.definition["chaincode"].get("contracts") or {}
        return {ch: list(declared.get(ch) or []) for ch in self.channels}

    # ----- processes --------------------------------------------------------------------------------------------

    @staticmethod
    def launcher(netns: str) -> list[str]:
        """The argv prefix that runs a program in a network namespace (nothing for the caller's own)."""
        return ["ip", "netns", "exec", netns] if netns else []

    def launcher_of(self, org: Org | None) -> list[str]:
        """For an org's processes; None means the shared services (redis, postgres)."""
        return self.launcher(org.netns if org is not None else self.services_netns)

    # ----- other services -------------------------------------------------------------------------------------

    def chaincode_address(self, org: Org) -> str:
        """Where the org's own chaincode server listens (its peer dials it)."""
        return f"{org.host}:{self.peer_of(org).port + CHAINCODE_SERVER_OFFSET}"

    @property
    def redis_port(self) -> int:
        return self.port_base + REDIS_PORT

    # Redis has no default user: each member org has its own (limited to its own keys, see consortium.redis_keys)
    # and the set-up and operators have an admin user. Passwords are secret files made at set-up.

    def redis_user(self, org: Org) -> str:
        return org.msp_id

    def redis_password_file(self, org: Org) -> Path:
        return self.gateway_home(org) / "redis.password"

    @property
    def redis_dir(self) -> Path:
        """Redis's users (ACL file, the hashes orgs registered) and the admin password."""
        return self.home / "redis"

    def redis_user_hash_file(self, org: Org) -> Path:
        """The SHA-256 of the org's Redis password, which the org hands to whoever runs Redis (not the password)."""
        return self.redis_dir / "users" / f"{org.msp_id}.sha256"

    @property
    def redis_admin_password_file(self) -> Path:
        return self.redis_dir / "admin.password"

    @property
    def redis_acl_file(self) -> Path:
        return self.redis_dir / "users.acl"

    def _redis_url(self, user: str, password_file: Path) -> str:
        password = read_secret(password_file, f"the Redis password of {user}").decode().strip()
        return f"redis://{quote(user, safe='')}:{quote(password, safe='')}@{self.services_host}:{self.redis_port}/0"

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
        return (
            f"postgresql://careledger@{self.services_host}:{self.postgres_port}/{database}"
            f"?passfile={self.postgres_passfile}"
        )

    def gateway_port(self, org: Org) -> int:
        return self.port_base + GATEWAY_BLOCK + self.member_orgs.index(org)

    def gateway_url(self, org: Org) -> str:
        return f"https://{org.host}:{self.gateway_port(org)}"

    # ----- an org's home ----------------------------------------------------------------------------------------

    @property
    def orgs_dir(self) -> Path:
        return self.home / "orgs"

    def org_home(self, org: Org) -> Path:
        """Everything the org's own processes read: its keys, ledgers, store. Nothing of another org is in it."""
        return self.orgs_dir / org.name

    def crypto_dir(self, org: Org) -> Path:
        return self.org_home(org) / "crypto"

    def org_dir(self, org: Org) -> Path:
        """The org's identity tree in cryptogen's layout (msp/, ca/, tlsca/, peers|orderers/, users/)."""
        return self.crypto_dir(org) / org.org_type_dir / org.domain

    def org_msp_dir(self, org: Org) -> Path:
        return self.org_dir(org) / "msp"

    def own_tls_ca_cert(self, org: Org) -> Path:
        """The org's TLS CA certificate, in its own home (what its own processes read)."""
        return self.org_dir(org) / "tlsca" / f"tlsca.{org.domain}-cert.pem"

    def gateway_tls_dir(self, org: Org) -> Path:
        """The org's FHIR gateway TLS identity: server certificate, and client certificate for org-to-org calls."""
        return self.org_dir(org) / "gateway" / "tls"

    def gateway_home(self, org: Org) -> Path:
        """Where the org's gateway and workers keep its store and keys."""
        return self.org_home(org) / "gateway"

    def master_key_file(self, org: Org) -> Path:
        """The org's master key (wraps every patient's data key); production: a KMS."""
        return self.gateway_home(org) / "master.key"

    def token_issuer_key_file(self, org: Org) -> Path:
        """The development token issuer's signing key (stands in for the org's OAuth2 server)."""
        return self.gateway_home(org) / "token-issuer.key"

    def token_issuer_public_key_file(self, org: Org) -> Path:
        return self.gateway_home(org) / "token-issuer.pub"

    def consortium_key_file(self, org: Org) -> Path:
        """The org's copy of the consortium pseudonym key every member holds (distributed out of band)."""
        return self.gateway_home(org) / "pseudonym.key"

    def worker_config_file(self, org: Org) -> Path:
        """The org's worker settings made when it joined (rules, webhook); founding orgs use config/workers/."""
        return self.org_home(org) / "config" / "worker.yaml"

    def chaincode_home(self, org: Org) -> Path:
        """The org's chaincode package, its chaincode server's TLS pair, config and what it serves."""
        return self.org_home(org) / "chaincode"

    def node_dir(self, node: Node) -> Path:
        sub = "orderers" if node.kind == "orderer" else "peers"
        return self.org_dir(node.org) / sub / node.tls_hostname

    def node_data_dir(self, node: Node) -> Path:
        return self.org_home(node.org) / "data" / node.name

    def user_dir(self, org: Org, user: str = "Admin") -> Path:
        return self.org_dir(org) / "users" / f"{user}@{org.domain}"

    # ----- what orgs publish --------------------------------------------------------------------------------------

    def public_dir(self, org: Org) -> Path:
        """The org's published definition: org.json and a public MSP folder (certificates and NodeOUs only)."""
        return self.consortium_dir / "orgs" / org.name

    def org_definition_file(self, org: Org) -> Path:
        return self.public_dir(org) / "org.json"

    def public_msp_dir(self, org: Org) -> Path:
        return self.public_dir(org) / "msp"

    def tls_ca_cert(self, org: Org) -> Path:
        """The org's TLS CA certificate as it published it: what everyone else trusts for it."""
        return self.public_msp_dir(org) / "tlscacerts" / "tlsca.pem"

    def public_tls_cert(self, node: Node) -> Path:
        """A node's TLS certificate as its org published it (orderers: the consenter certificate)."""
        return self.public_dir(node.org) / "nodes" / node.tls_hostname / "tls.pem"

    @property
    def updates_dir(self) -> Path:
        return self.consortium_dir / "updates"

    def chaincode_definitions_dir(self, channel: str) -> Path:
        return self.consortium_dir / "chaincode" / channel

    # ----- the tooling's files ------------------------------------------------------------------------------------

    def data_dir(self, name: str) -> Path:
        """A node's data folder (in its org's home) by node name, or a shared service's (redis, postgres)."""
        for node in self.nodes:
            if node.name == name:
                return self.node_data_dir(node)
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

    def make_private(self) -> None:
        """The run folder and every org's home: 0700; the run folder keeps the passage (o+x) it may have given
        PostgreSQL's own user."""
        private_dir(self.home, keep=stat.S_IXOTH)
        for org in self.all_orgs:
            private_dir(self.org_home(org))


def load(home: Path | None = None, port_base: int | None = None) -> Topology:
    """Load the consortium for a run folder (CARELEDGER_HOME) and port base (CARELEDGER_PORT_BASE), with the run
    folder's overlay merged over the repository's definition."""
    definition = yaml.safe_load(DEFINITION_FILE.read_text())
    home = home or Path(os.environ.get("CARELEDGER_HOME", REPO_ROOT / "run"))
    if port_base is None:
        port_base = int(os.environ.get("CARELEDGER_PORT_BASE", definition["port_base"]))
    return Topology(definition, home.resolve(), port_base)
