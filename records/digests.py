"""The only values derived from patient data that may reach the ledger: pseudonyms and keyed digests.

- A patient pseudonym is HMAC-SHA-256 over the patient's consortium-wide identifier ("<system>|<value>", e.g. the
  master patient index id), keyed with the consortium pseudonym key that every member gateway holds and the ledger
  never sees. Equal identifiers give equal pseudonyms at every member, so records index across custodians; without
  the key, a pseudonym cannot be computed from a guessed identifier.
- A resource digest is HMAC-SHA-256 over the canonical JSON of a FHIR resource, keyed per patient, so a digest on
  chain is no oracle for guessing content, and destroying the patient's key unlinks every digest (erasure).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any


def canonical_json(resource: Mapping[str, Any]) -> bytes:
    """One byte form per resource: keys sorted, no insignificant whitespace, UTF-8, numbers as JSON writes them."""
    return json.dumps(resource, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def pseudonym(consortium_key: bytes, system: str, value: str) -> str:
    if not system or not value:
        raise ValueError("a pseudonym needs an identifier system and value")
    return hmac.new(consortium_key, f"{system}|{value}".encode(), hashlib.sha256).hexdigest()


def resource_digest(patient_key: bytes, resource: Mapping[str, Any]) -> str:
    return hmac.new(patient_key, canonical_json(resource), hashlib.sha256).hexdigest()
