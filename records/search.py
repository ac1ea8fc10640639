"""FHIR search parameters this gateway supports, parsed into a store query.

Supported on every stored type: `patient` (Patient/<id> or <id>, a Patient held here), `_id`, `identifier`
(system|value), `_lastUpdated` with the prefixes eq, ge, gt, le, lt (repeatable: `ge2026-01-01&_lastUpdated=lt2026-02`),
`_count` (default 50, at most 500) and `_cursor` (the next link carries it). Anything else is refused with 400 rather
than silently ignored, so a client never mistakes an unfiltered result for a filtered one.

Paging is by cursor: results come in (lastUpdated, id) order and a page's next link says, in an opaque `_cursor`,
after which resource the next page starts. Every page costs the same however deep into the results it is, and
resources created while a client pages appear at the end instead of shifting the pages it has not read yet. (A
resource updated meanwhile moves to the end too, so it can be seen twice, once per version.) `_offset` is refused
with a sentence that says to follow the links: an offset costs more with every page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from records.errors import Issue, Malformed
from records.store import Cursor, Query

DEFAULT_COUNT, MAX_COUNT = 50, 500
SUPPORTED = {"patient", "subject", "_id", "identifier", "_lastUpdated", "_count", "_cursor", "_format"}


@dataclass(frozen=True)
class Search:
    query: Query
    identifier: tuple[str, str] | None  # (system, value), resolved to ids by the caller


def _bad(param: str, why: str) -> Malformed:
    return Malformed([Issue("value", param, why)])


def _instant(t: datetime) -> str:
    """The stored lastUpdated form (UTC, microseconds, Z), so that text order is time order."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def interval(value: str) -> tuple[str, str]:
    """[start, end) of a FHIR date/dateTime at its own precision: "2026" is the whole year."""
    text = value.replace("Z", "+00:00")
    try:
        if len(text) == 4:
            start = datetime(int(text), 1, 1, tzinfo=UTC)
            end = datetime(start.year + 1, 1, 1, tzinfo=UTC)
        elif len(text) == 7:
            start = datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
            end = datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)
        elif len(text) == 10:
            start = datetime.fromisoformat(text).replace(tzinfo=UTC)
            end = start + timedelta(days=1)
        else:
            start = datetime.fromisoformat(text)
            if start.tzinfo is None:
                start = start.replace(tzinfo=UTC)
            end = start + timedelta(seconds=1)
        return _instant(start), _instant(end)
    except (ValueError, OverflowError):
        raise _bad("_lastUpdated", f"{value[:40]!r} is not a FHIR date or dateTime this server can compare") from None


def _last_updated(query: Query, value: str) -> Query:
    prefix, rest = (value[:2], value[2:]) if value[:2].isalpha() else ("eq", value)
    start, end = interval(rest)
    lo, hi = query.updated_from, query.updated_before
    bounds = {
        "eq": (start, end),
        "ge": (start, None),
        "gt": (end, None),
        "lt": (None, start),
        "le": (None, end),
    }
    if prefix not in bounds:
        raise _bad("_lastUpdated", f"prefix {prefix!r} is not supported (eq, ge, gt, le, lt)")
    new_lo, new_hi = bounds[prefix]
    if new_lo is not None and (lo is None or new_lo > lo):
        lo = new_lo
    if new_hi is not None and (hi is None or new_hi < hi):
        hi = new_hi
    return replace(query, updated_from=lo, updated_before=hi)


def _int(param: str, value: str, low: int, high: int) -> int:
    if not (value.isascii() and value.isdigit() and len(value) <= 10) or not low <= int(value) <= high:
        raise _bad(param, f"{value!r} is not a number from {low} to {high}")
    return int(value)


def parse(resource_type: str, params: list[tuple[str, str]], patient_pseudonym: Callable[[str], str | None]) -> Search:
    """The store query for a search; `patient_pseudonym` maps a local Patient id to its pseudonym."""
    query = Query(resource_type, count=DEFAULT_COUNT)
    identifier: tuple[str, str] | None = None
    for name, value in params:
        if name == "_offset":
            raise _bad("_offset", "this server pages with cursors: follow the Bundle's next link (it carries _cursor)")
        if name not in SUPPORTED:
            raise _bad(name, f"search parameter {name!r} is not supported; supported: {', '.join(sorted(SUPPORTED))}")
        if name in ("patient", "subject"):
            pid = value.removeprefix("Patient/")
            if resource_type == "Patient":
                query = replace(query, ids=(pid,))
            else:  # an unknown patient matches nothing: "-" is no pseudonym
                query = replace(query, patient=patient_pseudonym(pid) or "-")
        elif name == "_id":
            query = replace(query, ids=tuple(value.split(",")))
        elif name == "identifier":
            system, sep, ident = value.partition("|")
            if not sep or not system or not ident:
                raise _bad("identifier", "give the identifier as system|value")
            identifier = (system, ident)
        elif name == "_lastUpdated":
            query = _last_updated(query, value)
        elif name == "_count":
            query = replace(query, count=_int("_count", value, 0, MAX_COUNT))
        elif name == "_cursor":
            query = replace(query, after=cursor(value))
    return Search(query, identifier)


def cursor(value: str) -> Cursor:
    """The `_cursor` of a next link."""
    try:
        return Cursor.decode(value)
    except ValueError:
        raise _bad("_cursor", "not a cursor of this server: follow the Bundle's next link as given") from None


def count(value: str, default: int, maximum: int) -> int:
    """`_count`, from 0 to `maximum`."""
    return _int("_count", value, 0, maximum) if value else default


def identifier_condition(condition: str) -> tuple[str, str]:
    """`identifier=system|value` (an If-None-Exist header or the identifier parameter) as (system, value)."""
    name, _, token = condition.partition("=")
    system, sep, value = token.partition("|")
    if name.strip() != "identifier" or not sep or not system or not value:
        raise _bad("If-None-Exist", f"{condition!r}: the condition is identifier=system|value")
    return system, value
