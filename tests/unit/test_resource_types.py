"""The resource types the server stores are exactly those its FHIR models know, less what is not a record."""

from __future__ import annotations

from fhir.resources.R4B import fhirtypes, get_fhir_model_class
from fhir.resources.R4B.resource import Resource

from records import validation as fv


def model_resource_types() -> set[str]:
    found = set()
    for name in dir(fhirtypes):
        if not name.endswith("Type"):
            continue
        try:
            model = get_fhir_model_class(name.removesuffix("Type"))
        except (ValueError, AttributeError):
            continue
        if issubclass(model, Resource) and model.get_resource_type() not in ("Resource", "DomainResource"):
            found.add(model.get_resource_type())
    return found


def test_the_written_list_of_resource_types_is_the_models_list() -> None:
    assert model_resource_types() == fv.RESOURCE_TYPES
    assert fv.RESOURCE_TYPES - set(fv.NOT_STORED) == fv.STORED_TYPES
    assert {"Organization", "Practitioner", "CareTeam", "ExplanationOfBenefit", "Claim"} <= fv.STORED_TYPES
