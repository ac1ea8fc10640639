"""The fast structural check (`records.fhir_structure`) against the models it stands in for: it accepts every real
resource without falling back to the model, and it never accepts what the model refuses, neither among mutations of
those real resources nor, for each primitive type, among generated values."""

from __future__ import annotations

import base64
import copy
import json
import typing
from functools import cache
from pathlib import Path
from typing import Any

import pydantic
import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from records import fhir_structure as fs
from records import synthetic
from records import validation as fv

FIXTURES = Path(__file__).resolve().parent.parent / "data" / "synthea"


@cache
def real_resources() -> tuple[dict[str, Any], ...]:
    """Every resource of the Synthea fixtures and of the synthetic generator (each kind it makes)."""
    found = [e["resource"] for p in sorted(FIXTURES.glob("*.json")) for e in json.loads(p.read_text())["entry"]]
    for seed in range(5):
        found += [e["resource"] for e in synthetic.Synthetic.seeded(seed).transaction(12)["entry"]]
    found += [
        synthetic.claim("p1", "InsurerMSP", [("99213", 1, "75.00"), ("85025", 2, "12.5")], "2024-03-01", "Coverage/c"),
        synthetic.coverage("MPI-1", "InsurerMSP", "2024-01-01", "2024-12-31"),
        synthetic.consent("p1", "ClinicMSP"),
    ]
    return tuple(found)


def model_of(resource: dict[str, Any]) -> fs.Model:
    return get_fhir_model_class(resource["resourceType"])


def model_accepts(resource: Any, model: fs.Model) -> bool:
    try:
        model.model_validate(resource)
    except pydantic.ValidationError:
        return False
    except Exception:  # fhir_core raises a few other errors (a KeyError for an unknown contained type): refused too
        return False
    return True


def test_every_real_resource_passes_the_fast_check_and_the_model() -> None:
    resources = real_resources()
    assert len({r["resourceType"] for r in resources}) >= 18
    for resource in resources:
        assert fs.conforms(resource, model_of(resource)), resource["resourceType"]
        assert model_accepts(resource, model_of(resource)), resource["resourceType"]


def test_a_real_bundle_is_validated_without_building_one_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_model(*args: Any) -> list[Any]:
        raise AssertionError("the model was asked")

    monkeypatch.setattr(fv, "_structure_issues", no_model)
    body = (FIXTURES / "lindsay928_gerlach374_2023.json").read_bytes()
    entries = fv.transaction_entries(fv.envelope(body))
    assert len(entries) == 314
    assert fv.validate_resource(entries[0].resource, "R") == entries[0].resource["resourceType"]


@pytest.mark.parametrize(
    ("resource", "valid"),
    [
        # a required primitive may be replaced by extensions saying why it is absent
        ({"resourceType": "Observation", "code": {"text": "x"}, "_status": {"extension": [{"url": "u"}]}}, True),
        ({"resourceType": "Observation", "code": {"text": "x"}, "_status": {"id": "a"}}, False),
        ({"resourceType": "Observation", "status": "final"}, False),  # code is required
        ({"resourceType": "Observation", "status": "final", "code": {}, "valueBoolean": True}, True),
        (
            {"resourceType": "Observation", "status": "final", "code": {}, "valueBoolean": True, "valueString": "x"},
            False,
        ),
        ({"resourceType": "Patient", "name": [{"given": ["A", None], "_given": [None, {"id": "g"}]}]}, True),
        ({"resourceType": "Patient", "name": [{"given": "A"}]}, False),
        ({"resourceType": "Patient", "name": [None]}, False),
        ({"resourceType": "Patient", "multipleBirthInteger": True}, True),  # pydantic's lax mode: left to the model
        ({"resourceType": "Patient", "multipleBirthInteger": 1.5}, False),
        ({"resourceType": "Patient", "birthDate": "2023-02-29"}, False),
        ({"resourceType": "Patient", "contained": [{"resourceType": "Patient", "gender": 1}]}, False),
        ({"resourceType": "Patient", "contained": [{"resourceType": "Coding", "code": "x"}]}, False),
        ({"resourceType": "Patient", "_gender": {}}, False),
        ({"resourceType": "Patient", "bogus": 1}, False),
    ],
)
def test_hand_picked_cases_get_the_models_verdict(resource: dict[str, Any], valid: bool) -> None:
    """Where the fast check is meant to be exact, it is; where it defers (an empty object), the model is right."""
    model = model_of(resource)
    assert model_accepts(resource, model) is valid
    assert not fs.conforms(resource, model) or valid


# --- mutations of real resources ----------------------------------------------------------------------------------

