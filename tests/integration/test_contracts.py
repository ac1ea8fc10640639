"""The contracts on the real network, through CareLedger's Python Gateway client.

Inputs are synthetic FHIR resources (tests/fhir_samples.py); only pseudonyms and keyed digests derived from them are
sent to the ledger, and the last test reads every block of every channel to prove that no PHI got there.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from consortium import topology as topo
from consortium.topology import Topology
from fabric_gateway import EndorseError, EvaluateError, Gateway, GatewayError, Submitted
from records import digests
from tests import fhir_samples as fhir

pytestmark = pytest.mark.network

CC = "careledger"
MEMBERS = {channel: [org.msp_id for org in orgs] for channel, orgs in topo.load().channels.items()}
GatewayAs = Callable[..., Gateway]


def contract_error(err: GatewayError) -> str:
    """The contract's error code ("FORBIDDEN", ...) from the first peer's chaincode message."""
    for message in err.chaincode_messages:
        for code in ("INVALID_ARGUMENT", "FORBIDDEN", "NOT_FOUND", "CONFLICT"):
            if f"{code}: " in message:
                return code
    return ""


def send(gw: Gateway, channel: str, fn: str, *args: str, transient: dict[str, Any] | None = None) -> Submitted:
    """Submit, then wait until every member's peer holds the block: peers commit a block a few milliseconds apart,
    and the next step may read, or endorse, at another org's peer."""
    encoded = {k: json.dumps(v).encode() for k, v in (transient or {}).items()}
    network = gw.network(channel)
    submitted = network.contract(CC).submit(fn, args=args, transient=encoded)
    network.wait_for_block(submitted.status.block_number, orgs=MEMBERS[channel])
    return submitted


def call(gw: Gateway, channel: str, fn: str, *args: str, transient: dict[str, Any] | None = None) -> Any:
    return json.loads(send(gw, channel, fn, *args, transient=transient).result or b"null")


def ask(gw: Gateway, channel: str, fn: str, *args: str) -> Any:
    return json.loads(gw.network(channel).contract(CC).evaluate(fn, args=args))


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def pseudonym_of(patient: dict[str, Any]) -> str:
    ident = patient["identifier"][0]
    return digests.pseudonym(fhir.CONSORTIUM_KEY, ident["system"], ident["value"])


def register(gw: Gateway, patient: dict[str, Any], *resources: dict[str, Any]) -> str:
    """Register the resources (with fresh ids) in the patient's record index; returns the pseudonym."""
    pseud = pseudonym_of(patient)
    patient_key = secrets.token_bytes(32)
    entries = [
        {
            "patient": pseud,
            "resourceType": r["resourceType"],
            "id": unique(r["id"]),
            "version": 1,
            "digest": digests.resource_digest(patient_key, r),
            "lastUpdated": iso(datetime.now(UTC)),
            "size": len(digests.canonical_json(r)),
        }
        for r in resources
    ]
    assert call(gw, "providers", "Records:Register", json.dumps(entries)) == len(entries)
    return pseud


