"""Who a patient is across the consortium, without inventing identifiers.

The consortium names, in priority order, the identifier systems that identify a person consortium-wide (a master
patient index, a national id, a social security number, ...). A Patient's pseudonym is the keyed hash of its first
identifier in one of those systems, so every member that holds the person computes the same pseudonym and the
ledger's index joins their records. A Patient with none of them gets an org-local pseudonym (keyed with the
custodian's own key, so no other member can compute or guess it); it can be linked to the consortium pseudonym
later, when an identifier is added (an update, or `Patient/$link`), and the link goes on chain without PHI.

`$match` finds a Patient this org holds from what an EHR knows: an identifier (any system), or the demographics
(family name, given name, birth date, gender), indexed only as keyed hashes.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from records import digests

DEMOGRAPHICS_SYSTEM = "urn:careledger:demographics"  # the keyed demographic token in the identifier index


@dataclass(frozen=True)
class IdentitySystems:
    """The consortium's person identifier systems, in priority order, and the key its pseudonyms are made with."""

    systems: tuple[str, ...]
    consortium_key: bytes

    @property
    def primary(self) -> str:
        return self.systems[0]

    def consortium_identifier(self, patient: dict[str, Any]) -> tuple[str, str] | None:
        """(system, value) of the Patient's first identifier in a consortium system, by the systems' priority."""
        idents = [i for i in patient.get("identifier") or [] if isinstance(i, dict) and i.get("value")]
        for system in self.systems:
            for ident in idents:
                if ident.get("system") == system:
                    return system, str(ident["value"])
        return None

    def pseudonym(self, system: str, value: str) -> str:
        return digests.pseudonym(self.consortium_key, system, value)

    def of(self, patient: dict[str, Any]) -> str | None:
        """The consortium pseudonym of a Patient resource, or None when it carries no consortium identifier."""
        found = self.consortium_identifier(patient)
        return self.pseudonym(*found) if found else None


def _fold(text: Any) -> str:
    decomposed = unicodedata.normalize("NFKD", str(text or ""))
    return "".join(c for c in decomposed if c.isalnum()).casefold()


def demographic_token(patient: dict[str, Any]) -> str | None:
    """What `$match` compares without keeping names in the clear: family + first given name + birth date + gender,
    folded (case, accents, spaces); None when any is missing. The store indexes it as a keyed hash."""
    names = patient.get("name") or []
    official = next((n for n in names if isinstance(n, dict) and n.get("use") == "official"), None)
    name = official or (names[0] if names and isinstance(names[0], dict) else {})
    given = (name.get("given") or [""])[0]
    parts = [
        _fold(name.get("family")),
        _fold(given),
        str(patient.get("birthDate") or ""),
        str(patient.get("gender") or ""),
    ]
    return "|".join(parts) if all(parts) else None
