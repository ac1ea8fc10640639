"""What the console reads from, made once per gateway process (`gateway.serve`) or by a test."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from consortium.topology import Org, Topology
from ledger.activity import ActivityIndex
from ledger.explorer import Explorer

SECTIONS = {  # section -> (org kinds that have it, FHIR type whose read scope opens it)
    "claims": (("provider", "insurer"), "Claim"),
    "consent": (("provider",), "Consent"),
    "supply": (("provider", "manufacturer"), "Medication"),
}


@dataclass(frozen=True)
class PendingUpdate:
    """A channel configuration update waiting for this org's signature."""

    update_id: str
    channel: str
    summary: str
    signatures: tuple[str, ...]  # MSP ids that signed already


class ConfigUpdates(Protocol):
    """The hook for org onboarding: channel configuration updates that wait for this org's signature. Plug in an
    implementation when the network gets a way to propose them; the console lists them and offers a sign button."""

    available: bool

    async def pending(self, channel: str) -> list[PendingUpdate]: ...

    async def sign(self, channel: str, update_id: str) -> None: ...


class NoConfigUpdates:
    """This network has no channel configuration updates in flight: nothing to sign."""

    available = False

    async def pending(self, channel: str) -> list[PendingUpdate]:
        return []

    async def sign(self, channel: str, update_id: str) -> None:
        raise LookupError(f"no configuration update {update_id!r} is pending on {channel}")


@dataclass
class Console:
    topology: Topology
    org: Org
    explorer: Explorer
    activity: ActivityIndex
    config_updates: ConfigUpdates = field(default_factory=NoConfigUpdates)

    @property
    def channels(self) -> list[str]:
        return self.topology.channels_of(self.org)

    def members(self, channel: str) -> list[Org]:
        return self.topology.channels[channel]

    def has_section(self, section: str) -> bool:
        return self.org.kind in SECTIONS[section][0]
