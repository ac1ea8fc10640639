"""The keys a member's gateway and workers need besides its Fabric identities, made once at set-up.

- per org: the master key that wraps its patients' data keys, the development token issuer's key pair, and the
  password of the org's Redis user;
- for the consortium: the pseudonym key every member holds (in production distributed out of band, never on chain),
  and the password of Redis's admin user (set-up, operators and tests only).
"""

from __future__ import annotations

import os
import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from consortium.secrets import write_secret
from consortium.topology import Org, Topology


def _issuer_key_pair() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def ensure_org(topology: Topology, org: Org) -> bool:
    """The org's master key and token issuer keys; True when any was made now."""
    made = write_secret(topology.master_key_file(org), os.urandom(32))
    made = write_secret(topology.redis_password_file(org), secrets.token_hex(32).encode()) or made
    if not topology.token_issuer_key_file(org).exists():
        private, public = _issuer_key_pair()
        made = write_secret(topology.token_issuer_key_file(org), private) or made
        topology.token_issuer_public_key_file(org).write_bytes(public)
    return made


def ensure(topology: Topology) -> bool:
    """Every member's keys and the consortium pseudonym key; True when any was made now."""
    made = write_secret(topology.pseudonym_key_file, os.urandom(32))
    made = write_secret(topology.redis_admin_password_file, secrets.token_hex(32).encode()) or made
    for org in topology.member_orgs:
        made = ensure_org(topology, org) or made
    return made
