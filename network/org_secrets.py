"""The keys a member's gateway and workers need besides its Fabric identities, made in the org's own home.

- per org: the master key that wraps its patients' data keys, the development token issuer's key pair, and the
  password of the org's Redis user (only its SHA-256 goes to whoever runs Redis);
- shared by the members: the consortium pseudonym key. The founding members agree on one at set-up; a joining org
  receives it out of band (`careledger org create --consortium-key FILE`) and keeps its own copy;
- for the host's services: the password of Redis's admin user (set-up, operators and tests only).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from consortium.errors import NetworkError
from consortium.secrets import private_dir, read_secret, write_secret
from consortium.topology import Org, Topology


def _issuer_key_pair() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def redis_password_hash(password: bytes) -> str:
    return hashlib.sha256(password.strip()).hexdigest()


def ensure_org(topology: Topology, org: Org) -> bool:
    """The org's master key, Redis password and token issuer keys; True when any was made now. The hash of the
    Redis password is handed to the host's Redis (a file in its folder)."""
    private_dir(topology.org_home(org))
    made = write_secret(topology.master_key_file(org), os.urandom(32))
    made = write_secret(topology.redis_password_file(org), secrets.token_hex(32).encode()) or made
    hash_file = topology.redis_user_hash_file(org)
    if not hash_file.exists():
        password = read_secret(topology.redis_password_file(org), f"{org.name}'s Redis password")
        private_dir(hash_file.parent)
        hash_file.write_text(redis_password_hash(password) + "\n")
    if not topology.token_issuer_key_file(org).exists():
        private, public = _issuer_key_pair()
        made = write_secret(topology.token_issuer_key_file(org), private) or made
        topology.token_issuer_public_key_file(org).write_bytes(public)
    return made


def give_consortium_key(topology: Topology, org: Org, key: bytes) -> bool:
    """Keep the consortium pseudonym key in the org's home; True when written now. A different key already there is
    refused: pseudonyms made under two keys would never match."""
    if len(key) != 32:
        raise NetworkError("the consortium pseudonym key is 32 bytes")
    path = topology.consortium_key_file(org)
    if path.exists():
        if path.read_bytes() != key:
            raise NetworkError(f"{org.name} already holds another consortium pseudonym key ({path})")
        return False
    return write_secret(path, key)


def read_consortium_key(path: Path) -> bytes:
    return read_secret(path, "the consortium pseudonym key")


def ensure(topology: Topology) -> bool:
    """Every member's keys, the founders' shared pseudonym key, and Redis's admin password; True when any was made."""
    made = write_secret(topology.redis_admin_password_file, secrets.token_hex(32).encode())
    for org in topology.member_orgs:
        made = ensure_org(topology, org) or made
    holders = [o for o in topology.member_orgs if topology.consortium_key_file(o).exists()]
    key = read_consortium_key(topology.consortium_key_file(holders[0])) if holders else os.urandom(32)
    for org in topology.member_orgs:
        made = give_consortium_key(topology, org, key) or made
    return made
