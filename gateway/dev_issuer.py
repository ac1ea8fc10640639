"""The development token issuer: bearer tokens as an org's OAuth2 server would issue them, signed with the key
`careledger network up` made for the org. A deployment points the gateway at its real issuer instead."""

from __future__ import annotations

import time

import jwt
from cryptography.hazmat.primitives import serialization

from consortium.secrets import read_secret
from gateway.settings import GatewaySettings


def dev_token(settings: GatewaySettings, subject: str, scope: str, ttl_s: int = 3600, **claims: object) -> str:
    """A signed JWT with the given SMART scopes (and any extra claims, e.g. `patient` launch context)."""
    pem = read_secret(settings.topology.token_issuer_key_file(settings.org), f"{settings.org.name}'s token issuer key")
    key = serialization.load_pem_private_key(pem, password=None)
    body = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": subject,
        "scope": scope,
        "exp": int(time.time()) + ttl_s,
        **claims,
    }
    return jwt.encode(body, key, algorithm="ES256")  # type: ignore[arg-type]