ODD_VALUES: list[Any] = [
    None, "", " ", "a  b", " a", "a\n", "\n", "\u00a0", "\x0b", "\x1c", "x", "é", 0, -1, 1, 2**31, 2**40, 1.5, 1.0,
    float("nan"), True, False, "true", "1", "01", "1.5", "2023-02-30", "2023-13", "2023-02", "2023", "2023-01-01",
    "2023-01-01T10:00:00", "2023-01-01T10:00:00Z", "2016-12-31T23:59:60Z", "2023-01-01T10:00:00+14:01", "10:00",
    "10:00:00", "23:59:60", "YQ==", "YQ", "urn:oid:1.2", "urn:uuid:c757873d-ec9a-4326-a141-556f43239520", "a" * 256,
    {}, [], [None], [{}], {"x": 1}, {"text": "x"}, {"extension": []}, ["x"], [1],
]  # fmt: skip
ODD_KEYS = [
    "bogus", "_bogus", "status__ext", "class_fhir", "resource_type", "resourceType", "fhir_comments", "extension",
    "id", "_id", "text", "valueString", "valueBoolean", "valueQuantity", "effectiveDateTime", "effectivePeriod",
    "onsetDateTime", "onsetAge", "deceasedBoolean", "medicationCodeableConcept", "medicationReference",
    "servicedDate", "servicedPeriod", "occurrenceDateTime", "diagnosisCodeableConcept", "locationReference",
]  # fmt: skip
PLAUSIBLE: list[Any] = [
    "x", True, "2023-01-01", "2023-01-01T10:00:00Z", {"text": "x"}, {"reference": "Patient/p"}, {"value": 1},
    {"start": "2023-01-01"}, [{"url": "http://x", "valueString": "y"}],
]  # fmt: skip
BAD_CONTAINED: list[Any] = [
    {"resourceType": "Patient", "gender": 5},
    {"resourceType": "Nope"},
    {"id": "no-type"},
    {"resourceType": "Coding", "code": "x"},
    {"resourceType": "Resource", "id": "r"},
    {"resourceType": "Observation", "status": "final"},
    {"resourceType": "Patient", "contained": [{"resourceType": "Patient", "birthDate": "2023-02-30"}]},
    {"resourceType": "Patient", "id": "fine"},
    "not an object",
    None,
]


