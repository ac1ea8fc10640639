"""JSON at ingest speed: parsing request bodies and the form a resource is stored in.

A 300-entry EHR bundle is almost a megabyte of JSON; the standard library's parser and encoder cost several
milliseconds of it per request, orjson a fraction. orjson reads and writes the same JSON with two exceptions, and
each is routed to the standard library here so that no value changes:
- it turns an integer beyond 64 bits into a float: a body with a run of more than 18 digits is parsed by `json`;
- it cannot write such an integer: a resource holding one is written by `json`.
Digests never use this module: their byte forms are fixed (`records.digests`, `records.disclosure`).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_LONG_DIGITS = re.compile(rb"\d{19}")  # 19 digits may exceed a signed 64-bit integer (a string's digits count too)


def loads(body: bytes) -> Any:
    """The JSON value of a UTF-8 body. ValueError if it is not JSON (a lone surrogate, NaN or Infinity included)."""
    if _LONG_DIGITS.search(body):
        return json.loads(body)
    return orjson.loads(body)


def stored(resource: Any) -> bytes:
    """A resource's stored byte form: keys sorted, no insignificant whitespace, UTF-8."""
    try:
        return orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits (orjson.JSONEncodeError is a TypeError)
        return json.dumps(resource, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
