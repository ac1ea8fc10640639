"""Errors become FHIR OperationOutcomes with a fitting HTTP status, here and nowhere else."""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError

from fabric_gateway import CommitError, EndorseError, FabricError, GatewayTimeout, GatewayUnavailable
from fabric_gateway.retry import is_read_race
from ledger.contracts import LedgerConflict, LedgerForbidden, LedgerInvalid, LedgerNotFound, LedgerRefused
from records.service import LedgerOutcomeUnknown
from records.store import PatientErased, Tampered, VersionTaken
from records.validation import FhirInvalid, Issue

FHIR_JSON = "application/fhir+json"


class HttpProblem(Exception):
    """A request the edge answers with an OperationOutcome: not found, precondition failed, unauthorised, ..."""

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


_LEDGER_STATUS: list[tuple[type[Exception], int, str]] = [
    (LedgerConflict, 409, "conflict"),
    (LedgerForbidden, 403, "forbidden"),
    (LedgerNotFound, 404, "not-found"),
    (LedgerInvalid, 422, "invalid"),
    (VersionTaken, 409, "conflict"),
    (PatientErased, 410, "deleted"),
    (Tampered, 500, "exception"),
    (LedgerOutcomeUnknown, 504, "timeout"),
    (GatewayTimeout, 504, "timeout"),
    (GatewayUnavailable, 503, "transient"),
    (FabricError, 502, "exception"),
]


KNOWN_ERRORS: tuple[type[Exception], ...] = (
    RequestValidationError,
    FhirInvalid,
    HttpProblem,
    LedgerRefused,
    *(c for c, _, _ in _LEDGER_STATUS),
)


def problem(err: Exception) -> tuple[int, dict[str, Any]] | None:
    """The status and OperationOutcome for an error the gateway knows, or None for a bug (500 upstream)."""
    if isinstance(err, FhirInvalid):
        return err.status, operation_outcome(err.issues)
    if isinstance(err, HttpProblem):
        return err.status, operation_outcome([err.issue])
    if isinstance(err, RequestValidationError):  # path, query or JSON body parameters of the non-FHIR routes
        issues = [
            Issue("required" if e["type"] == "missing" else "value", ".".join(map(str, e["loc"])), e["msg"])
            for e in err.errors()
        ]
        return (400 if any(e["loc"][0] == "query" for e in err.errors()) else 422), operation_outcome(issues)
    if isinstance(err, (CommitError, EndorseError)) and is_read_race(err):
        # Concurrent writes to the same records kept winning, even after retries: nothing was written; try again.
        return 503, operation_outcome([Issue("transient", "", f"busy, nothing was written; retry: {err}")])
    for cls, status, code in _LEDGER_STATUS:
        if isinstance(err, cls):
            text = err.message if isinstance(err, LedgerRefused) else str(err)
            return status, operation_outcome([Issue(code, "", text)])
    return None
