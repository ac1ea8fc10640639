"""The console's data layer without a network: blocks and lifecycle answers parsed from real protobuf messages, the
activity index fed with the contracts' own event payloads, the explorer's paging, and the pages' small rules."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fabric_protos.common import collection_pb2, common_pb2, ledger_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import (
    chaincode_event_pb2,
    chaincode_pb2,
    events_pb2,
    proposal_pb2,
    proposal_response_pb2,
    transaction_pb2,
)
from fabric_protos.peer.lifecycle import lifecycle_pb2

from fabric_gateway import EvaluateUnavailable, lifecycle
from fabric_gateway import blocks as fb
from gateway.console.patients import consent_timeline
from gateway.console.supply import pack_flags
from ledger.activity import ActivityIndex, claim_state
from ledger.explorer import Explorer

SECRET_ARG = "patient-0f3a-secret-argument"


def _identity(msp: str) -> bytes:
    return bytes(identities_pb2.SerializedIdentity(mspid=msp, id_bytes=b"cert").SerializeToString())


def _endorser_envelope(tx_id: str, creator: str, function: str, event: str, endorsers: list[str]) -> bytes:
    spec = chaincode_pb2.ChaincodeInvocationSpec(
        chaincode_spec=chaincode_pb2.ChaincodeSpec(
            chaincode_id=chaincode_pb2.ChaincodeID(name="careledger"),
            input=chaincode_pb2.ChaincodeInput(args=[function.encode(), SECRET_ARG.encode()]),
        )
    )
    cc_event = chaincode_event_pb2.ChaincodeEvent(chaincode_id="careledger", tx_id=tx_id, event_name=event)
    cc_action = proposal_pb2.ChaincodeAction(events=cc_event.SerializeToString())
    response = proposal_response_pb2.ProposalResponsePayload(extension=cc_action.SerializeToString())
    action = transaction_pb2.ChaincodeActionPayload(
        chaincode_proposal_payload=proposal_pb2.ChaincodeProposalPayload(
            input=spec.SerializeToString()
        ).SerializeToString(),
        action=transaction_pb2.ChaincodeEndorsedAction(
            proposal_response_payload=response.SerializeToString(),
            endorsements=[proposal_response_pb2.Endorsement(endorser=_identity(m)) for m in endorsers],
        ),
    )
    tx = transaction_pb2.Transaction(actions=[transaction_pb2.TransactionAction(payload=action.SerializeToString())])
    header = common_pb2.ChannelHeader(type=common_pb2.HeaderType.ENDORSER_TRANSACTION, channel_id="claims", tx_id=tx_id)
    header.timestamp.FromSeconds(1_767_225_600)  # 2026-01-01T00:00:00Z
    payload = common_pb2.Payload(
        header=common_pb2.Header(
            channel_header=header.SerializeToString(),
            signature_header=common_pb2.SignatureHeader(creator=_identity(creator)).SerializeToString(),
        ),
        data=tx.SerializeToString(),
    )
    return bytes(common_pb2.Envelope(payload=payload.SerializeToString()).SerializeToString())


def _block(number: int, envelopes: list[bytes], codes: bytes) -> bytes:
    block = common_pb2.Block(
        header=common_pb2.BlockHeader(number=number, previous_hash=b"\x01" * 32, data_hash=b"\x02" * 32),
        data=common_pb2.BlockData(data=envelopes),
    )
    block.metadata.metadata.extend([b"", b"", codes, b"", b""])
    return bytes(block.SerializeToString())


def test_a_block_names_creator_function_endorsers_events_and_validity_but_no_argument() -> None:
    envelopes = [
        _endorser_envelope("a" * 64, "HospitalMSP", "Claims:Submit", "Claims.Submitted", ["HospitalMSP", "InsurerMSP"]),
        _endorser_envelope("b" * 64, "InsurerMSP", "Claims:Adjudicate", "Claims.Adjudicated", ["InsurerMSP"]),
    ]
    codes = bytes([transaction_pb2.TxValidationCode.VALID, transaction_pb2.TxValidationCode.MVCC_READ_CONFLICT])
    summary = fb.block_summary(_block(7, envelopes, codes))
    assert summary.number == 7 and summary.previous_hash == "01" * 32 and summary.data_hash == "02" * 32
    first, second = summary.transactions
    assert (first.tx_id, first.creator_msp, first.chaincode, first.function) == (
        "a" * 64,
        "HospitalMSP",
        "careledger",
        "Claims:Submit",
    )
    assert first.endorsers == ("HospitalMSP", "InsurerMSP") and first.events == ("Claims.Submitted",)
    assert first.valid and first.timestamp == "2026-01-01T00:00:00.000Z" and first.kind == "ENDORSER_TRANSACTION"
    assert second.validation == "MVCC_READ_CONFLICT" and not second.valid
    assert SECRET_ARG not in repr(summary)


def test_a_processed_transaction_carries_its_validation_code() -> None:
    envelope = common_pb2.Envelope.FromString(_endorser_envelope("c" * 64, "ClinicMSP", "Consent:Grant", "", []))
    processed = transaction_pb2.ProcessedTransaction(
        transactionEnvelope=envelope, validationCode=transaction_pb2.TxValidationCode.ENDORSEMENT_POLICY_FAILURE
    )
    tx = fb.processed_transaction(processed.SerializeToString())
    assert tx.tx_id == "c" * 64 and tx.function == "Consent:Grant" and tx.events == ()
    assert tx.validation == "ENDORSEMENT_POLICY_FAILURE" and SECRET_ARG not in repr(tx)


def test_a_filtered_block_and_the_end_of_a_stream() -> None:
    filtered = events_pb2.FilteredBlock(channel_id="claims", number=12)
    tx = filtered.filtered_transactions.add(txid="d" * 64, type=common_pb2.HeaderType.ENDORSER_TRANSACTION)
    tx.tx_validation_code = transaction_pb2.TxValidationCode.VALID
    tx.transaction_actions.chaincode_actions.add().chaincode_event.event_name = "Claims.Paid"
    block = fb.filtered_block(events_pb2.DeliverResponse(filtered_block=filtered).SerializeToString())
    assert block == fb.FilteredBlock(
        "claims", 12, (fb.FilteredTransaction("d" * 64, "ENDORSER_TRANSACTION", "VALID", ("Claims.Paid",)),)
    )
    assert fb.filtered_block(events_pb2.DeliverResponse(status=200).SerializeToString()) is None


def test_lifecycle_answers() -> None:
    result = lifecycle_pb2.QueryChaincodeDefinitionResult(sequence=3, version="1.2", init_required=False)
    result.approvals["InsurerMSP"] = False
    result.approvals["HospitalMSP"] = True
    result.collections.config.add().static_collection_config.name = "lines_HospitalMSP_InsurerMSP"
    found = lifecycle.definition("careledger", result.SerializeToString())
    assert (found.name, found.sequence, found.version) == ("careledger", 3, "1.2")
    assert found.approvals == (("HospitalMSP", True), ("InsurerMSP", False))
    assert found.collections == ("lines_HospitalMSP_InsurerMSP",)
    listed = lifecycle_pb2.QueryChaincodeDefinitionsResult()
    listed.chaincode_definitions.add(name="zeta")
    listed.chaincode_definitions.add(name="careledger")
    assert lifecycle.definition_names(listed.SerializeToString()) == ["careledger", "zeta"]
    info = ledger_pb2.BlockchainInfo(height=42, currentBlockHash=b"\xab", previousBlockHash=b"\xcd")
    assert lifecycle.chain_info(info.SerializeToString()) == lifecycle.ChainInfo(42, "ab", "cd")
    assert collection_pb2 is not None


# ----- the activity index ------------------------------------------------------------------------------------


def _claim(claim_id: str, provider: str = "HospitalMSP", **fields: object) -> dict[str, object]:
    base = {
        "claimId": claim_id, "use": "claim", "provider": provider, "insurer": "InsurerMSP", "status": "submitted",
        "outcome": "", "serviceDate": "2026-01-01", "currency": "EUR", "totalCents": 10000, "approvedCents": 0,
        "submittedAt": "2026-01-02T08:00:00.000000000Z", "adjudicatedAt": "", "paidAt": "", "cancelledAt": "",
    }  # fmt: skip
    return {**base, **fields}


def _emit(index: ActivityIndex, block: int, tx: str, event: str, payload: object, channel: str = "claims") -> None:
    index.apply(channel, block, tx * 64, event, json.dumps(payload).encode())


@pytest.fixture
def index(tmp_path: Path) -> ActivityIndex:
    return ActivityIndex(tmp_path / "index.sqlite", "HospitalMSP")


def test_the_index_keeps_only_the_orgs_claims_and_their_events(index: ActivityIndex) -> None:
    own, other = "1" * 64, "2" * 64
    _emit(index, 5, "a", "Claims.Submitted", _claim(own))
    _emit(index, 5, "b", "Claims.Submitted", _claim(other, provider="ClinicMSP"))
    decided = _claim(own, status="adjudicated", outcome="denied", adjudicatedAt="2026-01-02T20:00:00.000000000Z")
    _emit(index, 6, "c", "Claims.Adjudicated", decided)
    _emit(index, 6, "c", "Claims.Adjudicated", decided)  # the same event again changes nothing
    assert index.claim(other) is None and index.timeline(other) == []
    row = index.claim(own)
    assert row is not None and row.state == "denied"
    assert [(e.block, e.tx_id, e.event, e.state) for e in index.timeline(own)] == [
        (5, "a" * 64, "Claims.Submitted", "submitted"),
        (6, "c" * 64, "Claims.Adjudicated", "denied"),
    ]
    assert index.counts()["denied"] == 1 and sum(index.counts().values()) == 1
    assert index.resume_block("claims") == 6


def test_batches_and_payments_move_every_claim_they_name(index: ActivityIndex) -> None:
    ids = [f"{i:064x}" for i in range(1, 4)]
    _emit(index, 3, "a", "Claims.SubmittedBatch", {"provider": "HospitalMSP", "claims": [_claim(i) for i in ids]})
    adjudicated = [_claim(i, status="adjudicated", outcome="approved", approvedCents=10000) for i in ids]
    _emit(index, 4, "b", "Claims.AdjudicatedBatch", {"insurer": "InsurerMSP", "results": [], "claims": adjudicated})
    payment = {
        "paymentRef": "PAY-1", "provider": "HospitalMSP", "insurer": "InsurerMSP", "paidAt": "2026-01-03T00:00:00Z",
        "lines": [{"claimId": ids[0], "amountCents": 10000}, {"claimId": ids[1], "amountCents": 10000}],
    }  # fmt: skip
    _emit(index, 5, "c", "Claims.PaidBatch", payment)
    assert index.counts()["paid"] == 2 and index.counts()["adjudicated"] == 1
    assert [e.event for e in index.timeline(ids[0])] == [
        "Claims.SubmittedBatch",
        "Claims.AdjudicatedBatch",
        "Claims.PaidBatch",
    ]
    # An older event replayed (a stream resumed from an earlier block) does not move a claim back.
    _emit(index, 4, "b", "Claims.AdjudicatedBatch", {"insurer": "InsurerMSP", "results": [], "claims": adjudicated})
    assert index.counts()["paid"] == 2


def test_the_queue_pages_by_cursor_newest_first(index: ActivityIndex) -> None:
    for i in range(7):
        _emit(index, i + 1, f"{i}", "Claims.Submitted", _claim(f"{i:064x}", submittedAt=f"2026-01-0{i + 1}T00:00:00Z"))
    seen, cursor, pages = [], "", 0
    while True:
        page = index.queue("submitted", 3, cursor)
        seen += [c.claim_id for c in page.claims]
        pages += 1
        if not (cursor := page.next_cursor):
            break
    assert pages == 3 and seen == [f"{i:064x}" for i in reversed(range(7))]
    assert index.queue("paid", 3).claims == []


def test_turnaround_percentiles_per_day(index: ActivityIndex) -> None:
    hours = [1, 2, 3, 4, 10]  # p50 (nearest rank) 3, p90 10
    for i, h in enumerate(hours):
        cid = f"{i:064x}"
        _emit(index, 1, f"{i}", "Claims.Submitted", _claim(cid, submittedAt="2026-02-01T00:00:00Z"))
        at = f"2026-02-01T{h:02d}:00:00Z"
        _emit(index, 2, f"{i + 5}", "Claims.Adjudicated", _claim(cid, status="adjudicated", adjudicatedAt=at))
    (day,) = index.daily("2026-01-15")
    assert (day.day, day.submitted, day.decided) == ("2026-02-01", 5, 5)
    assert day.p50_hours == pytest.approx(3) and day.p90_hours == pytest.approx(10)
    assert index.daily("2026-03-01") == []


def test_consents_grants_and_revocations(index: ActivityIndex) -> None:
    grant = {
        "consentId": "c1", "patient": "p" * 64, "grantee": "ClinicMSP", "purpose": "TREAT", "scope": ["*"],
        "start": "2026-01-01T00:00:00Z", "end": "2026-06-01T00:00:00Z", "status": "active",
        "grantedBy": "HospitalMSP", "grantedAt": "2026-01-01T00:00:00Z",
    }  # fmt: skip
    _emit(index, 9, "e", "Consent.Granted", grant, channel="providers")
    _emit(index, 9, "e", "Consent.Granted", grant, channel="providers")
    revoked = {**grant, "status": "revoked", "revokedAt": "2026-02-01T00:00:00Z", "revokedBy": "HospitalMSP"}
    _emit(index, 10, "f", "Consent.Revoked", revoked, channel="providers")
    (row,) = index.consents(["p" * 64, "q" * 64])
    assert (row.status, row.grant_tx, row.revoke_tx) == ("revoked", "e" * 64, "f" * 64)
    assert index.consents(["q" * 64]) == [] and index.resume_block("providers") == 10
    moments = consent_timeline([row], datetime(2026, 3, 1, tzinfo=UTC))
    assert [m.what for m in moments] == ["granted", "revoked"]
    open_grant = row.__class__(**{**row.__dict__, "revoked_at": "", "status": "active"})
    assert [m.what for m in consent_timeline([open_grant], datetime(2026, 7, 1, tzinfo=UTC))] == ["granted", "expired"]
    assert [m.what for m in consent_timeline([open_grant], datetime(2026, 3, 1, tzinfo=UTC))] == ["granted", "expires"]


def test_claim_states_as_queues() -> None:
    assert claim_state({"status": "decided", "outcome": "denied"}) == "denied"
    assert claim_state({"status": "decided", "outcome": "approved"}) == "adjudicated"
    assert claim_state({"status": "pended"}) == "pended"
    assert claim_state({"status": "appealed"}) == "submitted"


def test_pack_flags() -> None:
    unit = {"state": "dispensed"}
    verification = {"flags": ["recalled", "already_dispensed"]}
    alerts = [{"flags": ["already_dispensed"]}]
    assert pack_flags(unit, verification, alerts) == ["clone suspected", "dispensed", "recalled"]
    assert pack_flags({"state": "active"}, {"flags": []}, []) == []


# ----- the explorer ------------------------------------------------------------------------------------------


class FakeNetwork:
    name = "claims"

    def __init__(self, height: int, down: set[str]) -> None:
        self.height, self.down = height, down
        self.asked: list[int] = []

    async def chain_info(self, org: str | None = None) -> lifecycle.ChainInfo:
        if org in self.down:
            raise EvaluateUnavailable("UNAVAILABLE", f"no peer of {org}")
        return lifecycle.ChainInfo(self.height, "", "")

    async def block(self, number: int) -> fb.BlockSummary:
        self.asked.append(number)
        return fb.BlockSummary(number, "", "", ())

    async def transaction(self, tx_id: str) -> fb.TransactionSummary:
        raise NotImplementedError

    async def block_number_of(self, tx_id: str) -> int:
        raise NotImplementedError

    async def chaincode_definitions(self) -> list[lifecycle.ChaincodeDefinition]:
        return []

    async def filtered_blocks(self, start_block: int | None = None) -> AsyncGenerator[fb.FilteredBlock, None]:
        yield fb.FilteredBlock(self.name, start_block or 0, ())


class FakeGateway:
    def __init__(self, network: FakeNetwork) -> None:
        self._network = network

    def network(self, name: str) -> FakeNetwork:
        return self._network


def test_the_explorer_pages_blocks_and_reports_unreachable_peers() -> None:
    net = FakeNetwork(height=23, down={"ClinicMSP"})
    explorer = Explorer(FakeGateway(net))

    async def scenario() -> None:
        first = await explorer.blocks("claims", count=10)
        assert [b.number for b in first.blocks] == list(range(22, 12, -1)) and first.next_before == 13
        last = await explorer.blocks("claims", before=3, count=10)
        assert [b.number for b in last.blocks] == [2, 1, 0] and last.next_before is None
        heights = await explorer.heights("claims", ["HospitalMSP", "ClinicMSP"])
        assert [(h.org, h.height) for h in heights] == [("HospitalMSP", 23), ("ClinicMSP", None)]
        assert "ClinicMSP" in heights[1].error
        live = explorer.live("claims", 23)
        assert (await anext(live)).number == 23
        await live.aclose()

    asyncio.run(scenario())
    assert len(net.asked) == 13  # a page asks for its blocks only
