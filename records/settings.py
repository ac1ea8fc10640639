"""Where a custodian keeps its records and which keys it uses; the same for its gateway and its workers.

| setting | default | environment |
|---|---|---|
| store | SQLite in run/orgs/<org>/gateway/store.sqlite | CARELEDGER_STORE_URL, or CARELEDGER_STORE (a SQLite path) |
| master key (wraps patient keys) | run/orgs/<org>/gateway/master.key | CARELEDGER_MASTER_KEY_FILE |
| consortium pseudonym key | run/orgs/<org>/gateway/pseudonym.key (the org's copy) | CARELEDGER_CONSORTIUM_KEY_FILE |

The store URL is `sqlite:///<absolute path>` or `postgresql://<user>@<host>:<port>/<database>` (any libpq URL:
`?passfile=`, `?sslmode=`, ...). `{org}` in it becomes the org's name in lower case, so one environment can serve
every org's gateways and workers on a host, each in its own file or database: the run folder's own PostgreSQL
(`careledger network up` starts it, one database per org) is `topology.postgres_url("{org}")`. The gateways and
workers of one org must all use the same store.

The keys are made by `careledger network up`; in production they belong in a KMS or HSM.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from consortium.secrets import read_secret
from consortium.topology import Org, Topology
from records.fhir_claim import PayerDirectory
from records.store import Store

MPI_SYSTEM_DEFAULT = "urn:oid:2.16.840.1.113883.3.4711.1"


def org_database(org: Org) -> str:
    """What `{org}` stands for in a store URL: the org's name in lower case (hospitalorg)."""
    return org.name.lower()


def store_url(topology: Topology, org: Org) -> str:
    env = os.environ.get
    if url := env("CARELEDGER_STORE_URL"):
        return url.replace("{org}", org_database(org))
    path = Path(env("CARELEDGER_STORE") or topology.gateway_home(org) / "store.sqlite").resolve()
    return f"sqlite://{path}"


@dataclass(frozen=True)
class CustodianSettings:
    topology: Topology
    org: Org
    store_url: str
    master_key_file: Path
    consortium_key_file: Path
    identity_systems: tuple[str, ...]
    payers: PayerDirectory

    @classmethod
    def load(cls, topology: Topology, org_name: str) -> CustodianSettings:
        org = topology.org(org_name)
        env = os.environ.get
        return cls(
            topology=topology,
            org=org,
            store_url=store_url(topology, org),
            master_key_file=Path(env("CARELEDGER_MASTER_KEY_FILE") or topology.master_key_file(org)),
            consortium_key_file=Path(env("CARELEDGER_CONSORTIUM_KEY_FILE") or topology.consortium_key_file(org)),
            identity_systems=topology.identity_systems or (MPI_SYSTEM_DEFAULT,),
            payers=PayerDirectory.of(topology.payers),
        )

    @property
    def pending_dir(self) -> Path:
        """Where this host's gateway and workers keep the signed transactions of their writes until the ledger's
        answer is definite (beside the processes that sent them, whichever database holds the store)."""
        return self.topology.gateway_home(self.org) / "pending"

    def open_store(self) -> Store:
        return Store(self.store_url, read_secret(self.master_key_file, f"{self.org.name}'s master key"))

    def consortium_key(self) -> bytes:
        return read_secret(self.consortium_key_file, "the consortium pseudonym key")
