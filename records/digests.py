"""The only values derived from patient data that may reach the ledger: pseudonyms and keyed digests.

- A patient pseudonym is HMAC-SHA-256 over the patient's consortium-wide identifier ("<system>|<value>", e.g. the
  master patient index id), keyed with the consortium pseudonym key that every member gateway holds and the ledger
  never sees. Equal identifiers give equal pseudonyms at every member, so records index across custodians; without
  the key, a pseudonym cannot be computed from a guessed identifier.
- A resource digest says how it was made by its scheme, recorded on chain with it (`digestScheme`):
  - "v1": HMAC-SHA-256 over the canonical JSON of a FHIR resource, keyed per patient, so a digest on chain is no
    oracle for guessing content, and destroying the patient's key unlinks every digest (erasure);
  - "v2": the root of a Merkle tree over the resource's elements, each leaf salted with a secret only the custodian
    holds (`records.disclosure`, docs/DISCLOSURE.md), so a custodian can disclose some elements with proofs that a
    recipient checks against the chain. The salts derive from the patient's key too: erasure unlinks these as well.
  New records are written with v2; v1 digests keep verifying, by the scheme the chain recorded.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from records import disclosure

V1, V2 = "v1", "v2"
SALT_KEY_LABEL = b"careledger/disclosure-salt-key/v1"


def canonical_json(resource: Mapping[str, Any]) -> bytes:
    """One byte form per resource: keys sorted, no insignificant whitespace, UTF-8, numbers as JSON writes them."""
    return json.dumps(resource, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def pseudonym(consortium_key: bytes, system: str, value: str) -> str:
    if not system or not value:
        raise ValueError("a pseudonym needs an identifier system and value")
    return hmac.new(consortium_key, f"{system}|{value}".encode(), hashlib.sha256).hexdigest()


def resource_digest(patient_key: bytes, resource: Mapping[str, Any]) -> str:
    return hmac.new(patient_key, canonical_json(resource), hashlib.sha256).hexdigest()


def salt_key(patient_digest_key: bytes) -> bytes:
    """The custodian's secret that the patient's v2 salts derive from (never leaves the custodian)."""
    return hmac.new(patient_digest_key, SALT_KEY_LABEL, hashlib.sha256).digest()


def digest(scheme: str, patient_digest_key: bytes, resource: Mapping[str, Any], resource_key: str, version: int) -> str:
    """The resource version's digest under a scheme: v1 (keyed HMAC of the whole) or v2 (Merkle root of elements)."""
    if scheme == V1:
        return resource_digest(patient_digest_key, resource)
    if scheme == V2:
        return disclosure.root(resource, salt_key(patient_digest_key), resource_key, version)
    raise ValueError(f"unknown digest scheme {scheme!r}")
