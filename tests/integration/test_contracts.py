"""The contracts on the real network, through CareLedger's Python Gateway client, as docs/CONTRACTS.md describes them.

Inputs are synthetic FHIR resources (tests/fhir_samples.py); only pseudonyms, opaque keys and keyed digests derived
from them are sent to the ledger. tests/integration/test_phi.py reads every block and every peer's state database at
the end of the run to prove that no PHI got there.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from consortium import topology as topo
from consortium.topology import Topology
from fabric_gateway import EndorseError, EvaluateError, Gateway, GatewayError, Identity, Submitted
from records import digests
from tests import fhir_samples as fhir
from tests.integration.identities import PATIENT_OU, fingerprint, minted, organizational_units

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


def opaque_key() -> str:
    """A ledger key as a gateway derives one: 64 lower-case hex characters that say nothing of the client's id."""
    return secrets.token_hex(32)


def pseudonym_of(patient: dict[str, Any]) -> str:
    ident = patient["identifier"][0]
    return digests.pseudonym(fhir.CONSORTIUM_KEY, ident["system"], ident["value"])


def register(gw: Gateway, patient: dict[str, Any], *resources: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """Register the resources in the patient's record index under fresh opaque keys; returns the pseudonym and each
    resource's key by its id."""
    pseud = pseudonym_of(patient)
    patient_key = secrets.token_bytes(32)
    keys = {r["id"]: opaque_key() for r in resources}
    entries = [
        {
            "patient": pseud,
            "directory": False,
            "resourceType": r["resourceType"],
            "resourceKey": keys[r["id"]],
            "version": 1,
            "digest": digests.resource_digest(patient_key, r),
            "lastUpdated": iso(datetime.now(UTC)),
            "size": len(digests.canonical_json(r)),
        }
        for r in resources
    ]
    assert call(gw, "providers", "Records:Register", json.dumps(entries)) == len(entries)
    return pseud, keys


def test_the_index_takes_opaque_keys_never_client_ids(gateway_as: GatewayAs) -> None:
    hospital = gateway_as("HospitalOrg")
    jane = fhir.PATIENTS[0]
    obs = fhir.observation("pat-jane", "obs-index", "718-7", 12.9, "g/dL")
    pseud, keys = register(hospital, jane, obs)
    record = ask(hospital, "providers", "Records:Get", keys["obs-index"], "0")
    assert (record["patient"], record["resourceKey"], record["custodian"]) == (pseud, keys["obs-index"], "HospitalMSP")
    assert "obs-index" not in json.dumps(record)

    # The old shape, with the client's id, is refused before anything is written.
    by_id = [{**{k: v for k, v in record.items() if k not in ("custodian", "txId")}, "resourceKey": "obs-index"}]
    with pytest.raises(EndorseError) as refused:
        call(hospital, "providers", "Records:Register", json.dumps(by_id))
    assert contract_error(refused.value) == "INVALID_ARGUMENT" and "opaque key" in str(refused.value)
    with pytest.raises(EvaluateError) as unknown:
        ask(hospital, "providers", "Records:Get", "obs-index", "0")
    assert contract_error(unknown.value) == "INVALID_ARGUMENT"


@pytest.fixture
def patient_app(network: Topology) -> Iterator[tuple[Gateway, Identity]]:
    """A patient's own certificate as HospitalOrg's CA issues it (a client marked with OU `patient`), and a Gateway
    that signs as it."""
    gw, identity = minted(network, "HospitalOrg", "patient", patient=True)
    with gw:
        yield gw, identity


def test_consent_grant_check_revoke_and_expiry(
    gateway_as: GatewayAs, network: Topology, patient_app: tuple[Gateway, Identity]
) -> None:
    hospital, clinic = gateway_as("HospitalOrg"), gateway_as("ClinicOrg")
    patient, patient_cert = patient_app  # the patient's own identity
    jane = fhir.PATIENTS[0]
    pseud, keys = register(hospital, jane, jane, fhir.observation("pat-jane", "obs-hb", "718-7", 13.2, "g/dL"))

    # Only a patient certificate is a patient's identity: an ordinary client of the hospital (User2) is refused.
    plain = next((network.user_dir(network.org("HospitalOrg"), "User2") / "msp" / "signcerts").glob("*.pem"))
    with pytest.raises(EndorseError) as unmarked:
        call(hospital, "providers", "Consent:RegisterPatientIdentity", pseud, plain.read_text())
    assert contract_error(unmarked.value) == "INVALID_ARGUMENT" and "not a patient certificate" in str(unmarked.value)

    # The hospital proposes the patient's certificate; only the certificate's holder can confirm it. Until then, a
    # grant the patient app signs counts for nothing. The peers' MSPs take the certificate's extra OU: the
    # confirmation commits.
    assert organizational_units(patient_cert) == ["client", PATIENT_OU]
    proposed = call(
        hospital, "providers", "Consent:RegisterPatientIdentity", pseud, patient_cert.certificate_pem.decode()
    )
    assert proposed["registeredBy"] == "HospitalMSP" and proposed["fingerprint"] == "" and proposed["pending"]
    confirmed = call(patient, "providers", "Consent:ConfirmPatientIdentity", pseud)
    assert [b["fingerprint"] for b in confirmed["bindings"]] == [proposed["pending"]] == [fingerprint(patient_cert)]

    now = datetime.now(UTC)
    short = {
        "consentId": opaque_key(),
        "patient": pseud,
        "grantee": "ClinicMSP",
        "action": "read",
        "scope": ["Observation"],
        "purpose": "TREAT",
        "start": iso(now - timedelta(seconds=5)),
        "end": iso(now + timedelta(seconds=6)),
        "documentDigest": "",
    }
    surgeon = {**short, "consentId": opaque_key(), "grantee": "practitioner:npi|1234567893", "scope": ["*"]}
    granted = call(patient, "providers", "Consent:Grant", json.dumps(short))
    assert granted["grantedVia"] == "patient" and granted["status"] == "active"
    assert call(patient, "providers", "Consent:Grant", json.dumps(surgeon))["grantedVia"] == "patient"

    # A custodian acting for the patient must show the signed consent document's digest.
    on_behalf = {**short, "consentId": opaque_key(), "grantee": "InsurerMSP", "purpose": "HPAYMT"}
    with pytest.raises(EndorseError) as refused:
        call(hospital, "providers", "Consent:Grant", json.dumps(on_behalf))
    assert contract_error(refused.value) == "FORBIDDEN"
    on_behalf["documentDigest"] = digests.resource_digest(b"k", {"resourceType": "Consent", "id": "signed"})
    assert call(hospital, "providers", "Consent:Grant", json.dumps(on_behalf))["grantedVia"] == "custodian"

    def decision(grantee: str, resource_type: str) -> dict[str, Any]:
        """What HospitalMSP's records of the patient open to the grantee (the custodian is asked about by name)."""
        return dict(ask(clinic, "providers", "Consent:Check", pseud, "HospitalMSP", grantee, resource_type, "TREAT"))

    def clinic_reads_observation() -> dict[str, Any]:
        """HospitalMSP, about to serve ClinicMSP an Observation, logs the access decision."""
        resource = f"Observation/{keys['obs-hb']}"
        request = {"patient": pseud, "accessor": "ClinicMSP", "resource": resource, "purpose": "TREAT"}
        return dict(call(hospital, "providers", "Audit:RecordAccess", json.dumps(request)))

    assert decision("ClinicMSP", "Observation")["decision"] == "permit"
    assert decision("ClinicMSP", "Condition")["decision"] == "deny"
    assert decision("practitioner:npi|1234567893", "Condition")["decision"] == "permit"
    assert decision("practitioner:npi|1234567893", "*")["decision"] == "permit"
    assert decision("ClinicMSP", "*")["decision"] == "partial"  # the lab's grant covers Observation only
    # The grants open the hospital's records, and no other custodian's.
    elsewhere = ask(clinic, "providers", "Consent:Check", pseud, "ClinicMSP", "ClinicMSP", "Observation", "TREAT")
    assert elsewhere["decision"] == "deny"
    logged = clinic_reads_observation()
    assert logged["decision"] == "permit" and logged["consentId"] == short["consentId"]

    # The whole record: only the lab results are covered, so the decision is partial, with what it covers. The old
    # form of the request, with the patient's FHIR id, is refused.
    whole = {"patient": pseud, "accessor": "ClinicMSP", "resource": "$everything", "purpose": "TREAT"}
    partial = call(hospital, "providers", "Audit:RecordAccess", json.dumps(whole))
    assert partial["decision"] == "partial"
    assert [(c["consentId"], c["scope"]) for c in partial["coverage"]] == [(short["consentId"], ["Observation"])]
    with pytest.raises(EndorseError) as old_form:
        call(
            hospital,
            "providers",
            "Audit:RecordAccess",
            json.dumps({**whole, "resource": "Patient/pat-jane/$everything"}),
        )
    assert contract_error(old_form.value) == "INVALID_ARGUMENT"

    # The patient revokes the surgeon's access; the lab's expires with its period.
    call(patient, "providers", "Consent:Revoke", surgeon["consentId"], "")
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
    assert [e["decision"] for e in log["entries"]] == ["permit", "partial", "deny"]
    assert {e["custodian"] for e in log["entries"]} == {"HospitalMSP"}


def test_claim_submit_adjudicate_pay_with_private_lines(gateway_as: GatewayAs) -> None:
    hospital, insurer, clinic = gateway_as("HospitalOrg"), gateway_as("InsurerOrg"), gateway_as("ClinicOrg")
    omar = fhir.PATIENTS[1]
    claim_id = opaque_key()
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
    # A claim is known on chain by an opaque key, never by the id the provider's EHR gave it.
    with pytest.raises(EndorseError) as by_id:
        call(
            hospital,
            "claims",
            "Claims:Submit",
            json.dumps({**submission, "claimId": "claim-2026-0001"}),
            transient={"claim": {**lines, "claimId": "claim-2026-0001"}},
        )
    assert contract_error(by_id.value) == "INVALID_ARGUMENT" and "opaque key" in str(by_id.value)
    claim = call(hospital, "claims", "Claims:Submit", json.dumps(submission), transient={"claim": lines})
    assert claim["status"] == "submitted" and claim["collection"] == "lines_HospitalMSP_InsurerMSP"

    # The lines are shared by the provider and the insurer, and by no one else.
    for gw in (hospital, insurer):
        assert ask(gw, "claims", "Claims:Lines", claim_id)["lines"] == lines["lines"]
    with pytest.raises(EvaluateError) as clinic_read:
        ask(clinic, "claims", "Claims:Lines", claim_id)
    assert contract_error(clinic_read.value) == "FORBIDDEN"
    assert ask(clinic, "claims", "Claims:Get", claim_id)["totalCents"] == 27500  # the public summary is shared

    # The same claim again under a new id is an exact duplicate: filed, with the whole-claim edit CARC 18 and the
    # claim it duplicates in its private lines.
    dup = {**submission, "claimId": opaque_key()}
    call(
        hospital, "claims", "Claims:Submit", json.dumps(dup), transient={"claim": {**lines, "claimId": dup["claimId"]}}
    )
    dup_lines = ask(insurer, "claims", "Claims:Lines", dup["claimId"])
    assert dup_lines["duplicateOf"] == claim_id and dup_lines["edits"][-1]["reason"] == "18"

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

    # Many claims' lines in one read, in the order asked: each as Claims:Lines reads it, a refusal per claim.
    unknown = opaque_key()
    batch = ask(insurer, "claims", "Claims:LinesBatch", json.dumps([dup["claimId"], claim_id, unknown]))
    assert [r["claimId"] for r in batch] == [dup["claimId"], claim_id, unknown]
    assert batch[0]["detail"]["duplicateOf"] == claim_id and batch[0]["code"] == ""
    assert (batch[1]["code"], "detail" in batch[1]) == ("NOT_FOUND", False) and "purged" in batch[1]["message"]
    assert batch[2]["code"] == "NOT_FOUND" and "does not exist" in batch[2]["message"]
    (theirs,) = ask(clinic, "claims", "Claims:LinesBatch", json.dumps([dup["claimId"]]))
    assert theirs["code"] == "FORBIDDEN" and "detail" not in theirs
    with pytest.raises(EvaluateError) as twice:
        ask(insurer, "claims", "Claims:LinesBatch", json.dumps([claim_id, claim_id]))
    assert contract_error(twice.value) == "INVALID_ARGUMENT" and "appears twice" in str(twice.value)


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

    # Verify is a read: evaluated, it answers and records nothing.
    ok = ask(hospital, "pharma", "Supply:Verify", gtin, genuine, "LOT7", "2030-01-31")
    assert ok == {"authentic": True, "flags": [], "state": "active", "custodian": "HospitalMSP"}
    clone = ask(clinic, "pharma", "Supply:Verify", gtin, resold, "LOT7", "")
    assert not clone["authentic"] and "already_dispensed" in clone["flags"]
    assert ask(clinic, "pharma", "Supply:Alerts", gtin, resold) == []
    unknown = ask(clinic, "pharma", "Supply:Verify", gtin, "NEVER-MADE-1", "", "")
    assert unknown["flags"] == ["unknown_serial"]

    # VerifyAndReport is submitted: the suspicious pack is reported on chain as an Alert, the genuine one is not.
    reported = call(clinic, "pharma", "Supply:VerifyAndReport", gtin, resold, "LOT7", "")
    assert not reported["authentic"] and "already_dispensed" in reported["flags"]
    (alert,) = ask(hospital, "pharma", "Supply:Alerts", gtin, resold)
    assert (alert["verifiedBy"], alert["manufacturer"]) == ("ClinicMSP", "PharmaMSP")
    assert "already_dispensed" in alert["flags"]
    assert call(hospital, "pharma", "Supply:VerifyAndReport", gtin, genuine, "LOT7", "2030-01-31")["authentic"]
    assert ask(hospital, "pharma", "Supply:Alerts", gtin, genuine) == []
    history = ask(clinic, "pharma", "Supply:History", gtin, resold)
    assert [e["bizStep"] for e in history] == ["commissioning", "shipping", "receiving", "dispensing"]
    with pytest.raises(EndorseError) as second:
        call(hospital, "pharma", "Supply:Dispense", gtin, resold)
    assert contract_error(second.value) == "CONFLICT"


def test_contracts_refuse_the_wrong_channel(gateway_as: GatewayAs) -> None:
    with pytest.raises(EvaluateError) as wrong:
        ask(gateway_as("HospitalOrg"), "claims", "Records:Custodians", "0" * 64)
    assert contract_error(wrong.value) == "FORBIDDEN" and "does not serve channel" in str(wrong.value)
