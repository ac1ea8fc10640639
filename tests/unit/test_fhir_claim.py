"""Claims as payers receive them (records.fhir_claim): the insurer found however an EHR names it, lines priced by
`net` alone, and what a payer's front end answers with a claim edit rather than a refusal."""

from __future__ import annotations

from typing import Any

import pytest

from records import fhir_claim
from records.errors import FhirInvalid

PAYERS = fhir_claim.PayerDirectory.of(
    {"InsurerMSP": {"names": ["Humana", "CareLedger Health"], "identifiers": ["http://payers.example|PAYER-7"]}}
)


def claim(**changes: Any) -> dict[str, Any]:
    """A Claim shaped as Synthea exports it: insurer by display, coverage by display, lines with `net` only."""
    base: dict[str, Any] = {
        "resourceType": "Claim",
        "status": "active",
        "billablePeriod": {"start": "2023-02-01T10:00:00Z"},
        "insurer": {"display": "Humana"},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "Humana"}}],
        "item": [
            {"sequence": 1, "productOrService": {"coding": [{"code": "185345009"}]}, "net": {"value": 129.16}},
            {"sequence": 2, "productOrService": {"coding": [{"code": "410620009"}]}, "net": {"value": 10.84}},
        ],
        "total": {"value": 140.0, "currency": "USD"},
    }
    return base | changes


def submitted(c: dict[str, Any]) -> fhir_claim.ClaimForLedger:
    found = fhir_claim.for_ledger(c, "k" * 64, "p" * 64, "d" * 64, PAYERS)
    assert found is not None
    return found


def test_a_claim_priced_by_net_and_naming_its_insurer_by_display_is_submitted_without_edits() -> None:
    c = submitted(claim())
    assert c.submission["insurer"] == "InsurerMSP"
    assert c.submission["totalCents"] == 14000
    assert [line["netCents"] for line in c.detail["lines"]] == [12916, 1084]
    assert "edits" not in c.detail
    assert c.detail["coverage"] == "none"  # by display only: the insurer finds the member's Coverage itself


