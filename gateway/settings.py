"""One member org's gateway settings: its custodian settings (store, keys) and what the HTTPS server needs.

| setting | default | environment |
|---|---|---|
| listen port | port base + 400 + org index | CARELEDGER_GATEWAY_PORT |
| token verification key | run/orgs/<org>/gateway/token-issuer.pub (development) | CARELEDGER_TOKEN_PUBLIC_KEY_FILE |
| token issuer / audience | https://auth.<domain> / https://gateway.<domain>/fhir | CARELEDGER_TOKEN_ISSUER, _AUDIENCE |
| processes serving the port | 1 | CARELEDGER_GATEWAY_PROCESSES |
| claims filed this close (ms) go in one batch; longer under load | 150 | CARELEDGER_CLAIM_WINDOW_MS |

Several processes share the org's port (SO_REUSEPORT: the kernel spreads connections over them) and its store
(SQLite in WAL mode with BEGIN IMMEDIATE, or PostgreSQL: both safe for several writers). Parsing FHIR is CPU-bound,
so one process per core is what lets a gateway ingest at the machine's speed; each runs its own reconciler.

The store and key settings are `records.settings`. The development token issuer (`careledger gateway token`) stands
in for the org's OAuth2 server; in production, set the public key, issuer and audience of the real one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from consortium.secrets import read_secret
from consortium.topology import Org, Topology
from gateway.auth import TokenPolicy
from records.settings import CustodianSettings


@dataclass(frozen=True)
class GatewaySettings:
    custodian: CustodianSettings
    port: int
    token_public_key_file: Path
    issuer: str
    audience: str
    processes: int = 1
    claim_window_s: float = 0.15

    @classmethod
    def load(cls, topology: Topology, org_name: str) -> GatewaySettings:
        custodian = CustodianSettings.load(topology, org_name)
        org = custodian.org
        env = os.environ.get
        return cls(
            custodian=custodian,
            port=int(env("CARELEDGER_GATEWAY_PORT") or topology.gateway_port(org)),
            token_public_key_file=Path(
                env("CARELEDGER_TOKEN_PUBLIC_KEY_FILE") or topology.token_issuer_public_key_file(org)
            ),
            issuer=env("CARELEDGER_TOKEN_ISSUER") or f"https://auth.{org.domain}",
            audience=env("CARELEDGER_TOKEN_AUDIENCE") or f"https://gateway.{org.domain}/fhir",
            processes=max(1, int(env("CARELEDGER_GATEWAY_PROCESSES") or 1)),
            claim_window_s=max(0.0, float(env("CARELEDGER_CLAIM_WINDOW_MS") or 150) / 1000),
        )

    @property
    def topology(self) -> Topology:
        return self.custodian.topology

    @property
    def org(self) -> Org:
        return self.custodian.org

    @property
    def url(self) -> str:
        return f"https://{self.org.host}:{self.port}"

    def token_policy(self) -> TokenPolicy:
        key = read_secret(self.token_public_key_file, f"{self.org.name}'s token verification key")
        return TokenPolicy(key.decode(), self.audience, self.issuer)
