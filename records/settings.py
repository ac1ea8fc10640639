"""Where a custodian keeps its records and which keys it uses; the same for its gateway and its workers.

| setting | default | environment |
|---|---|---|
| store | run/gateway/<org>/store.sqlite | CARELEDGER_STORE |
| master key (wraps patient keys) | run/gateway/<org>/master.key | CARELEDGER_MASTER_KEY_FILE |
| consortium pseudonym key | run/consortium/pseudonym.key, shared by every member | CARELEDGER_CONSORTIUM_KEY_FILE |
| patient identifier system | the consortium's master patient index | CARELEDGER_MPI_SYSTEM |

The keys are made by `careledger network up`; in production they belong in a KMS or HSM.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from consortium.secrets import read_secret
from consortium.topology import Org, Topology
from records.store import Store

MPI_SYSTEM_DEFAULT = "urn:oid:2.16.840.1.113883.3.4711.1"


@dataclass(frozen=True)
class CustodianSettings:
    topology: Topology
    org: Org
    store_path: Path
    master_key_file: Path
    consortium_key_file: Path
    mpi_system: str

    @classmethod
    def load(cls, topology: Topology, org_name: str) -> CustodianSettings:
        org = topology.org(org_name)
        env = os.environ.get
        return cls(
            topology=topology,
            org=org,
            store_path=Path(env("CARELEDGER_STORE") or topology.gateway_home(org) / "store.sqlite"),
            master_key_file=Path(env("CARELEDGER_MASTER_KEY_FILE") or topology.master_key_file(org)),
            consortium_key_file=Path(env("CARELEDGER_CONSORTIUM_KEY_FILE") or topology.pseudonym_key_file),
            mpi_system=env("CARELEDGER_MPI_SYSTEM") or MPI_SYSTEM_DEFAULT,
        )

    @property
    def pending_dir(self) -> Path:
        """Where writes keep their signed transactions until the ledger's answer is definite."""
        return self.store_path.parent / "pending"

    def open_store(self) -> Store:
        return Store(self.store_path, read_secret(self.master_key_file, f"{self.org.name}'s master key"))

    def consortium_key(self) -> bytes:
        return read_secret(self.consortium_key_file, "the consortium pseudonym key")
