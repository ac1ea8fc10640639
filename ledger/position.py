"""Where a unit of work's writes landed on the ledger: the highest block per channel its transactions committed in.

A member that acts on another org's fresh write (reads a consent it just recorded, asks a custodian for records
right after a grant) needs the other org's peer to have committed that block first. The gateway reports the blocks
of a request's writes (`X-Ledger-Block`) and waits for the blocks a request names (`X-Ledger-Min-Block`) before it
answers, so a client gets read-your-writes across orgs instead of retrying a NOT_FOUND or a 403.

The header value is `channel:block` pairs separated by commas, e.g. `providers:57, claims:12`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from contextvars import ContextVar

BLOCK_HEADER, MIN_BLOCK_HEADER = "X-Ledger-Block", "X-Ledger-Min-Block"

_written: ContextVar[dict[str, int] | None] = ContextVar("careledger_ledger_written", default=None)
_required: ContextVar[dict[str, int] | None] = ContextVar("careledger_ledger_required", default=None)

_PAIR = re.compile(r"^([a-z][a-z0-9.-]{0,248}):([0-9]{1,18})$")


class BadPosition(ValueError):
    """A position header that does not say `channel:block[, channel:block ...]`."""


@contextlib.contextmanager
def tracking() -> Iterator[dict[str, int]]:
    """Collect, for the work done inside, the highest block per channel its committed transactions are in."""
    written: dict[str, int] = {}
    token = _written.set(written)
    try:
        yield written
    finally:
        _written.reset(token)


def note(channel: str, block_number: int) -> None:
    """Record that a transaction of the current unit of work committed in this block (nothing outside `tracking`)."""
    written = _written.get()
    if written is not None and block_number > 0:
        written[channel] = max(block_number, written.get(channel, 0))


def require(blocks: dict[str, int]) -> None:
    """Say that the current unit of work acts on a state at least this recent (what a request named), so that
    what it asks of other members can ask the same of their peers."""
    _required.set(dict(blocks))


def required() -> dict[str, int]:
    return dict(_required.get() or {})


def render(blocks: dict[str, int]) -> str:
    return ", ".join(f"{channel}:{block}" for channel, block in sorted(blocks.items()))


def parse(value: str) -> dict[str, int]:
    """The blocks a header names; BadPosition if any part is not `channel:block`."""
    out: dict[str, int] = {}
    for part in value.split(","):
        found = _PAIR.match(part.strip())
        if found is None:
            raise BadPosition(f"{part.strip()!r} is not channel:block")
        out[found[1]] = max(int(found[2]), out.get(found[1], 0))
    return out
