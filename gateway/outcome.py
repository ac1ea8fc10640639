"""Errors become FHIR OperationOutcomes with a fitting HTTP status: here, and nowhere else.

| error | status | OperationOutcome code |
|---|---|---|
| HttpProblem (authentication, scopes, HTTP-level checks) | its own | its own |
| records.Malformed / TooCostly / NotKeptHere / FhirInvalid | 400 / 413 / 403 / 422 | per issue |
| records.NotHeld / PreconditionFailed / VersionTaken / PatientErased | 404 / 412 / 409 / 410 | |
| records.Refused (no consent) | 403 | forbidden |
| records.NotOnChain ($verify of a Claim still queued, held or refused: see Claim/$submission) | 409 | not-found |
| records.StillPending (sent, outcome not known yet) | 503 with Retry-After: the same request again | transient |
| records.KeyReused (an Idempotency-Key sent again with a different request) | 422 | business-rule |
| Fabric timeouts | 504 with Retry-After | timeout |
| ledger refusals CONFLICT / FORBIDDEN / NOT_FOUND / INVALID_ARGUMENT | 409 / 403 / 404 / 422 | |
| a write that kept losing read races, an unreachable peer | 503 with Retry-After | transient |
| a member peer or the chaincode server down (policy unmet, chaincode unreachable) | 503 with Retry-After | transient |
| any other Fabric failure | 502 | exception |
| a stored ciphertext that fails authentication | 500 | exception |
"""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from fabric_gateway import (
    CommitError,
    EndorseError,
    EvaluateError,
    FabricError,
    GatewayTimeout,
    GatewayUnavailable,
)
from fabric_gateway.retry import is_read_race, is_unavailable
from ledger.errors import LedgerConflict, LedgerForbidden, LedgerInvalid, LedgerNotFound, LedgerRefused
from records.errors import (
    FhirInvalid,
    Issue,
    KeyReused,
    Malformed,
    NotHeld,
    NotKeptHere,
    NotOnChain,
    OutsideCompartment,
    PatientErased,
    PreconditionFailed,
    RecordsError,
    Refused,
    StillPending,
    Tampered,
    TooCostly,
    VersionTaken,
)

FHIR_JSON = "application/fhir+json"
RETRY_AFTER_S = "2"


class HttpProblem(Exception):
    """A request the edge answers itself with an OperationOutcome: unauthenticated, forbidden by scope, ..."""

    def __init__(self, status: int, code: str, diagnostics: str, expression: str = "") -> None:
        super().__init__(diagnostics)
        self.status = status
        self.issue = Issue(code, expression, diagnostics)


def operation_outcome(issues: list[Issue], severity: str = "error") -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for i in issues:
        issue: dict[str, Any] = {"severity": severity, "code": i.code, "diagnostics": i.diagnostics}
        if i.expression:
            issue["expression"] = [i.expression]
        out.append(issue)
    return {"resourceType": "OperationOutcome", "issue": out}


_INVALID_STATUS: list[tuple[type[FhirInvalid], int]] = [(Malformed, 400), (TooCostly, 413), (NotKeptHere, 403)]

_STATUS: list[tuple[type[Exception], int, str]] = [
    (NotHeld, 404, "not-found"),
    (PreconditionFailed, 412, "conflict"),
    (VersionTaken, 409, "conflict"),
    (PatientErased, 410, "deleted"),
    (Refused, 403, "forbidden"),
    (NotOnChain, 409, "not-found"),
    (OutsideCompartment, 403, "forbidden"),
    (Tampered, 500, "exception"),
    (StillPending, 503, "transient"),
    (KeyReused, 422, "business-rule"),
    (LedgerConflict, 409, "conflict"),
    (LedgerForbidden, 403, "forbidden"),
    (LedgerNotFound, 404, "not-found"),
    (LedgerInvalid, 422, "invalid"),
    (GatewayTimeout, 504, "timeout"),
    (GatewayUnavailable, 503, "transient"),
    (FabricError, 502, "exception"),
]

KNOWN_ERRORS: tuple[type[Exception], ...] = (
    HTTPException,
    RequestValidationError,
    HttpProblem,
    RecordsError,
    LedgerRefused,
    FabricError,
)


def problem(err: Exception) -> tuple[int, dict[str, Any]] | None:
    """The status and OperationOutcome for an error the gateway knows, or None for a bug (500 upstream)."""
    if isinstance(err, FhirInvalid):
        status = next((s for cls, s in _INVALID_STATUS if isinstance(err, cls)), 422)
        return status, operation_outcome(err.issues)
    if isinstance(err, HttpProblem):
        return err.status, operation_outcome([err.issue])
    if isinstance(err, HTTPException):  # the router's own: no such route (404), method not allowed (405)
        code = "not-found" if err.status_code == 404 else "not-supported"
        return err.status_code, operation_outcome([Issue(code, "", str(err.detail))])
    if isinstance(err, RequestValidationError):  # path, query or JSON body parameters of the non-FHIR routes
        issues = [
            Issue("required" if e["type"] == "missing" else "value", ".".join(map(str, e["loc"])), e["msg"])
            for e in err.errors()
        ]
        return (400 if any(e["loc"][0] == "query" for e in err.errors()) else 422), operation_outcome(issues)
    if isinstance(err, (CommitError, EndorseError)) and is_read_race(err):
        # Concurrent writes to the same records kept winning, even after retries: nothing was written; try again.
        return 503, operation_outcome([Issue("transient", "", f"busy, nothing was written; retry: {err}")])
    if isinstance(err, (EndorseError, EvaluateError)) and is_unavailable(err):
        return 503, operation_outcome([Issue("transient", "", f"the ledger is unavailable now, retry: {err}")])
    for cls, status, code in _STATUS:
        if isinstance(err, cls):
            text = err.message if isinstance(err, LedgerRefused) else str(err)
            return status, operation_outcome([Issue(code, "", text)])
    return None


def retry_after(status: int) -> dict[str, str]:
    """Transient answers tell the client when to try again."""
    return {"Retry-After": RETRY_AFTER_S} if status in (503, 504) else {}