def paths(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every value's path in a JSON tree (keys and list indexes), the root included."""
    found = [at]
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*at, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += paths(value, (*at, i))
    return found


def at_path(node: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        node = node[step]
    return node


def mutate(resource: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """One random change somewhere in a copy of the resource: the kinds of mistakes integrators make."""
    mutated = copy.deepcopy(resource)
    path = data.draw(st.sampled_from(paths(mutated)))
    node = at_path(mutated, path)
    parent, last = (at_path(mutated, path[:-1]), path[-1]) if path else (None, None)
    kind = data.draw(
        st.sampled_from(["drop", "key", "wrap", "unwrap", "replace", "null", "contained", "type", "empty"])
    )
    if kind == "drop" and parent is not None:
        del parent[last]
    elif kind == "key" and isinstance(node, dict):
        node[data.draw(st.sampled_from(ODD_KEYS))] = data.draw(st.sampled_from(PLAUSIBLE + ODD_VALUES))
    elif kind == "wrap" and parent is not None:
        parent[last] = [node]
    elif kind == "unwrap" and parent is not None and isinstance(node, list) and node:
        parent[last] = node[0]
    elif kind == "replace" and parent is not None:
        parent[last] = data.draw(st.sampled_from(ODD_VALUES))
    elif kind == "null" and isinstance(node, list):
        node.insert(data.draw(st.integers(0, len(node))), None)
    elif kind == "contained" and isinstance(node, dict):
        node["contained"] = [data.draw(st.sampled_from(BAD_CONTAINED))]
    elif kind == "type" and isinstance(node, dict):
        node["resourceType"] = data.draw(st.sampled_from(["Observation", "Patient", "Coding", "Bundle", 1]))
    elif kind == "empty" and parent is not None:
        parent[last] = {} if isinstance(node, dict) else [] if isinstance(node, list) else ""
    return mutated


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_mutation_the_model_refuses_passes_the_fast_check(data: st.DataObject) -> None:
    resources = real_resources()
    original = resources[data.draw(st.integers(0, len(resources) - 1))]
    mutated = original
    for _ in range(data.draw(st.integers(1, 3))):
        mutated = mutate(mutated, data)
    model = model_of(original)
    if not model_accepts(mutated, model):
        assert not fs.conforms(mutated, model)


# --- each primitive rule against pydantic -------------------------------------------------------------------------

FIXTURE_TYPES = [
    "Observation", "Claim", "DiagnosticReport", "Encounter", "DocumentReference", "ExplanationOfBenefit", "Condition",
    "MedicationRequest", "CareTeam", "CarePlan", "Medication", "MedicationAdministration", "Procedure", "Patient",
    "SupplyDelivery", "Provenance", "Coverage", "Consent",
]  # fmt: skip


@cache
def primitive_rules() -> list[tuple[Any, fs.Check, pydantic.TypeAdapter[Any]]]:
    rules = fs.primitive_checks(fs.models_under(get_fhir_model_class(t) for t in FIXTURE_TYPES))
    return [(annotation, check, pydantic.TypeAdapter(annotation)) for annotation, check in rules]


def test_every_primitive_type_of_fhir_core_has_a_rule() -> None:
    names = {
        "String", "Code", "Id", "Uri", "Canonical", "Oid", "Markdown", "Url", "Xhtml", "Integer", "UnsignedInt",
        "PositiveInt", "Decimal", "Date", "DateTime", "Instant", "Time", "Base64Binary",
    }  # fmt: skip
    found = {type(m).__name__ for a, _, _ in primitive_rules() for m in getattr(a, "__metadata__", ())}
    assert names <= found
    assert any(a is bool for a, _, _ in primitive_rules())


def _moment(y: int, mo: int, d: int, h: int, mi: int, s: int, frac: str, zone: str, shape: int) -> str:
    date = f"{y:04d}-{mo:02d}-{d:02d}"
    clock = f"{h:02d}:{mi:02d}:{s:02d}{frac}"
    return [f"{y:04d}", date[:7], date, f"{date}T{clock}{zone}", clock, f"{date}T{clock}"][shape]


moments = st.builds(
    _moment,
    st.sampled_from([0, 1, 999, 1000, 2023, 2024, 9999]),
    st.integers(0, 13),
    st.integers(0, 32),
    st.integers(0, 25),
    st.integers(0, 61),
    st.integers(0, 61),
    st.sampled_from(["", ".5", ".123", ".1234567", ".", ".x"]),
    st.sampled_from(["Z", "+00:00", "-05:00", "+14:00", "+14:01", "-13:59", "+15:00", "", "z", "+0500"]),
    st.integers(0, 5),
)
odd_text = st.text(st.sampled_from(list("aZ09-.:T+=/ \t\r\n\x0b\x0c\x1c\x85\u00a0\u2003\u2028é_$^")), max_size=12)
values = st.one_of(
    odd_text,
    moments,
    st.from_regex(r"urn:oid:[0-3](\.[0-9]{1,3}){0,3}\n?", fullmatch=True),
    st.binary(max_size=9).map(lambda b: base64.b64encode(b).decode()),
    st.binary(max_size=9).map(lambda b: base64.b64encode(b).decode()[:-1] + "\n"),
    st.integers(-(2**32), 2**32),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=3000, deadline=None)
@given(index=st.integers(0, 100), value=values)
def test_no_primitive_value_pydantic_refuses_passes_the_rule(index: int, value: Any) -> None:
    rules = primitive_rules()
    _, check, adapter = rules[index % len(rules)]
    if check(value):
        adapter.validate_python(value)  # raises if pydantic refuses what the rule accepted


def test_the_rules_accept_ordinary_values() -> None:
    """The property test above would pass for rules that accept nothing: these must pass the fast path."""
    ordinary = {
        "String": "Ann", "Code": "final", "Id": "a-1.b", "Uri": "http://loinc.org", "Canonical": "http://x|1",
        "Oid": "urn:oid:1.2.3", "Markdown": "*a*\nb", "Url": "http://x", "Xhtml": "<div>x</div>", "Integer": -3,
        "UnsignedInt": 0, "PositiveInt": 1, "Decimal": 1.5, "Date": "2024-02-29", "Instant": "2023-01-01T10:00:00Z",
        "DateTime": "2023-01-01T10:00:00.123-05:00", "Time": "10:00:00", "Base64Binary": "YWJj",
    }  # fmt: skip
    for annotation, check, _ in primitive_rules():
        for marker in getattr(annotation, "__metadata__", ()):
            if type(marker).__name__ in ordinary:
                assert check(ordinary[type(marker).__name__]), annotation
    assert all(check(True) for a, check, _ in primitive_rules() if a is bool)
    assert typing.get_origin(primitive_rules()[0][0]) in (typing.Annotated, None)