def test_consent_grant_check_revoke_and_expiry(gateway_as: GatewayAs, network: Topology) -> None:
    hospital, clinic = gateway_as("HospitalOrg"), gateway_as("ClinicOrg")
    patient_app = gateway_as("HospitalOrg", "User2")  # the patient's own identity
    jane = fhir.PATIENTS[0]
    pseud = register(hospital, jane, jane, fhir.observation("pat-jane", "obs-hb", "718-7", 13.2, "g/dL"))

    # Before the hospital vouches for the patient's key, the patient app is just another hospital client.
    cert = next((network.user_dir(network.org("HospitalOrg"), "User2") / "msp" / "signcerts").glob("*.pem"))
    call(hospital, "providers", "Consent:RegisterPatientIdentity", pseud, cert.read_text())

    now = datetime.now(UTC)
    short = {
        "consentId": unique("stay-lab"),
        "patient": pseud,
        "grantee": "ClinicMSP",
        "action": "read",
        "scope": ["Observation"],
        "purpose": "TREAT",
        "start": iso(now - timedelta(seconds=5)),
        "end": iso(now + timedelta(seconds=6)),
        "documentDigest": "",
    }
    surgeon = {**short, "consentId": unique("stay-surgeon"), "grantee": "practitioner:npi|1234567893", "scope": ["*"]}
    granted = call(patient_app, "providers", "Consent:Grant", json.dumps(short))
    assert granted["grantedVia"] == "patient" and granted["status"] == "active"
    assert call(patient_app, "providers", "Consent:Grant", json.dumps(surgeon))["grantedVia"] == "patient"

    # A custodian acting for the patient must show the signed consent document's digest.
    on_behalf = {**short, "consentId": unique("by-custodian"), "grantee": "InsurerMSP", "purpose": "HPAYMT"}
    with pytest.raises(EndorseError) as refused:
        call(hospital, "providers", "Consent:Grant", json.dumps(on_behalf))
    assert contract_error(refused.value) == "FORBIDDEN"
    on_behalf["documentDigest"] = digests.resource_digest(b"k", {"resourceType": "Consent", "id": "signed"})
    assert call(hospital, "providers", "Consent:Grant", json.dumps(on_behalf))["grantedVia"] == "custodian"

    def decision(grantee: str, resource_type: str) -> dict[str, Any]:
        return dict(ask(clinic, "providers", "Consent:Check", pseud, grantee, resource_type, "TREAT"))

    def clinic_reads_observation() -> dict[str, Any]:
        """HospitalMSP, about to serve ClinicMSP an Observation, logs the access decision."""
        request = {"patient": pseud, "accessor": "ClinicMSP", "resource": "Observation/obs-hb", "purpose": "TREAT"}
        return dict(call(hospital, "providers", "Audit:RecordAccess", json.dumps(request)))

    assert decision("ClinicMSP", "Observation")["decision"] == "permit"
    assert decision("ClinicMSP", "Condition")["decision"] == "deny"
    assert decision("practitioner:npi|1234567893", "Condition")["decision"] == "permit"
    logged = clinic_reads_observation()
    assert logged["decision"] == "permit" and logged["consentId"] == short["consentId"]

    # The patient revokes the surgeon's access; the lab's expires with its period.
    call(patient_app, "providers", "Consent:Revoke", surgeon["consentId"], "")
    assert "revoked at" in decision("practitioner:npi|1234567893", "Condition")["reason"]
    time.sleep(max(0.0, (now + timedelta(seconds=6.5) - datetime.now(UTC)).total_seconds()))
    expired = decision("ClinicMSP", "Observation")
    assert expired["decision"] == "deny" and "expired at" in expired["reason"]
    denied = clinic_reads_observation()
    assert denied["decision"] == "deny"

    log = ask(
        clinic,
        "providers",
        "Audit:ByPatient",
        pseud,
        iso(now - timedelta(minutes=1)),
        iso(datetime.now(UTC) + timedelta(minutes=1)),
        "100",
        "",
    )
    assert [e["decision"] for e in log["entries"]] == ["permit", "deny"]
    assert {e["custodian"] for e in log["entries"]} == {"HospitalMSP"}


def test_claim_submit_adjudicate_pay_with_private_lines(gateway_as: GatewayAs) -> None:
    hospital, insurer, clinic = gateway_as("HospitalOrg"), gateway_as("InsurerOrg"), gateway_as("ClinicOrg")
    omar = fhir.PATIENTS[1]
    claim_id = unique("claim")
    submission = {
        "claimId": claim_id,
        "patient": pseudonym_of(omar),
        "insurer": "InsurerMSP",
        "serviceDate": (date.today() - timedelta(days=2)).isoformat(),
        "currency": "USD",
        "totalCents": 27500,
        "digest": digests.resource_digest(b"claim-key", {"resourceType": "Claim", "id": claim_id}),
    }
    lines = {
        "claimId": claim_id,
        "coverage": "Coverage/cov-omar",
        "salt": secrets.token_hex(16),
        "lines": [
            {"sequence": 1, "code": "99214", "quantity": 1, "unitPriceCents": 12500, "netCents": 12500},
            {"sequence": 2, "code": "85025", "quantity": 2, "unitPriceCents": 7500, "netCents": 15000},
        ],
    }
    claim = call(hospital, "claims", "Claims:Submit", json.dumps(submission), transient={"claim": lines})
    assert claim["status"] == "submitted" and claim["collection"] == "lines_HospitalMSP_InsurerMSP"

    # The lines are shared by the provider and the insurer, and by no one else.
    for gw in (hospital, insurer):
        assert ask(gw, "claims", "Claims:Lines", claim_id)["lines"] == lines["lines"]
    with pytest.raises(EvaluateError) as clinic_read:
        ask(clinic, "claims", "Claims:Lines", claim_id)
    assert contract_error(clinic_read.value) == "FORBIDDEN"
    assert ask(clinic, "claims", "Claims:Get", claim_id)["totalCents"] == 27500  # the public summary is shared

    # The same claim again under a new id is a duplicate.
    dup = {**submission, "claimId": unique("claim")}
    with pytest.raises(EndorseError) as duplicate:
        call(
            hospital,
            "claims",
            "Claims:Submit",
            json.dumps(dup),
            transient={"claim": {**lines, "claimId": dup["claimId"]}},
        )
    assert contract_error(duplicate.value) == "CONFLICT" and "duplicate claim" in str(duplicate.value)

    # Only the insurer adjudicates, once.
    decision = {
        "retentionSeconds": 0,
        "lines": [
            {"sequence": 1, "outcome": "approved", "approvedCents": 12500, "reasons": []},
            {"sequence": 2, "outcome": "partial", "approvedCents": 11000, "reasons": ["45"]},
        ],
    }
    with pytest.raises(EndorseError) as by_provider:
        call(hospital, "claims", "Claims:Adjudicate", claim_id, transient={"adjudication": decision})
    assert contract_error(by_provider.value) == "FORBIDDEN"
    adjudicated = call(insurer, "claims", "Claims:Adjudicate", claim_id, transient={"adjudication": decision})
    assert (adjudicated["status"], adjudicated["outcome"], adjudicated["approvedCents"]) == (
        "adjudicated",
        "partial",
        23500,
    )
    with pytest.raises(EndorseError) as again:
        call(insurer, "claims", "Claims:Adjudicate", claim_id, transient={"adjudication": decision})
    assert contract_error(again.value) == "CONFLICT"
    assert ask(hospital, "claims", "Claims:AdjudicationOf", claim_id)["lines"][1]["reasons"] == ["45"]

    paid = call(insurer, "claims", "Claims:Pay", claim_id, "EFT-2026-0001")
    assert (paid["status"], paid["paidCents"]) == ("paid", 23500)

    # Retention over (0 s here): the lines are purged from the peers; what the peer returns proves it.
    assert call(insurer, "claims", "Claims:PurgeLines", claim_id)["linesPurged"] is True
    for gw in (hospital, insurer):
        with pytest.raises(EvaluateError) as gone:
            ask(gw, "claims", "Claims:Lines", claim_id)
        assert contract_error(gone.value) == "NOT_FOUND" and "purged" in str(gone.value)


