"""What one org's workers need to know: its identity in the network, its webhook, its adjudication rules, and the
broker settings that make delivery lossless.

Per-org settings live in `config/workers/<Org>.yaml` (directory overridable by CARELEDGER_WORKER_CONFIG_DIR), or for
an org that joined later in its home (`run/orgs/<Org>/config/worker.yaml`, made when it was created); the webhook
secret can come from CARELEDGER_WEBHOOK_SECRET instead of the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from consortium import topology as topo
from consortium.redis_keys import OrgKeys
from consortium.topology import Org, Topology
from records.settings import CustodianSettings
from workers.rules import Rules

CONFIG_DIR = topo.REPO_ROOT / "config" / "workers"


@dataclass(frozen=True)
class Webhook:
    url: str  # empty: no webhook
    secret: bytes
    max_attempts: int
    backoff_seconds: float


@dataclass(frozen=True)
class Remittance:
    """How an insurer pays: one remittance per provider per cycle (batch), or claim by claim."""

    mode: str  # batch | per-claim
    cycle_seconds: float  # every cycle, each provider's queued claims are paid ...
    max_claims: int  # ... at most this many in one payment (the rest the next cycle)
    purge_every_seconds: float  # how often claims whose retention has passed are purged

    @classmethod
    def from_config(cls, cfg: dict[str, object]) -> Remittance:
        mode = str(cfg.get("mode", "batch"))
        if mode not in ("batch", "per-claim"):
            raise ValueError(f"remittance.mode is batch or per-claim, not {mode!r}")
        return cls(
            mode=mode,
            cycle_seconds=float(str(cfg.get("cycle_seconds", 2))),
            max_claims=int(str(cfg.get("max_claims", 200))),
            purge_every_seconds=float(str(cfg.get("purge_every_seconds", 60))),
        )


@dataclass(frozen=True)
class WorkerSettings:
    custodian: CustodianSettings  # the org's store and keys, shared with its gateway
    webhook: Webhook
    rules: Rules | None  # insurers only
    remittance: Remittance

    @classmethod
    def load(cls, topology: Topology, org_name: str) -> WorkerSettings:
        org = topology.org(org_name)
        config_dir = Path(os.environ.get("CARELEDGER_WORKER_CONFIG_DIR") or CONFIG_DIR)
        path = config_dir / f"{org.name}.yaml"
        if not path.exists() and topology.worker_config_file(org).exists():
            path = topology.worker_config_file(org)  # an org that joined later keeps its settings in its home
        cfg = yaml.safe_load(path.read_text()) if path.exists() else {}
        hook = cfg.get("webhook") or {}
        secret = os.environ.get("CARELEDGER_WEBHOOK_SECRET") or str(hook.get("secret") or "")
        adjudication = cfg.get("adjudication")
        return cls(
            custodian=CustodianSettings.load(topology, org_name),
            webhook=Webhook(
                url=str(hook.get("url") or ""),
                secret=secret.encode(),
                max_attempts=int(hook.get("max_attempts", 6)),
                backoff_seconds=float(hook.get("backoff_seconds", 0.5)),
            ),
            rules=Rules.from_config(adjudication) if adjudication is not None else None,
            remittance=Remittance.from_config(cfg.get("remittance") or {}),
        )

    @property
    def topology(self) -> Topology:
        return self.custodian.topology

    @property
    def org(self) -> Org:
        return self.custodian.org

    @property
    def keys(self) -> OrgKeys:
        return OrgKeys(self.org.msp_id)

    @property
    def queue(self) -> str:
        """The Celery queue this org's tasks go to; only this org's workers consume it."""
        return f"careledger.{self.org.name}"
