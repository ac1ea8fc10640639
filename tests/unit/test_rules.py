"""The adjudication rules engine, table-driven, and what the listener dispatches for each event."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fabric_gateway import ChaincodeEvent
from workers import rules
from workers.listener import block_dispatches, claim_events, dispatches, tasks_for

RULES = rules.Rules(
    network_providers=frozenset({"HospitalMSP"}),
    fee_schedule={"99213": 11000},
    prior_auth_codes=frozenset({"27447"}),
    prior_auth_action="deny",
    duplicate_window_days=3,
    retention_seconds=86400,
)
CLAIM = {"claimId": "c1", "insurer": "InsurerMSP", "provider": "HospitalMSP", "serviceDate": "2026-06-10"}
COVERED = {
    "resourceType": "Coverage",
    "status": "active",
    "payor": [{"identifier": {"system": "urn:careledger:msp", "value": "InsurerMSP"}}],
    "period": {"start": "2026-01-01", "end": "2026-12-31"},
}


def line(seq: int, code: str, qty: int, unit: int) -> dict[str, Any]:
    return {"sequence": seq, "code": code, "quantity": qty, "unitPriceCents": unit, "netCents": qty * unit}


def outcomes(decision: rules.Decision) -> list[tuple[str, int, list[str]]]:
    return [(d.outcome, d.approved_cents, d.reasons) for d in decision.lines]


CASES = [
    ("approved as billed", {}, [line(1, "85025", 2, 2000)], [COVERED], [], [("approved", 4000, [])]),
    ("over the fee schedule", {}, [line(1, "99213", 1, 12500)], [COVERED], [], [("partial", 11000, ["45"])]),
    ("no coverage at all", {}, [line(1, "85025", 1, 100)], [], [], [("denied", 0, ["31"])]),
    (
        "coverage ended",
        {},
        [line(1, "85025", 1, 100)],
        [COVERED | {"period": {"start": "2025-01-01", "end": "2025-12-31"}}],
        [],
        [("denied", 0, ["27"])],
    ),
    (
        "coverage not yet begun",
        {},
        [line(1, "85025", 1, 100)],
        [COVERED | {"period": {"start": "2026-07-01"}}],
        [],
        [("denied", 0, ["26"])],
    ),
    (
        "another insurer's coverage",
        {},
        [line(1, "85025", 1, 100)],
        [COVERED | {"payor": [{"identifier": {"value": "OtherMSP"}}]}],
        [],
        [("denied", 0, ["31"])],
    ),
    ("out of network", {"provider": "ClinicMSP"}, [line(1, "85025", 1, 100)], [COVERED], [], [("denied", 0, ["242"])]),
    ("prior authorisation", {}, [line(1, "27447", 1, 100)], [COVERED], [], [("denied", 0, ["197"])]),
    (
        "near-duplicate line within the window",
        {},
        [line(1, "85025", 1, 100), line(2, "80053", 1, 100)],
        [COVERED],
        [rules.PriorLine("c0", "85025", "2026-06-08")],
        [("denied", 0, ["18"]), ("approved", 100, [])],
    ),
    (
        "same code outside the window",
        {},
        [line(1, "85025", 1, 100)],
        [COVERED],
        [rules.PriorLine("c0", "85025", "2026-06-01")],
        [("approved", 100, [])],
    ),
    (
        "its own earlier lines are no duplicate (a retried task)",
        {},
        [line(1, "85025", 1, 100)],
        [COVERED],
        [rules.PriorLine("c1", "85025", "2026-06-10")],
        [("approved", 100, [])],
    ),
]


@pytest.mark.parametrize(("name", "claim_changes", "lines", "coverages", "history", "expected"), CASES)
def test_rules(
    name: str,
    claim_changes: dict[str, Any],
    lines: list[dict[str, Any]],
    coverages: list[dict[str, Any]],
    history: list[rules.PriorLine],
    expected: list[tuple[str, int, list[str]]],
) -> None:
    decision = rules.decide(RULES, CLAIM | claim_changes, lines, coverages, history)
    assert outcomes(decision) == expected, name


def test_review_codes_are_paid_only_when_the_provider_disclosed_the_record() -> None:
    review = rules.Rules.from_config({"records_review": {"codes": ["97110"]}})
    lines = [line(1, "97110", 1, 100), line(2, "85025", 1, 100)]
    assert review.needs_review(lines) and review.review_purpose == "HPAYMT"
    refused = rules.decide(review, CLAIM, lines, [COVERED], [], records_disclosed=False)
    assert outcomes(refused) == [("denied", 0, ["252"]), ("approved", 100, [])]
    disclosed = rules.decide(review, CLAIM, lines, [COVERED], [], records_disclosed=True)
    assert outcomes(disclosed) == [("approved", 100, []), ("approved", 100, [])]


def test_prior_authorisation_can_pend_the_claim() -> None:
    pend = rules.Rules.from_config({"prior_authorization": {"codes": ["27447"], "action": "pend"}})
    decision = rules.decide(pend, CLAIM, [line(1, "27447", 1, 100)], [COVERED], [])
    assert decision.pended and decision.lines == [] and "27447" in decision.note
    with pytest.raises(ValueError):
        rules.Rules.from_config({"prior_authorization": {"action": "maybe"}})


def test_listener_dispatch_per_org() -> None:
    claim = {"claimId": "c1", "insurer": "InsurerMSP", "provider": "HospitalMSP"}
    assert [d.task for d in tasks_for("InsurerMSP", "Claims.Submitted", "tx1", claim)] == [
        "careledger.adjudicate",
        "careledger.notify",
    ]
    assert tasks_for("HospitalMSP", "Claims.Submitted", "tx1", claim) == []
    assert tasks_for("ClinicMSP", "Claims.Adjudicated", "tx2", claim) == []
    fetch = tasks_for("HospitalMSP", "Claims.Adjudicated", "tx2", claim)
    assert [d.task for d in fetch] == ["careledger.fetch_claim_response"]
    assert fetch[0].task_id == "HospitalMSP:tx2:Claims.Adjudicated:c1:fetch"  # a replayed event gets the same id
    assert [d.task for d in tasks_for("InsurerMSP", "Claims.Adjudicated", "tx2", claim)] == ["careledger.pay"]


def test_a_batch_event_stands_for_each_claim_it_lists() -> None:
    claims = [{"claimId": f"c{i}", "insurer": "InsurerMSP", "provider": "HospitalMSP"} for i in range(3)]
    payload = json.dumps({"provider": "HospitalMSP", "txId": "tx9", "claims": claims}).encode()
    events = claim_events("Claims.SubmittedBatch", json.loads(payload))
    assert [(name, c["claimId"]) for name, c in events] == [("Claims.Submitted", f"c{i}") for i in range(3)]
    insurer = dispatches("InsurerMSP", "Claims.SubmittedBatch", "tx9", 7, payload)
    # one adjudication for the whole batch, one notification per claim, every task id its own
    assert [d.task for d in insurer] == ["careledger.adjudicate_batch"] + ["careledger.notify"] * 3
    assert len({d.task_id for d in insurer}) == 4
    assert [c["eventBlock"] for c in insurer[0].args[0]] == [7, 7, 7]
    assert dispatches("HospitalMSP", "Claims.SubmittedBatch", "tx9", 7, payload) == []


def _event(tx: str, name: str, payload: dict[str, Any], block: int = 7) -> ChaincodeEvent:
    return ChaincodeEvent(block, tx, "careledger", name, json.dumps(payload).encode())


def _claim(cid: str, provider: str = "HospitalMSP") -> dict[str, Any]:
    return {"claimId": cid, "insurer": "InsurerMSP", "provider": provider}


def test_the_claims_a_provider_submits_in_one_block_are_adjudicated_together() -> None:
    block = [
        _event("tx1", "Claims.Submitted", _claim("a")),
        _event("tx2", "Claims.SubmittedBatch", {"provider": "HospitalMSP", "claims": [_claim("b"), _claim("c")]}),
        _event("tx3", "Claims.Submitted", _claim("d", provider="ClinicMSP")),
        _event("tx4", "Claims.Submitted", _claim("e")),
        _event("tx5", "Claims.Adjudicated", _claim("z") | {"outcome": "approved"}),
        _event("tx6", "Records.Registered", {}),
    ]
    insurer = block_dispatches("InsurerMSP", block)
    adjudications = [
        (d.task, [c["claimId"] for c in d.args[0]] if "batch" in d.task else d.args[0]["claimId"])
        for d in insurer
        if "adjudicate" in d.task
    ]
    # one provider's claims of the block: one batch; a claim alone in the block keeps its own task (and id)
    assert sorted(adjudications, key=str) == sorted(
        [("careledger.adjudicate_batch", ["a", "b", "c", "e"]), ("careledger.adjudicate", "d")], key=str
    )
    single = next(d for d in insurer if d.task == "careledger.adjudicate")
    assert single.task_id == "InsurerMSP:tx3:Claims.Submitted:d:adjudicate"
    batch = next(d for d in insurer if d.task == "careledger.adjudicate_batch")
    assert {c["eventBlock"] for c in batch.args[0]} == {7}
    # the block's five notifications in one task, each as its own task would have it; the one payment as it is
    others = {d.task: d for d in insurer if "adjudicate" not in d.task}
    assert sorted(others) == ["careledger.notify_many", "careledger.pay"]
    notified = others["careledger.notify_many"].args[0]
    assert sorted(c["claimId"] for _, c, _ in notified) == ["a", "b", "c", "d", "e"]
    assert len({delivery for _, _, delivery in notified}) == 5
    assert [d.task_id for d in block_dispatches("InsurerMSP", block)] == [d.task_id for d in insurer]  # a replay
    assert len({d.task_id for d in insurer}) == len(insurer)
    # the provider gets nothing to adjudicate, only what the adjudicated claim means for it
    assert [d.task for d in block_dispatches("HospitalMSP", block)] == ["careledger.fetch_claim_response"]


def test_the_answers_of_one_block_are_fetched_per_insurer_and_paid_together() -> None:
    def adjudicated(cid: str, insurer: str = "InsurerMSP") -> dict[str, Any]:
        return _claim(cid) | {"insurer": insurer, "outcome": "approved"}

    block = [
        _event("tx1", "Claims.AdjudicatedBatch", {"claims": [adjudicated("a"), adjudicated("b")]}),
        _event("tx2", "Claims.Adjudicated", adjudicated("c")),
        _event("tx3", "Claims.Adjudicated", adjudicated("d", insurer="OtherInsurerMSP")),
    ]
    hospital = block_dispatches("HospitalMSP", block)
    fetches = {d.task: d for d in hospital}
    assert sorted(fetches) == ["careledger.fetch_claim_response", "careledger.fetch_claim_responses"]
    many = fetches["careledger.fetch_claim_responses"].args[0]
    assert [c["claimId"] for c, _ in many] == ["a", "b", "c"]  # one insurer's answers in one task
    assert fetches["careledger.fetch_claim_response"].args[0]["claimId"] == "d"  # the other insurer's alone
    assert [d.task_id for d in block_dispatches("HospitalMSP", block)] == [d.task_id for d in hospital]
    (pay,) = block_dispatches("InsurerMSP", block)
    assert (pay.task, [c["claimId"] for c in pay.args[0]]) == ("careledger.pay_many", ["a", "b", "c"])


def test_the_prior_authorisations_of_one_block_are_decided_together() -> None:
    def request(cid: str, provider: str = "HospitalMSP") -> dict[str, Any]:
        return _claim(cid, provider) | {"use": "preauthorization", "status": "submitted"}

    block = [
        _event("tx1", "Claims.SubmittedBatch", {"claims": [_claim("a"), request("p1"), request("p2")]}),
        _event("tx2", "Claims.PreauthSubmitted", request("p3")),
        _event("tx3", "Claims.PreauthAppealed", request("p4") | {"status": "appealed", "decisions": [{}]}),
        _event("tx4", "Claims.PreauthSubmitted", request("p5", provider="ClinicMSP")),
    ]
    insurer = block_dispatches("InsurerMSP", block)
    decided = {d.task: d for d in insurer if "adjudicate" in d.task or "preauth" in d.task}
    # the claim of the batch is adjudicated on its own; one provider's requests of the block are decided in one task
    # (new and appealed alike); the other provider's request keeps its own task
    assert [c["claimId"] for c in decided["careledger.adjudicate_batch"].args[0]] == ["a"]
    assert [c["claimId"] for c in decided["careledger.decide_preauth_batch"].args[0]] == ["p1", "p2", "p3", "p4"]
    assert decided["careledger.decide_preauth"].args[0]["claimId"] == "p5"
    assert [d.task_id for d in block_dispatches("InsurerMSP", block)] == [d.task_id for d in insurer]  # a replay
    notified = next(d for d in insurer if d.task == "careledger.notify_many").args[0]
    assert sorted((event, c["claimId"]) for event, c, _ in notified) == [
        ("Claims.PreauthAppealed", "p4"),
        ("Claims.PreauthSubmitted", "p1"),
        ("Claims.PreauthSubmitted", "p2"),
        ("Claims.PreauthSubmitted", "p3"),
        ("Claims.PreauthSubmitted", "p5"),
        ("Claims.Submitted", "a"),
    ]
    # decisions made in a batch: the provider fetches each answer, the insurer's worker kept them already; a
    # decision a person made alone is kept by the insurer from its event
    decisions = [
        _event("tx5", "Claims.PreauthDecidedBatch", {"claims": [request("p1") | {"status": "decided"}]}),
        _event("tx6", "Claims.PreauthDecided", request("p2") | {"status": "decided"}),
    ]
    assert [(d.task, d.args[0]["claimId"]) for d in block_dispatches("InsurerMSP", decisions)] == [
        ("careledger.keep_preauth", "p2")
    ]
    fetched = block_dispatches("HospitalMSP", decisions)
    assert [(d.task, [c["claimId"] for c, _ in d.args[0]]) for d in fetched] == [
        ("careledger.fetch_claim_responses", ["p1", "p2"])
    ]


def test_a_block_of_more_claims_than_one_batch_takes_is_split() -> None:
    block = [_event(f"tx{i}", "Claims.Submitted", _claim(f"c{i}")) for i in range(1203)]
    batches = [d for d in block_dispatches("InsurerMSP", block) if d.task == "careledger.adjudicate_batch"]
    assert [len(d.args[0]) for d in batches] == [500, 500, 203]
    assert sorted(c["claimId"] for d in batches for c in d.args[0]) == sorted(f"c{i}" for i in range(1203))


def test_front_end_edits_are_answered_before_the_other_rules() -> None:
    lines = [line(1, "85025", 1, 100), line(2, "80053", 1, 0)]
    duplicate = [{"sequence": 0, "reason": "18"}]
    assert outcomes(rules.decide(RULES, CLAIM, lines, [COVERED], [], edits=duplicate)) == [
        ("denied", 0, ["18"]),
        ("denied", 0, ["18"]),
    ]
    assert outcomes(rules.decide(RULES, CLAIM, lines, [], [], edits=duplicate))[0] == ("denied", 0, ["18"])
    no_charge = [{"sequence": 2, "reason": "16", "remark": "M79"}, {"sequence": 0, "reason": "16", "remark": "M54"}]
    assert outcomes(rules.decide(RULES, CLAIM, lines, [COVERED], [], edits=no_charge)) == [
        ("approved", 100, []),
        ("denied", 0, ["16"]),
    ]
