"""What a contract says when it refuses a call on purpose, as exceptions a caller can act on.

Contract errors arrive as "CODE: message" inside the peers' chaincode messages. They become these exceptions here,
once. Anything else (an unreachable peer, a timeout, a transaction invalidated at commit) stays the Fabric client's
own error: the caller decides whether that outcome is unknown or a failure.
"""

from __future__ import annotations

from collections.abc import Iterable


class LedgerRefused(Exception):
    """A contract refused the call; `code` says why in one word, `message` in a sentence."""

    code = ""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LedgerInvalid(LedgerRefused):
    code = "INVALID_ARGUMENT"


class LedgerForbidden(LedgerRefused):
    code = "FORBIDDEN"


class LedgerNotFound(LedgerRefused):
    code = "NOT_FOUND"


class LedgerConflict(LedgerRefused):
    code = "CONFLICT"


BY_CODE: dict[str, type[LedgerRefused]] = {
    c.code: c for c in (LedgerInvalid, LedgerForbidden, LedgerNotFound, LedgerConflict)
}


def refused(code: str, message: str) -> LedgerRefused:
    """The exception a single call raises for this code and message, for a batch read that reports a refusal per
    item instead of raising it (an unknown code stays a LedgerRefused that carries it)."""
    cls = BY_CODE.get(code)
    if cls is not None:
        return cls(message)
    unknown = LedgerRefused(message)
    unknown.code = code
    return unknown


def refusal(chaincode_messages: Iterable[str]) -> LedgerRefused | None:
    """The contract's refusal among the peers' messages, or None when the failure is not the contract's answer."""
    for message in chaincode_messages:
        for code, cls in BY_CODE.items():
            marker = f"{code}: "
            if marker in message:
                return cls(message[message.index(marker) + len(marker) :])
    return None