def test_counterfeit_packs_are_detected(gateway_as: GatewayAs) -> None:
    pharma, hospital, clinic = gateway_as("PharmaOrg"), gateway_as("HospitalOrg"), gateway_as("ClinicOrg")
    gtin = "00300123456785"
    genuine, resold = unique("S")[:20], unique("S")[:20]
    for serial in (genuine, resold):
        unit = {"gtin": gtin, "serial": serial, "lot": "LOT7", "expiry": "2030-01-31"}
        assert call(pharma, "pharma", "Supply:Commission", json.dumps(unit))["state"] == "active"
        call(pharma, "pharma", "Supply:Ship", gtin, serial, "HospitalMSP")
        assert ask(hospital, "pharma", "Supply:Get", gtin, serial)["shippedTo"] == "HospitalMSP"
        call(hospital, "pharma", "Supply:Receive", gtin, serial)
    call(hospital, "pharma", "Supply:Dispense", gtin, resold)

    ok = ask(hospital, "pharma", "Supply:Verify", gtin, genuine, "LOT7", "2030-01-31")
    assert ok == {"authentic": True, "flags": [], "state": "active", "custodian": "HospitalMSP"}
    clone = ask(clinic, "pharma", "Supply:Verify", gtin, resold, "LOT7", "")
    assert not clone["authentic"] and "already_dispensed" in clone["flags"]
    unknown = ask(clinic, "pharma", "Supply:Verify", gtin, "NEVER-MADE-1", "", "")
    assert unknown["flags"] == ["unknown_serial"]
    history = ask(clinic, "pharma", "Supply:History", gtin, resold)
    assert [e["bizStep"] for e in history] == ["commissioning", "shipping", "receiving", "dispensing"]
    with pytest.raises(EndorseError) as second:
        call(hospital, "pharma", "Supply:Dispense", gtin, resold)
    assert contract_error(second.value) == "CONFLICT"


def test_contracts_refuse_the_wrong_channel(gateway_as: GatewayAs) -> None:
    with pytest.raises(EvaluateError) as wrong:
        ask(gateway_as("HospitalOrg"), "claims", "Records:Custodians", "0" * 64)
    assert contract_error(wrong.value) == "FORBIDDEN" and "does not serve channel" in str(wrong.value)


def test_no_phi_in_any_block_of_any_channel(network: Topology) -> None:
    """Runs last in this module: scans the raw block files of every channel on every node."""
    phi = [s.encode() for s in fhir.phi_strings()]
    pseudonyms = [pseudonym_of(p).encode() for p in fhir.PATIENTS]
    scanned = 0
    seen_pseudonyms: set[bytes] = set()
    for node in network.nodes:
        chains = network.data_dir(node.name) / "ledger"
        for block_file in sorted(chains.rglob("blockfile_*")):
            raw = block_file.read_bytes()
            scanned += len(raw)
            found = [s.decode() for s in phi if s in raw]
            assert not found, f"PHI {found} in {block_file.relative_to(network.home)}"
            seen_pseudonyms.update(p for p in pseudonyms if p in raw)
    assert scanned > 0
    # The scan sees real content: the pseudonyms the tests registered are there, in place of the identities.
    assert seen_pseudonyms == set(pseudonyms)
