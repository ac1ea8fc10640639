"""The JSON forms of ingest: the same values as the standard library's, faster."""

from __future__ import annotations

import json
from typing import Any

import pytest

from records import json_form

SAMPLES: list[Any] = [
    {"resourceType": "Observation", "valueQuantity": {"value": 7.2, "unit": "mmol/L"}, "id": "o1"},
    {"b": "é ✓ 漢字 \u2028", "a": [1, -2, 0.1, 1e-05, 2.5e-07, 1e16, 100.0, True, False, None], "c": {}},
    {"text": 'quote " backslash \\ controls \n\r\t\b\f \x01 \x1f del \x7f'},
    {"big": 123456789012345678901234567890, "neg": -98765432109876543210},
]


@pytest.mark.parametrize("value", SAMPLES)
def test_parsing_gives_the_values_the_standard_library_gives(value: Any) -> None:
    body = json.dumps(value, ensure_ascii=False).encode()
    assert json_form.loads(body) == json.loads(body)
    assert json_form.loads(json.dumps(value).encode()) == value  # \u escapes too


@pytest.mark.parametrize(
    "body",
    [
        b'{"value": 123456789012345678901234567890}',
        b'{"text": "seed: 3457288435413077439", "value": 123456789012345678901234567890}',
        b'{"text": "a \\" quote, a \\\\ backslash", "value": 123456789012345678901234567890}',
        b'{"text": "' + b" 12345678901234567890" * 20 + b'", "value": 123456789012345678901234567890}',
    ],
)
def test_an_integer_beyond_64_bits_stays_an_integer(body: bytes) -> None:
    parsed = json_form.loads(body)
    assert parsed["value"] == 123456789012345678901234567890 and type(parsed["value"]) is int
    assert parsed == json.loads(body)


def test_long_numbers_inside_strings_leave_the_fast_parser_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(_body: bytes) -> None:
        raise AssertionError("parsed by the standard library")

    monkeypatch.setattr(json, "loads", refused)
    body = b'{"div": "Person seed: 3457288435413077439", "note": "\\"9999999999999999999\\"", "n": 1}'
    assert json_form.loads(body) == {"div": "Person seed: 3457288435413077439", "note": '"9999999999999999999"', "n": 1}


BIG = b"123456789012345678901234567890"  # sends the body to the standard library's parser


@pytest.mark.parametrize("tail", [b"", b', "big": ' + BIG])
@pytest.mark.parametrize(
    "head", [b'{"a": ', b'{"a": NaN', b'{"a": -Infinity', b'{"a": 1e400', b'{"a": ["\\ud800"]', b'{"a": "\xff"']
)
def test_what_is_not_json_or_no_fhir_value_is_a_value_error_on_either_parser(head: bytes, tail: bytes) -> None:
    with pytest.raises(ValueError):
        json_form.loads(head + tail + b"}")


@pytest.mark.parametrize(
    "body",
    [
        '\ufeff{"a": "é"}'.encode(),  # a byte order mark, as some clients send
        '{"a": "é"}'.encode("utf-16"),
        '{"a": "é"}'.encode("utf-32-le"),
    ],
)
def test_a_byte_order_mark_or_utf_16_32_body_reads_as_the_standard_library_reads_it(body: bytes) -> None:
    assert json_form.loads(body) == {"a": "é"}


@pytest.mark.parametrize("value", SAMPLES)
def test_the_stored_form_sorts_keys_and_reads_back_as_the_same_value(value: Any) -> None:
    stored = json_form.stored(value)
    assert json.loads(stored) == value
    assert list(json.loads(stored)) == sorted(value)
    assert (
        json_form.stored({"b": [1, {"d": None, "c": 2.5}], "a": "é"}) == '{"a":"é","b":[1,{"c":2.5,"d":null}]}'.encode()
    )