@pytest.mark.parametrize(
    "names",
    [
        {"insurer": {"identifier": {"system": "http://payers.example", "value": "PAYER-7"}}},
        {"insurer": {"reference": "Organization?identifier=http://payers.example|PAYER-7"}},
        {"insurer": {}, "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "careledger health"}}]},
        {
            "insurer": {},
            "insurance": [
                {
                    "sequence": 1,
                    "focal": True,
                    "coverage": {"identifier": {"system": "urn:careledger:msp", "value": "InsurerMSP"}},
                }
            ],
        },
    ],
)
def test_the_insurer_is_found_by_identifier_reference_or_the_coverage(names: dict[str, Any]) -> None:
    assert submitted(claim(**names)).submission["insurer"] == "InsurerMSP"


def test_a_claim_naming_no_payer_of_the_consortium_is_not_submitted() -> None:
    c = claim(
        insurer={"display": "A payer elsewhere"}, insurance=[{"sequence": 1, "coverage": {"display": "Elsewhere"}}]
    )
    assert fhir_claim.for_ledger(c, "k" * 64, "p" * 64, "d" * 64, PAYERS) is None


def test_a_total_its_lines_do_not_add_up_to_is_a_claim_edit_not_a_refusal() -> None:
    c = submitted(claim(total={"value": 150.0, "currency": "USD"}))
    assert c.submission["totalCents"] == 15000  # what the provider billed
    assert c.detail["edits"] == [{"sequence": 0, "reason": "16", "remark": "M54"}]


def test_a_line_without_a_charge_is_a_claim_edit_not_a_refusal() -> None:
    items = claim()["item"] + [{"sequence": 3, "productOrService": {"coding": [{"code": "99999"}]}}]
    c = submitted(claim(item=items))
    assert {"sequence": 3, "reason": "16", "remark": "M79"} in c.detail["edits"]


def test_what_r4_forbids_is_still_refused() -> None:
    bad = claim()["item"][0] | {"quantity": {"value": 2}, "unitPrice": {"value": 10.0}, "net": {"value": 25.0}}
    with pytest.raises(FhirInvalid):
        fhir_claim.for_ledger(claim(item=[bad]), "k" * 64, "p" * 64, "d" * 64, PAYERS)


def test_amounts_with_binary_float_noise_are_kept_in_whole_cents() -> None:
    """Synthea's 2021 releases total a Claim as a sum of doubles: R4 allows any precision, the ledger keeps cents."""
    c = submitted(claim(total={"value": 140.00000000000003, "currency": "USD"}))
    assert c.submission["totalCents"] == 14000
    assert "edits" not in c.detail  # the total still agrees with its lines
    items = [claim()["item"][0] | {"net": {"value": 129.15999999999997}}, claim()["item"][1]]
    assert [line["netCents"] for line in submitted(claim(item=items)).detail["lines"]] == [12916, 1084]


def test_a_unit_price_of_a_fraction_of_a_cent_is_multiplied_before_it_is_rounded() -> None:
    item = {"sequence": 1, "productOrService": {"coding": [{"code": "J1100"}]}, "quantity": {"value": 30}}
    c = submitted(claim(item=[item | {"unitPrice": {"value": 0.125}}], total={"value": 3.75}))
    assert c.detail["lines"][0]["netCents"] == 375  # 30 x 0.125, not 30 x 12 cents
    assert c.detail["lines"][0]["unitPriceCents"] == 0  # 12.5 cents has no exact form on chain: the net says it
    assert c.submission["totalCents"] == 375 and "edits" not in c.detail
    thirds = item | {"quantity": {"value": 3}, "unitPrice": {"value": 129.16 / 3}, "net": {"value": 129.16}}
    c = submitted(claim(item=[thirds], total={"value": 129.16}))
    assert (c.detail["lines"][0]["netCents"], c.detail["lines"][0]["unitPriceCents"]) == (12916, 0)
    whole = item | {"quantity": {"value": 3}, "unitPrice": {"value": 2.5}}
    assert submitted(claim(item=[whole], total={"value": 7.5})).detail["lines"][0]["unitPriceCents"] == 250


def test_a_total_is_compared_with_the_exact_sum_of_its_lines() -> None:
    item = {"sequence": 1, "productOrService": {"coding": [{"code": "J1100"}]}, "net": {"value": 0.333}}
    items = [item, item | {"sequence": 2}, item | {"sequence": 3}]
    c = submitted(claim(item=items, total={"value": 0.999}))
    assert "edits" not in c.detail  # 0.999 is what the lines add up to, whatever their cents
    assert c.submission["totalCents"] == sum(line["netCents"] for line in c.detail["lines"]) == 99


@pytest.mark.parametrize("value", ["Infinity", "NaN", "ten", "1e999999"])
def test_an_amount_that_is_not_a_number_is_refused(value: str) -> None:
    with pytest.raises(FhirInvalid):
        fhir_claim.for_ledger(claim(total={"value": value}), "k" * 64, "p" * 64, "d" * 64, PAYERS)


def coverage(payor: dict[str, Any], **changes: Any) -> dict[str, Any]:
    base = {"resourceType": "Coverage", "id": "cov-1", "status": "active", "payor": [payor]}
    return base | changes


def naming_nothing(**changes: Any) -> dict[str, Any]:
    """A Claim whose own elements name no payer of the consortium (as Synthea's 'NO_INSURANCE' claims do)."""
    return claim(insurer={}, insurance=[{"sequence": 1, "focal": True, "coverage": {"display": "NO_INSURANCE"}}]) | (
        changes
    )


def insurer_of(c: dict[str, Any], held: fhir_claim.HeldHere) -> str | None:
    found = fhir_claim.for_ledger(c, "k" * 64, "p" * 64, "d" * 64, PAYERS, held)
    return None if found is None else str(found.submission["insurer"])


def test_the_insurer_is_found_from_the_patients_coverage_held_here() -> None:
    held = fhir_claim.HeldHere(coverages=lambda: [coverage({"display": "Humana"})])
    assert insurer_of(naming_nothing(), held) == "InsurerMSP"


def test_the_patients_coverage_is_looked_up_only_when_the_claim_names_no_payer() -> None:
    def never() -> list[dict[str, Any]]:
        raise AssertionError("the claim names its payer: no lookup")

    assert insurer_of(claim(), fhir_claim.HeldHere(coverages=never)) == "InsurerMSP"


def test_of_the_patients_coverages_the_one_in_force_on_the_service_date_decides() -> None:
    elsewhere = {"display": "A payer elsewhere"}
    ours = {"identifier": {"system": "http://payers.example", "value": "PAYER-7"}}
    coverages = [
        coverage(elsewhere, id="a", status="cancelled"),  # not active
        coverage(elsewhere, id="b", period={"start": "2024-01-01"}),  # begins after the service (2023-02-01)
        coverage(ours, id="c", period={"start": "2020-01-01", "end": "2023-12-31"}, order=2),
    ]
    assert insurer_of(naming_nothing(), fhir_claim.HeldHere(coverages=lambda: coverages)) == "InsurerMSP"
    assert insurer_of(naming_nothing(), fhir_claim.HeldHere(coverages=lambda: coverages[:2])) is None


def test_a_coverage_the_claim_references_names_the_payer_contained_or_held_here() -> None:
    held_coverage = coverage({"reference": "Organization/org-9"}, id="cov-9")
    payer_org = {"resourceType": "Organization", "id": "org-9", "name": "Some plan", "alias": ["CareLedger Health"]}
    held = {"Coverage/cov-9": held_coverage, "Organization/org-9": payer_org}
    lookup = fhir_claim.HeldHere(resource=held.get)
    by_reference = naming_nothing(
        insurance=[{"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/cov-9"}}]
    )
    assert insurer_of(by_reference, lookup) == "InsurerMSP"
    contained = naming_nothing(
        contained=[coverage({"display": "Humana"}, id="c1")],
        insurance=[{"sequence": 1, "focal": True, "coverage": {"reference": "#c1"}}],
    )
    assert insurer_of(contained, fhir_claim.NOTHING_HELD) == "InsurerMSP"


def test_an_insurer_organization_held_here_is_found_by_its_identifier() -> None:
    org = {"resourceType": "Organization", "identifier": [{"system": "http://payers.example", "value": "PAYER-7"}]}
    held = fhir_claim.HeldHere(resource={"Organization/o1": org}.get)
    assert insurer_of(naming_nothing(insurer={"reference": "Organization/o1"}), held) == "InsurerMSP"
    assert insurer_of(naming_nothing(insurer={"reference": "Organization/o2"}), held) is None
