"""OAuth2 bearer tokens for EHR clients: JWTs validated with PyJWT, SMART-style scopes checked per request.

A token's `scope` claim is space-separated. `system/*.write` or `system/Observation.write` allow writes of that
type; `.read` allows reads; v2 scopes (`system/*.cruds`, `system/Patient.rs`) are understood too.
"""

from __future__ import annotations

from dataclasses import dataclass

import jwt

from gateway.outcome import HttpProblem


@dataclass(frozen=True)
class TokenPolicy:
    """What a valid token must be: signed by this key, for this audience, from this issuer."""

    public_key_pem: str
    audience: str
    issuer: str
    algorithms: tuple[str, ...] = ("ES256", "RS256")


@dataclass(frozen=True)
class Client:
    subject: str
    scopes: frozenset[str]

    def allows(self, resource_type: str, access: str) -> bool:
        """access: "read" or "write". v1 permissions are read / write / *; v2 ones are letters of "cruds"."""
        v2_needs = {"read": "r", "write": "cu"}[access]
        for scope in self.scopes:
            context, _, rest = scope.partition("/")
            rtype, _, perm = rest.partition(".")
            if context not in ("system", "user") or rtype not in ("*", resource_type):
                continue
            if perm in (access, "*"):
                return True
            if perm and set(perm) <= set("cruds") and set(perm) & set(v2_needs):
                return True
        return False


def authenticate(policy: TokenPolicy, authorization: str | None) -> Client:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise HttpProblem(401, "login", "a bearer token is required (Authorization: Bearer <JWT>)")
    token = authorization.split(" ", 1)[1].strip()
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
    return Client(str(claims["sub"]), frozenset(str(claims["scope"]).split()))


def require(client: Client, resource_type: str, access: str) -> None:
    if not client.allows(resource_type, access):
        raise HttpProblem(403, "forbidden", f"the token's scopes do not allow {access} of {resource_type}")
