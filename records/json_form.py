"""JSON at ingest speed: parsing request bodies and the form a resource is stored in.

A 300-entry EHR bundle is almost a megabyte of JSON; the standard library's parser and encoder cost several
milliseconds of it per request, orjson a fraction. The standard library takes over where orjson would change a value
or not read what JSON allows, so that both give the same values:
- a number of more than 18 digits outside a string (orjson makes an integer beyond 64 bits a float);
- a body with a byte order mark, or in UTF-16/32;
- a resource holding an integer beyond 64 bits is written in the canonical form (`digests.canonical_json`).
Both parsers refuse NaN, infinite numbers and lone surrogates, which no FHIR value can be. Digests never use orjson:
their byte forms are fixed (`records.digests`, `records.disclosure`).
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from records import digests

_DIGITS_ONLY = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))  # digits "0", the rest " "
_LONG_RUN = b"0" * 19  # 19 digits may exceed a signed 64-bit integer
MAX_LOOKS = 8  # long digit runs looked at, each costing a pass over the text before it


def loads(body: bytes) -> Any:
    """The JSON value of a body. ValueError if it is not JSON, or holds NaN, an infinite number or a lone surrogate
    (which no FHIR value can be)."""
    if body[:1] in (b"\xef", b"\xfe", b"\xff") or b"\x00" in body[:4]:
        return _standard(body)  # a byte order mark, or UTF-16/32: the standard library reads those, orjson does not
    digits = body.translate(_DIGITS_ONLY)  # a run of digits found with bytes.find: a regex takes 5 times as long
    at = digits.find(_LONG_RUN)
    for _ in range(MAX_LOOKS):
        if at == -1:
            return orjson.loads(body)
        if not _in_string(body, at):
            break
        end = digits.find(b" ", at)  # past this run of digits
        at = -1 if end == -1 else digits.find(_LONG_RUN, end)
    return _standard(body)  # a long number, or many long runs of digits (not worth looking where each one is)


def _standard(body: bytes) -> Any:
    """The standard library's parse, refusing what orjson refuses."""
    data = json.loads(body, parse_constant=_refused, parse_float=_finite)
    json.dumps(data, ensure_ascii=False).encode()  # UnicodeEncodeError (a ValueError) for a lone surrogate
    return data


def _refused(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is beyond what a number here can hold")
    return value


def _in_string(body: bytes, at: int) -> bool:
    """Whether a position of a JSON text is inside a string (EHR narratives hold long numbers too: "seed: 345...").
    It is when an odd number of quotes before it are not escaped; escaped backslashes go first, so that what is
    left of a backslash before a quote escapes it."""
    before = body[:at].replace(b"\\\\", b"")
    return (before.count(b'"') - before.count(b'\\"')) % 2 == 1


def stored(resource: Any) -> bytes:
    """A resource's stored byte form: keys sorted, no insignificant whitespace, UTF-8."""
    try:
        return orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits (orjson.JSONEncodeError is a TypeError)
        return digests.canonical_json(resource)
