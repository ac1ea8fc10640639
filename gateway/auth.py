"""OAuth2 bearer tokens for EHR clients: JWTs validated with PyJWT, SMART scopes enforced per interaction.

Scopes are `<context>/<resource type or *>.<permissions>`:
- SMART v2 permissions are letters of `cruds`, each one interaction: c create, r read (read, vread, history), u update,
  d delete (and `$erase`), s search;
- SMART v1 permissions map as the specification maps them: `read` → `rs`, `write` → `cud`, `*` → `cruds`.

Contexts:
- `system/` — a backend service: the permissions hold for every resource of the type.
- `patient/` — only with the token's `patient` claim (the launch context): the permissions hold only inside that
  patient's compartment. A `patient/` scope without a `patient` claim grants nothing.
- `user/` — needs a `fhirUser` launch context this server does not support: refused, never widened to system access.

An interaction is allowed when one scope grants its letter for the type (or `*`); a `patient/` grant adds the
condition that the resource belongs to the launch patient, which the routes enforce (`Grant.patient`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from gateway.outcome import HttpProblem

V1 = {"read": "rs", "write": "cud", "*": "cruds"}
LETTERS = frozenset("cruds")


@dataclass(frozen=True)
class TokenPolicy:
    """What a valid token must be: signed by this key, for this audience, from this issuer."""

    public_key_pem: str
    audience: str
    issuer: str
    algorithms: tuple[str, ...] = ("ES256", "RS256")


@dataclass(frozen=True)
class Scope:
    context: str  # system | patient | user
    resource_type: str  # a type or *
    letters: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Scope | None:
        """A clinical scope, or None for anything else (openid, launch, offline_access, malformed)."""
        context, slash, rest = text.partition("/")
        rtype, dot, perm = rest.partition(".")
        perm = perm.split("?", 1)[0]  # v2 finer-grained query suffixes narrow a scope; honouring none is safe: refuse
        if not slash or not dot or not rtype or context not in ("system", "patient", "user") or "?" in text:
            return None
        letters = V1.get(perm, perm)
        if not letters or not set(letters) <= LETTERS:
            return None
        return cls(context, rtype, frozenset(letters))


@dataclass(frozen=True)
class Grant:
    """What a token may do for one interaction: allowed, and limited to one patient's compartment or not."""

    patient: str | None  # the launch patient's id when only their compartment is allowed


@dataclass(frozen=True)
class Client:
    subject: str
    scopes: tuple[Scope, ...]
    launch_patient: str | None = None  # the token's `patient` claim

    def grant(self, resource_type: str, letter: str) -> Grant | None:
        """The grant for one interaction on a type (`letter` one of c r u d s), or None when no scope allows it."""
        compartment: Grant | None = None
        for s in self.scopes:
            if letter not in s.letters or s.resource_type not in ("*", resource_type):
                continue
            if s.context == "system":
                return Grant(None)
            if s.context == "patient" and self.launch_patient:
                compartment = Grant(self.launch_patient)
        return compartment


# Tokens verified already, until they expire: an EHR sends the same token with every request of its lifetime, and
# checking its signature again each time was a tenth of a gateway's CPU under load. Bounded; emptied when full.
_VERIFIED: dict[tuple[TokenPolicy, str], tuple[Client, float]] = {}
VERIFIED_MAX = 4096


def authenticate(policy: TokenPolicy, authorization: str | None) -> Client:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise HttpProblem(401, "login", "a bearer token is required (Authorization: Bearer <JWT>)")
    token = authorization.split(" ", 1)[1].strip()
    seen = _VERIFIED.get((policy, token))
    if seen is not None and time.time() < seen[1]:
        return seen[0]
    client, expires = _verify(policy, token)
    if len(_VERIFIED) >= VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[(policy, token)] = (client, expires)
    return client


def _verify(policy: TokenPolicy, token: str) -> tuple[Client, float]:
    """The client a token names and when the token expires, or 401 / 403."""
    try:
        claims = jwt.decode(
            token,
            policy.public_key_pem,
            algorithms=list(policy.algorithms),
            audience=policy.audience,
            issuer=policy.issuer,
            options={"require": ["exp", "sub", "scope"]},
        )
    except jwt.PyJWTError as e:
        raise HttpProblem(401, "login", f"the bearer token is not valid: {e}") from None
    parsed = [Scope.parse(s) for s in str(claims["scope"]).split()]
    scopes = tuple(s for s in parsed if s is not None)
    if any(s.context == "user" for s in scopes):
        raise HttpProblem(
            403, "forbidden", "user/ scopes need a fhirUser launch context, which this server does not support"
        )
    patient = claims.get("patient")
    return Client(str(claims["sub"]), scopes, str(patient) if patient else None), float(claims["exp"])


WHAT = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


def require(client: Client, resource_type: str, letter: str) -> Grant:
    grant = client.grant(resource_type, letter)
    if grant is None:
        raise HttpProblem(403, "forbidden", f"the token's scopes do not allow {WHAT[letter]} of {resource_type}")
    return grant
