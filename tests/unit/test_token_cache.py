"""A bearer token's signature is checked once; the client it names is then taken from memory until it expires, and
only for exactly that token under exactly that policy."""

from __future__ import annotations

import time

import jwt
import pytest

from gateway import auth
from gateway.auth import TokenPolicy, authenticate
from gateway.outcome import HttpProblem
from tests.unit.gateway_harness import AUDIENCE, ISSUER, PUBLIC_PEM, token

POLICY = TokenPolicy(PUBLIC_PEM, AUDIENCE, ISSUER)


def test_a_token_is_verified_once_until_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    auth._VERIFIED.clear()
    decoded: list[str] = []
    real_decode = jwt.decode

    def counting_decode(token: str, *args: object, **kwargs: object) -> object:
        decoded.append(token)
        return real_decode(token, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(auth.jwt, "decode", counting_decode)
    header = token(exp=int(time.time()) + 2)["Authorization"]
    first = authenticate(POLICY, header)
    assert authenticate(POLICY, header) == first and len(decoded) == 1  # from memory
    other_policy = TokenPolicy(PUBLIC_PEM, "https://another.gateway/fhir", ISSUER)
    with pytest.raises(HttpProblem):  # the same token under another policy is checked, and refused there
        authenticate(other_policy, header)
    assert len(decoded) == 2
    tampered = header[:-4] + ("AAAA" if not header.endswith("AAAA") else "BBBB")
    with pytest.raises(HttpProblem):  # any other bytes are checked, never taken for the token in memory
        authenticate(POLICY, tampered)
    expires = real_decode(header.split()[1], options={"verify_signature": False})["exp"]
    monkeypatch.setattr(auth.time, "time", lambda: expires + 1)
    authenticate(POLICY, header)  # past its expiry the memory does not answer: the token is checked again
    assert len(decoded) == 4
    expired = token(exp=int(time.time()) - 5)["Authorization"]
    with pytest.raises(HttpProblem, match="expired"):
        authenticate(POLICY, expired)
