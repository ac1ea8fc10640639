"""FHIR input checks beyond the models: required bindings at any depth and in lists, value sets that R4 continues past
what the models list, every problem of a bundle in one answer, and the size limits (413)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.deps import Services
from records import validation as fv
from records.errors import FhirInvalid, Malformed, TooCostly
from tests.unit.gateway_harness import Gateway, token

PATIENT = {"resourceType": "Patient", "gender": "female", "birthDate": "1970-01-01"}


def issues_of(resource: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(FhirInvalid) as refused:
        fv.validate_resource(resource, "R")
    return [(i.code, i.expression) for i in refused.value.issues]


def transaction(*resources: dict[str, Any]) -> dict[str, Any]:
    entries = [{"resource": r, "request": {"method": "POST", "url": r["resourceType"]}} for r in resources]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def test_a_required_binding_nested_in_a_list_of_elements_is_checked() -> None:
    patient = {**PATIENT, "contact": [{"gender": "male"}, {"gender": "m"}]}
    assert issues_of(patient) == [("code-invalid", "R.contact[1].gender")]


def test_a_list_valued_coded_element_is_checked_item_by_item() -> None:
    allergy = {
        "resourceType": "AllergyIntolerance",
        "patient": {"reference": "Patient/p"},
        "category": ["food", "medicine", "environment", "cat"],
    }
    assert issues_of(allergy) == [("code-invalid", "R.category[1]"), ("code-invalid", "R.category[3]")]


def test_a_contained_resource_is_checked_with_its_own_model() -> None:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "contained": [{**PATIENT, "id": "p1", "gender": "f"}],
    }
    assert issues_of(observation) == [("code-invalid", "R.contained[0].gender")]


@pytest.mark.parametrize(
    ("rtype", "status", "extra"),
    [
        ("Observation", "cancelled", {"code": {"text": "x"}}),
        ("Observation", "entered-in-error", {"code": {"text": "x"}}),
        ("DiagnosticReport", "amended", {"code": {"text": "x"}}),
        ("DiagnosticReport", "appended", {"code": {"text": "x"}}),
        ("Encounter", "entered-in-error", {"class": {"code": "AMB"}}),
        ("Encounter", "unknown", {"class": {"code": "AMB"}}),
        ("Task", "completed", {"intent": "order"}),
    ],
)
def test_statuses_r4_continues_past_the_models_list_are_accepted(
    rtype: str, status: str, extra: dict[str, Any]
) -> None:
    """fhir.resources lists ObservationStatus as "registered | preliminary | final | amended +": the "+" is R4's
    "and the codes below amended", not a code; an amended, cancelled or entered-in-error record is valid."""
    fv.validate_resource({"resourceType": rtype, "status": status, **extra}, "R")


def test_the_continuation_mark_itself_is_not_a_code() -> None:
    assert issues_of({"resourceType": "Observation", "status": "+", "code": {"text": "x"}}) == [
        ("code-invalid", "R.status")
    ]


def test_structure_and_binding_problems_of_one_resource_come_together() -> None:
    patient = {**PATIENT, "gender": "x", "birthDate": "not a date"}
    found = issues_of(patient)
    assert ("code-invalid", "R.gender") in found
    assert any(code == "structure" and where.startswith("R.birthDate") for code, where in found)


def test_every_problem_of_every_entry_is_listed() -> None:
    bundle = transaction(
        {**PATIENT, "gender": "x"},
        {"resourceType": "Observation", "status": "done", "code": {"text": "x"}},
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": "urn:uuid:nope"},
        },
    )
    with pytest.raises(FhirInvalid) as refused:
        fv.transaction_entries(fv.envelope(json.dumps(bundle).encode()))
    assert [(i.code, i.expression) for i in refused.value.issues] == [
        ("code-invalid", "Bundle.entry[0].resource.gender"),
        ("code-invalid", "Bundle.entry[1].resource.status"),
        ("invariant", "Bundle.entry[2].resource.subject.reference"),
    ]


def test_a_bundle_over_the_byte_limit_is_too_costly() -> None:
    body = json.dumps(transaction(PATIENT)).encode()
    with pytest.raises(TooCostly) as refused:
        fv.envelope(body, fv.Limits(max_bytes=len(body) - 1))
    assert refused.value.issues[0].code == "too-costly"
    fv.envelope(body, fv.Limits(max_bytes=len(body)))  # exactly at the limit is fine


def test_a_bundle_over_the_entry_limit_is_too_costly() -> None:
    body = json.dumps(transaction(*[PATIENT] * 4)).encode()
    with pytest.raises(TooCostly) as refused:
        fv.envelope(body, fv.Limits(max_entries=3))
    assert refused.value.issues[0].expression == "Bundle.entry"
    assert len(fv.envelope(body, fv.Limits(max_entries=4)).raw_entries) == 4


def test_json_nested_deeper_than_any_resource_is_refused_before_parsing() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(fv.MAX_DEPTH + 1):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(Malformed):
        fv.parse_json(json.dumps(deep).encode(), fv.Limits())


@pytest.fixture
def small_gw(tmp_path: Path) -> Iterator[Gateway]:
    """A gateway whose limits are 4 KiB and 3 entries a bundle."""
    g = Gateway(tmp_path)
    svc: Services = g.app.state.services
    g.app.state.services = replace(svc, config=replace(svc.config, limits=fv.Limits(max_bytes=4096, max_entries=3)))
    yield g
    g.close()


def test_the_gateway_answers_413_for_too_many_bytes_or_entries_and_stores_nothing(small_gw: Gateway) -> None:
    async def scenario(g: Gateway) -> None:
        assert g.http is not None
        big = transaction({**PATIENT, "name": [{"text": "x" * 5000}]})
        declared = await g.post("/fhir", big)  # refused on its Content-Length, before the body is read
        many = await g.post("/fhir", transaction(*[PATIENT] * 4))

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: refused once the body passes the limit
            body = json.dumps(big).encode()
            for at in range(0, len(body), 1000):
                yield body[at : at + 1000]

        headers = {**token(), "Content-Type": "application/fhir+json"}
        streamed = await g.http.post("/fhir", content=chunks(), headers=headers)
        for r in (declared, many, streamed):
            assert r.status_code == 413, r.text
            assert r.json()["issue"][0]["code"] == "too-costly"
        assert g.rows() == 0

    small_gw.run(scenario)


@pytest.mark.parametrize("rtype", ["Coding", "Resource", "DomainResource", "Parameters", "OperationOutcome"])
def test_a_data_type_or_an_abstract_or_unstored_type_is_not_a_record(rtype: str) -> None:
    assert issues_of({"resourceType": rtype}) == [("not-supported", "R.resourceType")]


def test_every_stored_type_is_accepted_without_loading_the_list_first() -> None:
    fv.validate_resource({"resourceType": "ImagingStudy", "status": "available", "subject": {"reference": "P/1"}}, "R")
    assert "ImagingStudy" in fv.STORED_TYPES and "Coding" not in fv.STORED_TYPES
    assert not set(fv.NOT_STORED) & fv.STORED_TYPES
