"""Everything the records layer refuses or cannot finish, as values with meaning. The gateway maps each to an HTTP
status and an OperationOutcome in one place (`gateway.outcome`); workers act on them directly."""

from __future__ import annotations

from dataclasses import dataclass

MAX_ISSUES = 100  # an OperationOutcome lists at most this many problems


@dataclass(frozen=True)
class Issue:
    """One problem, as an OperationOutcome issue: FHIR issue code, the element's FHIRPath, and what is wrong."""

    code: str  # structure | required | value | code-invalid | not-supported | too-costly | invariant | ...
    expression: str
    diagnostics: str


class RecordsError(Exception):
    """Base class of the records layer's errors."""


class FhirInvalid(RecordsError):
    """The input breaks FHIR R4 or this server's rules: every problem found, each naming its element."""

    def __init__(self, issues: list[Issue]) -> None:
        if len(issues) > MAX_ISSUES:  # the last place says how many more there are, so nobody thinks it all
            more = len(issues) - MAX_ISSUES + 1
            issues = [*issues[: MAX_ISSUES - 1], Issue("too-costly", "", f"{more} more problems are not listed")]
        self.issues = issues
        super().__init__("; ".join(f"{i.expression}: {i.diagnostics}" for i in self.issues))


class Malformed(FhirInvalid):
    """Not even the shape of what was asked for: not JSON, not a Bundle, an entry that is not an object."""


class TooCostly(FhirInvalid):
    """Bigger than this server takes (bytes or entries)."""


class NotKeptHere(FhirInvalid):
    """A resource this kind of member org does not keep (an insurer posting a Condition)."""


class NotHeld(RecordsError):
    """The resource or patient is not held here."""


class PreconditionFailed(RecordsError):
    """A conditional request's condition does not hold (If-Match on a newer version, several If-None-Exist matches)."""


class PatientErased(RecordsError):
    """The patient's data key was destroyed; their content cannot be read or written any more."""


class Tampered(RecordsError):
    """A stored ciphertext failed authentication: it was changed outside the records service."""


class VersionTaken(RecordsError):
    """Another write staged or committed this resource version first."""


class StillPending(RecordsError):
    """The write's transaction was sent but its outcome is not known yet. The write is kept pending and settled as
    soon as the ledger answers (it commits once, or not at all); `batch` names it."""

    def __init__(self, batch: str) -> None:
        super().__init__("the ledger has not confirmed the write yet; it is kept and settled when it answers")
        self.batch = batch


class KeyReused(RecordsError):
    """The client's Idempotency-Key names an earlier request that asked something else (another body, path or
    method): it is not a retry of it, and nothing is written."""

    def __init__(self) -> None:
        super().__init__(
            "this Idempotency-Key was used for a different request within the last day; a retry must send the same"
            " request, and a new request needs a new key"
        )


class NotOnChain(RecordsError):
    """The resource is held here but the ledger has no record of it to compare with: a Claim of a bundle that is
    still queued for its own transaction, or that names no payer of the consortium, or that the contract refused."""


class OutsideCompartment(RecordsError):
    """A write limited to one patient's compartment (a `patient/` token) touches another patient's record."""


class Refused(RecordsError):
    """A custodian refused to disclose (no consent): the reason is the custodian's."""
