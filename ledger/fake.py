"""An in-memory ledger for fast unit tests of everything above the contracts: the records service, the gateway's
routes and the workers' tasks. Integration tests use the real network instead.

`FakeLedger` is one shared world; `world.member("HospitalMSP")` is a `Transport` that calls the contracts as that
org. It models the contracts' state machines closely enough to test callers, not the contracts themselves (those are
tested in Go):
- a transaction's writes are applied only when it commits, so nothing inside one call reads its own writes, as on
  Fabric;
- refusals are the contracts' codes (`ledger.errors`);
- `fail_next(function, error, committed=...)` makes the next call of a function raise an error (a refusal, a Fabric
  error), after its writes were committed or not. An unknown-outcome error is what the real transport cannot
  resolve before its deadline: the call raises `OutcomeUnknown` with the transaction kept for `settle`, which then
  finds it committed, or commits it (a transaction never ordered, sent again).
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fabric_gateway import CommitError, CommitUnknown
from ledger.errors import LedgerConflict, LedgerForbidden, LedgerInvalid, LedgerNotFound, LedgerRefused
from ledger.transport import OnPrepared, OutcomeUnknown, Prepared, Sent, kept

Json = dict[str, Any]


@dataclass
class Call:
    """What one contract function sees: who calls, its arguments, and the committed state (never its own writes)."""

    msp: str
    kind: str
    args: list[str]
    transient: Mapping[str, bytes]
    state: Mapping[str, Any]
    tx_id: str
    now: str
    writes: dict[str, Any] = field(default_factory=dict)
    event: tuple[str, Json] | None = None

    def get(self, key: str) -> Any:
        return self.state.get(key)

    def put(self, key: str, value: Any) -> None:
        self.writes[key] = value

    def emit(self, name: str, payload: Json) -> None:
        self.event = (name, payload)

    def transient_json(self, name: str) -> Json:
        if name not in self.transient:
            raise LedgerInvalid(f"transient {name!r} is missing")
        value: Json = json.loads(self.transient[name])
        return value


Handler = Callable[[Call], Any]


@dataclass
class Failure:
    function: str
    error: Exception
    committed: bool


class FakeLedger:
    """The world every member shares: committed state, the event log, and the orgs' kinds."""

    def __init__(self, kinds: Mapping[str, str]) -> None:
        self.kinds = dict(kinds)  # MSP id -> provider | insurer | manufacturer
        self.state: dict[str, Any] = {}
        self.events: list[tuple[int, str, str, Json]] = []  # (block, tx id, name, payload)
        self.blocks = itertools.count(1)
        self.failures: list[Failure] = []
        self.prepared: dict[str, tuple[str, str, list[str], dict[str, bytes]]] = {}  # tx id -> the call, to resend
        self.committed: dict[str, Sent] = {}
        self.invalid: set[str] = set()
        self.handlers: dict[str, Handler] = {**_RECORDS, **_CONSENT, **_AUDIT, **_TRIALS, **_CLAIMS}

    def member(self, msp: str) -> FakeTransport:
        if msp not in self.kinds:
            raise ValueError(f"{msp} is not a member")
        return FakeTransport(self, msp)

    def invalidate_pending(self) -> None:
        """Every transaction prepared and not committed is found invalid when it is settled (as if another write
        changed what it read before it reached a block)."""
        self.invalid |= set(self.prepared) - set(self.committed)

    def fail_next(self, function: str, error: Exception, committed: bool = False) -> None:
        self.failures.append(Failure(function, error, committed))

    def run(
        self,
        msp: str,
        function: str,
        args: Sequence[str],
        transient: Mapping[str, bytes],
        write: bool,
        tx_id: str | None = None,
        prepared: Prepared | None = None,
    ) -> Sent:
        handler = self.handlers.get(function)
        if handler is None:
            raise LedgerInvalid(f"{function} is not modelled by the fake ledger")
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        call = Call(msp, self.kinds[msp], list(args), transient, dict(self.state), tx_id or uuid.uuid4().hex, now)
        failure = next((f for f in self.failures if f.function == function), None)
        if failure is not None:
            self.failures.remove(failure)
            if not failure.committed:
                raise self._as_raised(failure.error, prepared)
        result = handler(call)
        raw = json.dumps(result).encode() if result is not None else b""
        sent = Sent(call.tx_id, raw, 0)
        if write:
            sent = Sent(call.tx_id, raw, next(self.blocks))
            self.state.update(call.writes)
            self.committed[call.tx_id] = sent
            if call.event is not None:
                self.events.append((sent.block_number, call.tx_id, *call.event))
        if failure is not None:
            raise self._as_raised(failure.error, prepared)
        return sent

    @staticmethod
    def _as_raised(error: Exception, prepared: Prepared | None) -> Exception:
        """An injected unknown outcome carries the signed transaction, as the real transport's does."""
        if prepared is not None and isinstance(error, CommitUnknown) and not isinstance(error, OutcomeUnknown):
            return OutcomeUnknown(prepared, error)
        return error


class FakeTransport:
    """One member's view: contract calls as that org."""

    def __init__(self, world: FakeLedger, msp: str) -> None:
        self.world = world
        self.msp = msp

    async def submit(
        self,
        channel: str,
        function: str,
        args: Sequence[str],
        transient: Mapping[str, bytes] | None = None,
        on_prepared: OnPrepared | None = None,
    ) -> Sent:
        tx_id = uuid.uuid4().hex
        prepared = Prepared(channel, tx_id, json.dumps([self.msp, function, list(args)]).encode())
        self.world.prepared[tx_id] = (self.msp, function, list(args), dict(transient or {}))
        kept(prepared, on_prepared)
        return self.world.run(self.msp, function, args, transient or {}, write=True, tx_id=tx_id, prepared=prepared)

    async def settle(self, prepared: Prepared) -> Sent:
        """A kept transaction sent again: what committed stands; one never ordered commits now (unless the world
        was told it is invalid: `invalidate_pending`)."""
        if prepared.tx_id in self.world.committed:
            return self.world.committed[prepared.tx_id]
        if prepared.tx_id in self.world.invalid:
            raise CommitError(prepared.tx_id, "MVCC_READ_CONFLICT", 0)
        msp, function, args, transient = self.world.prepared[prepared.tx_id]
        return self.world.run(msp, function, args, transient, write=True, tx_id=prepared.tx_id)

    async def wait_for_block(self, channel: str, block_number: int, orgs: Sequence[str]) -> None:
        return None  # one world: every member sees every block at once

    async def evaluate(self, channel: str, function: str, args: Sequence[str]) -> bytes:
        return self.world.run(self.msp, function, args, {}, write=False).result


def _must_be(call: Call, kind: str, action: str) -> None:
    if call.kind != kind:
        raise LedgerForbidden(f"{action}: only {kind} orgs may do this; {call.msp} is {call.kind!r}")


# ----- Records -------------------------------------------------------------------------------------------------


def _register(call: Call) -> int:
    _must_be(call, "provider", "Records.Register")
    entries: list[Json] = json.loads(call.args[0])
    written = []
    for e in entries:
        if "id" in e or len(e.get("resourceKey", "")) != 64:
            raise LedgerInvalid("entries carry an opaque resourceKey, never a client id")
        head_key = f"record/{e['resourceKey']}"
        head = call.get(head_key)
        if head is not None and head["custodian"] != call.msp:
            raise LedgerForbidden(f"resource {e['resourceKey']} is held by {head['custodian']}")
        current = head["version"] if head else 0
        same_scheme = head is not None and head["digestScheme"] == (e.get("digestScheme") or "v1")
        if e["version"] == current and head is not None and head["digest"] == e["digest"] and same_scheme:
            continue  # a retry of what is registered
        if e["version"] != current + 1:
            raise LedgerConflict(f"resource {e['resourceKey']}: version {e['version']} is not next ({current + 1})")
        if e.get("digestScheme", "v1") not in ("v1", "v2"):
            raise LedgerInvalid(f"digestScheme {e['digestScheme']!r} is neither v1 nor v2")
        record = {**e, "digestScheme": e.get("digestScheme") or "v1", "custodian": call.msp, "txId": call.tx_id}
        call.put(head_key, record)
        call.put(f"{head_key}/{e['version']}", record)
        if not e.get("directory"):
            custodianship = {"custodian": call.msp, "patient": e["patient"], "localPseudonym": ""}
            call.put(f"custodian/{e['patient']}/{call.msp}", custodianship)
        written.append(e)
    if written:
        call.emit("Records.Registered", {"custodian": call.msp, "txId": call.tx_id, "entries": written})
    return len(written)


def _record(call: Call) -> Json:
    resource_key, version = call.args[0], int(call.args[1])
    record: Json | None = call.get(f"record/{resource_key}" + (f"/{version}" if version else ""))
    if record is None:
        raise LedgerNotFound(f"resource {resource_key} is not registered")
    return record


def _custodians(call: Call) -> list[Json]:
    """Registered custodians of the pseudonym, then those that linked a local pseudonym of theirs to it."""
    prefix, links = f"custodian/{call.args[0]}/", f"link/{call.args[0]}/"
    out = [v for k, v in sorted(call.state.items()) if k.startswith(prefix)]
    linked = [v for k, v in sorted(call.state.items()) if k.startswith(links) and v["status"] == "linked"]
    return out + [
        {"custodian": v["custodian"], "patient": v["consortium"], "localPseudonym": v["local"]} for v in linked
    ]


def _link(call: Call) -> Json:
    _must_be(call, "provider", "Records.LinkPatient")
    local, consortium = call.args
    if call.get(f"custodian/{local}/{call.msp}") is None:
        raise LedgerForbidden(f"{call.msp} registered no records under this local pseudonym")
    current = call.get(f"local-link/{local}/{call.msp}")
    if current is not None and current["status"] == "linked":
        if current["consortium"] == consortium:
            return dict(current)
        raise LedgerConflict(f"{call.msp} linked this local pseudonym to another patient")
    link = {"consortium": consortium, "local": local, "custodian": call.msp, "status": "linked", "txId": call.tx_id}
    call.put(f"local-link/{local}/{call.msp}", link)
    call.put(f"link/{consortium}/{call.msp}/{local}", link)
    call.emit("Records.PatientLinked", link)
    return link


def _erasure(call: Call) -> Json:
    _must_be(call, "provider", "Records.RecordErasure")
    erasure = {"patient": call.args[0], "custodian": call.msp, "at": call.now, "txId": call.tx_id}
    call.put(f"erasure/{call.args[0]}/{call.msp}", erasure)
    call.emit("Records.Erased", erasure)
    return erasure


_RECORDS: dict[str, Handler] = {
    "Records:Register": _register,
    "Records:Get": _record,
    "Records:Custodians": _custodians,
    "Records:LinkPatient": _link,
    "Records:RecordErasure": _erasure,
}


# ----- Consent and Audit: a custodian releases only on a consent the patient or that custodian recorded ----------


def _grant(call: Call) -> Json:
    _must_be(call, "provider", "Consent.Grant")
    grant: Json = json.loads(call.args[0])
    key = f"consent/{grant['consentId']}"
    if call.get(key) is not None:
        raise LedgerConflict(f"consent {grant['consentId']} exists")
    if call.get(f"custodian/{grant['patient']}/{call.msp}") is None:
        raise LedgerForbidden(f"{call.msp} holds no records of this patient")
    record = {
        **grant,
        "categories": sorted(grant.get("categories") or []),
        "status": "active",
        "grantedBy": call.msp,
        "grantedVia": "custodian",
        "grantedAt": call.now,
        "revokedAt": "",
        "txId": call.tx_id,
    }
    call.put(key, record)
    call.emit("Consent.Granted", record)
    return record


def _consent(call: Call) -> Json:
    record: Json | None = call.get(f"consent/{call.args[0]}")
    if record is None:
        raise LedgerNotFound(f"consent {call.args[0]} does not exist")
    return record


def _revoke(call: Call) -> Json:
    record = _consent(call)
    if record["grantedBy"] != call.msp or record["documentDigest"] != call.args[1]:
        raise LedgerForbidden("only the custodian that recorded the consent revokes it, with the same document")
    if record["status"] != "active":
        raise LedgerConflict(f"consent {call.args[0]} is {record['status']}")
    revoked = {**record, "status": "revoked", "revokedAt": call.now, "txId": call.tx_id}
    call.put(f"consent/{call.args[0]}", revoked)
    call.emit("Consent.Revoked", revoked)
    return revoked


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _reach(grant: Json, resource_type: str, single: bool, categories: Sequence[str]) -> str:
    """How much of a request one grant covers: "all", "part" or "" (the contract's rule)."""
    restricted = bool(grant.get("categories"))
    if resource_type == "*":
        return "all" if "*" in grant["scope"] and not restricted else "part"
    if "*" not in grant["scope"] and resource_type not in grant["scope"]:
        return ""
    if not restricted:
        return "all"
    if not single:
        return "part"
    return "all" if set(categories) & set(grant["categories"]) else ""


def _decide(
    call: Call,
    patient: str,
    accessor: str,
    custodian: str,
    purpose: str,
    resource_type: str = "*",
    single: bool = False,
    categories: Sequence[str] = (),
) -> Json:
    """permit, partial (release what `coverage` lists) or deny, over the grants that open the custodian's records."""
    coverage: list[Json] = []
    permit, partial = "", []
    now = _instant(call.now)
    for key, c in sorted(call.state.items()):
        if not key.startswith("consent/") or c["patient"] != patient or c["grantee"] != accessor:
            continue
        opened_by = c["grantedVia"] == "patient" or c["grantedBy"] == custodian
        in_period = _instant(c["start"]) <= now and (not c["end"] or now < _instant(c["end"]))
        if not (opened_by and c["status"] == "active" and c["purpose"] == purpose and in_period):
            continue
        reach = _reach(c, resource_type, single, categories)
        if not reach:
            continue
        coverage.append({"consentId": c["consentId"], "scope": c["scope"], "categories": c.get("categories") or []})
        if reach == "all" and not permit:
            permit = c["consentId"]
        elif reach == "part":
            partial.append(c["consentId"])
    if permit:
        return {
            "decision": "permit",
            "reason": f"consent {permit} permits it",
            "consentId": permit,
            "coverage": coverage,
        }
    if partial:
        reason = f"consents {', '.join(partial)} cover part of it; release only what the coverage lists"
        return {"decision": "partial", "reason": reason, "consentId": "", "coverage": coverage}
    return {
        "decision": "deny",
        "reason": f"no consent grants {accessor} access to this patient's records",
        "consentId": "",
        "coverage": [],
    }


def _record_access(call: Call) -> Json:
    _must_be(call, "provider", "Audit.RecordAccess")
    request: Json = json.loads(call.args[0])
    resource = request["resource"]
    rtype, _, rkey = resource.partition("/")
    if resource != "$everything" and (not rtype[:1].isupper() or (rkey and len(rkey) != 64)):
        raise LedgerInvalid(f"resource {resource!r} is neither Type/<resourceKey>, Type nor $everything")
    if request.get("categories") and not rkey:
        raise LedgerInvalid("categories describe one requested resource")
    if call.get(f"custodian/{request['patient']}/{call.msp}") is None:
        raise LedgerForbidden(f"{call.msp} holds no records of this patient")
    decision = _decide(
        call,
        request["patient"],
        request["accessor"],
        call.msp,
        request["purpose"],
        "*" if resource == "$everything" else rtype,
        bool(rkey),
        request.get("categories") or (),
    )
    entry = {**request, **decision, "custodian": call.msp, "at": call.now, "txId": call.tx_id}
    call.put(f"audit/{request['patient']}/{call.now}/{call.tx_id}", entry)
    call.emit("Audit.Logged", entry)
    return entry


def _audit_by_patient(call: Call) -> Json:
    prefix = f"audit/{call.args[0]}/"
    entries = [v for k, v in sorted(call.state.items()) if k.startswith(prefix)]
    return {"entries": entries, "bookmark": ""}


_CONSENT: dict[str, Handler] = {"Consent:Grant": _grant, "Consent:Get": _consent, "Consent:Revoke": _revoke}
_AUDIT: dict[str, Handler] = {"Audit:RecordAccess": _record_access, "Audit:ByPatient": _audit_by_patient}


# ----- Trials: studies, enrolment under a research consent, anchored datasets ------------------------------------


def _register_study(call: Call) -> Json:
    if call.kind not in ("provider", "manufacturer"):
        raise LedgerForbidden(f"Trials.RegisterStudy: {call.msp} is {call.kind!r}")
    study_id, protocol = call.args
    if call.get(f"study/{study_id}") is not None:
        raise LedgerConflict(f"study {study_id} is registered already; its protocol cannot change")
    study = {
        "studyId": study_id,
        "sponsor": call.msp,
        "protocolDigest": protocol,
        "registeredAt": call.now,
        "txId": call.tx_id,
    }
    call.put(f"study/{study_id}", study)
    call.emit("Trials.StudyRegistered", study)
    return study


def _study(call: Call, study_id: str) -> Json:
    study: Json | None = call.get(f"study/{study_id}")
    if study is None:
        raise LedgerNotFound(f"study {study_id} is not registered")
    return study


def _enrol(call: Call) -> Json:
    _must_be(call, "provider", "Trials.Enrol")
    study_id, subject, consent_id = call.args
    study = _study(call, study_id)
    if call.get(f"custodian/{subject}/{call.msp}") is None:
        raise LedgerForbidden(f"{call.msp} holds no records of this subject")
    consent: Json | None = call.get(f"consent/{consent_id}")
    if consent is None:
        raise LedgerNotFound(f"consent {consent_id} does not exist")
    if consent["patient"] != subject or consent["grantee"] != study["sponsor"]:
        raise LedgerForbidden(f"consent {consent_id} is not the subject's consent to the sponsor {study['sponsor']}")
    if consent["grantedVia"] == "custodian" and consent["grantedBy"] != call.msp:
        raise LedgerForbidden(f"consent {consent_id} does not open {call.msp}'s records")
    if consent["status"] != "active" or consent["purpose"] != "HRESCH":
        raise LedgerForbidden(f"consent {consent_id} does not allow enrolment: not in force for HRESCH")
    if not _reach(consent, "ResearchSubject", False, ()):
        raise LedgerForbidden(f"consent {consent_id} does not allow enrolment: does not cover ResearchSubject")
    if call.get(f"enrolment/{study_id}/{subject}") is not None:
        raise LedgerConflict(f"the subject is enrolled in {study_id} already")
    enrolment = {
        "studyId": study_id,
        "subject": subject,
        "consentId": consent_id,
        "enrolledBy": call.msp,
        "enrolledAt": call.now,
        "txId": call.tx_id,
    }
    call.put(f"enrolment/{study_id}/{subject}", enrolment)
    call.emit("Trials.SubjectEnrolled", enrolment)
    return enrolment


def _enrolments(call: Call) -> list[Json]:
    _study(call, call.args[0])
    prefix = f"enrolment/{call.args[0]}/"
    return [v for k, v in sorted(call.state.items()) if k.startswith(prefix)]


def _anchor_dataset(call: Call) -> Json:
    study_id, version, digest = call.args
    study = _study(call, study_id)
    if study["sponsor"] != call.msp:
        raise LedgerForbidden(f"only the sponsor {study['sponsor']} anchors datasets of {study_id}")
    if len(digest) != 64:
        raise LedgerInvalid("digest must be 64 lower-case hex characters")
    if call.get(f"dataset/{study_id}/{version}") is not None:
        raise LedgerConflict(f"dataset {version} of {study_id} is anchored already")
    dataset = {"studyId": study_id, "version": version, "digest": digest, "anchoredAt": call.now, "txId": call.tx_id}
    call.put(f"dataset/{study_id}/{version}", dataset)
    call.emit("Trials.DatasetAnchored", dataset)
    return dataset


def _verify_dataset(call: Call) -> Json:
    study_id, version, digest = call.args
    _study(call, study_id)
    dataset: Json | None = call.get(f"dataset/{study_id}/{version}")
    if dataset is None:
        raise LedgerNotFound(f"dataset {version} of {study_id} is not anchored")
    return {
        "match": dataset["digest"] == digest,
        "anchoredDigest": dataset["digest"],
        "anchoredAt": dataset["anchoredAt"],
    }


_TRIALS: dict[str, Handler] = {
    "Trials:RegisterStudy": _register_study,
    "Trials:Enrol": _enrol,
    "Trials:Enrolments": _enrolments,
    "Trials:AnchorDataset": _anchor_dataset,
    "Trials:VerifyDataset": _verify_dataset,
}


# ----- Claims --------------------------------------------------------------------------------------------------


def _claim(call: Call, claim_id: str | None = None) -> Json:
    cid = claim_id or call.args[0]
    claim: Json | None = call.get(f"claim/{cid}")
    if claim is None:
        raise LedgerNotFound(f"claim {cid} does not exist")
    if call.msp not in (claim["provider"], claim["insurer"]):
        raise LedgerForbidden(f"{call.msp} is not a party to claim {cid}")
    return claim


def _save(call: Call, claim: Json, event: str) -> Json:
    claim = {**claim, "txId": call.tx_id}
    call.put(f"claim/{claim['claimId']}", claim)
    call.emit(event, claim)
    return claim


def _submit_claim(call: Call) -> Json:
    _must_be(call, "provider", "Claims.Submit")
    s: Json = json.loads(call.args[0])
    detail = call.transient_json("claim")
    if call.get(f"claim/{s['claimId']}") is not None:
        raise LedgerConflict(f"claim {s['claimId']} exists")
    edited = {int(e["sequence"]) for e in detail.get("edits") or []}
    if sum(int(line["netCents"]) for line in detail["lines"]) != s["totalCents"] and 0 not in edited:
        raise LedgerInvalid("totalCents is not the sum of the lines")  # unless an edit of the whole claim says so
    if any(int(line["netCents"]) == 0 and int(line["sequence"]) not in edited for line in detail["lines"]):
        raise LedgerInvalid("a line has no charge and no edit that says so")
    claim = {
        **s,
        "provider": call.msp,
        "status": "submitted",
        "outcome": "",
        "approvedCents": 0,
        "submittedAt": call.now,
        "adjudicatedAt": "",
        "paymentRef": "",
        "paidCents": 0,
    }
    call.put(f"lines/{s['claimId']}", _marked_if_duplicate(call, claim, detail))
    return _save(call, claim, "Claims.Submitted")


def _marked_if_duplicate(call: Call, claim: Json, detail: Json) -> Json:
    """As the contract does: a claim with the same patient, provider, service date and codes as one filed before is
    filed with the whole-claim edit CARC 18 and the claim it duplicates; an original enters the index."""
    if detail.get("duplicateOf"):
        raise LedgerInvalid("claim.duplicateOf is the contract's finding, not the provider's")
    if claim.get("use") == "preauthorization":
        return detail
    key = f"claimindex/{claim['provider']}|{claim['insurer']}|{claim['patient']}"
    index: list[Json] = list(call.get(key) or [])
    codes = ",".join(sorted(str(line["code"]) for line in detail["lines"]))
    original = next(
        (e["claimId"] for e in index if (e["serviceDate"], e["codes"]) == (claim["serviceDate"], codes)), None
    )
    if original is not None:
        return {
            **detail,
            "edits": [*(detail.get("edits") or []), {"sequence": 0, "reason": "18"}],
            "duplicateOf": original,
        }
    call.put(key, [*index, {"claimId": claim["claimId"], "serviceDate": claim["serviceDate"], "codes": codes}])
    return detail


def _lines(call: Call, claim_id: str | None = None) -> Json:
    """A claim's private lines, refused as the contract refuses them: unknown, not the caller's, purged after
    retention (a claim marked `linesPurged` whose lines are gone), or not on this peer (lines never stored)."""
    claim = _claim(call, claim_id)
    cid = claim["claimId"]
    lines: Json | None = call.get(f"lines/{cid}")
    if lines is None and claim.get("linesPurged"):
        raise LedgerNotFound(f"the private part of claim {cid} was purged after retention")
    if lines is None:
        raise LedgerNotFound(f"claim {cid} has no lines on this peer")
    return lines


def _lines_batch(call: Call) -> list[Json]:
    """Claims:LinesBatch: each claim as _lines reads it, its refusal reported in its result; only a malformed list
    refuses the call."""
    try:
        ids = json.loads(call.args[0])
    except ValueError:
        raise LedgerInvalid("claimIds is not valid JSON of the expected shape") from None
    if ids is None:
        ids = []
    if not isinstance(ids, list) or not all(isinstance(cid, str) for cid in ids):
        raise LedgerInvalid("claimIds is not valid JSON of the expected shape")
    if not 1 <= len(ids) <= 500:
        raise LedgerInvalid(f"a batch reads 1 to 500 claims, not {len(ids)}")
    seen: set[str] = set()
    for i, cid in enumerate(ids):
        if len(cid) != 64 or not set(cid) <= set("0123456789abcdef"):
            raise LedgerInvalid(f"claimIds[{i}] must be an opaque key (64 lower-case hex characters), not a client id")
        if cid in seen:
            raise LedgerInvalid(f"claimIds[{i}]: claim {cid} appears twice")
        seen.add(cid)
    results: list[Json] = []
    for cid in ids:
        try:
            results.append({"claimId": cid, "detail": _lines(call, cid), "code": "", "message": ""})
        except LedgerRefused as e:
            results.append({"claimId": cid, "code": e.code, "message": e.message})
    return results


def _adjudicate(call: Call) -> Json:
    _must_be(call, "insurer", "Claims.Adjudicate")
    claim = _claim(call)
    if claim["status"] != "submitted":
        raise LedgerConflict(f"claim {claim['claimId']} is {claim['status']}; only a submitted claim is adjudicated")
    decision = call.transient_json("adjudication")
    outcomes = {line["outcome"] for line in decision["lines"]}
    outcome = outcomes.pop() if len(outcomes) == 1 and outcomes <= {"approved", "denied"} else "partial"
    approved = sum(int(line["approvedCents"]) for line in decision["lines"])
    call.put(f"adjudication/{claim['claimId']}", {"claimId": claim["claimId"], "outcome": outcome, **decision})
    changes = {"status": "adjudicated", "outcome": outcome, "approvedCents": approved, "adjudicatedAt": call.now}
    return _save(call, {**claim, **changes}, "Claims.Adjudicated")


def _adjudication(call: Call) -> Json:
    _claim(call)
    found: Json | None = call.get(f"adjudication/{call.args[0]}")
    if found is None:
        raise LedgerNotFound(f"claim {call.args[0]} is not adjudicated")
    return found


def _pay(call: Call) -> Json:
    _must_be(call, "insurer", "Claims.Pay")
    claim = _claim(call)
    if claim["status"] != "adjudicated" or claim["outcome"] == "denied":
        raise LedgerConflict(f"claim {claim['claimId']} is {claim['status']}; only an adjudicated claim is paid")
    changes = {"status": "paid", "paymentRef": call.args[1], "paidCents": claim["approvedCents"], "paidAt": call.now}
    return _save(call, {**claim, **changes}, "Claims.Paid")


def _cancel(call: Call) -> Json:
    _must_be(call, "provider", "Claims.Cancel")
    claim = _claim(call)
    if claim["status"] != "submitted":
        raise LedgerConflict(f"claim {claim['claimId']} is {claim['status']}; only a submitted claim is cancelled")
    key = f"claimindex/{claim['provider']}|{claim['insurer']}|{claim['patient']}"
    call.put(key, [e for e in call.get(key) or [] if e["claimId"] != claim["claimId"]])
    return _save(call, {**claim, "status": "cancelled", "cancelReason": call.args[1]}, "Claims.Cancelled")


def _submit_batch(call: Call) -> Json:
    _must_be(call, "provider", "Claims.SubmitBatch")
    submissions: list[Json] = json.loads(call.args[0])
    details = call.transient_json("claims")
    claims = []
    for s in submissions:
        detail = {"claim": json.dumps(details[s["claimId"]]).encode()}
        one = Call(call.msp, call.kind, [json.dumps(s)], detail, {**call.state, **call.writes}, call.tx_id, call.now)
        claims.append(_submit_claim(one))
        call.writes.update(one.writes)
    payload = {"provider": call.msp, "txId": call.tx_id, "claims": claims}
    call.emit("Claims.SubmittedBatch", payload)
    return payload


def _adjudicate_batch(call: Call) -> Json:
    _must_be(call, "insurer", "Claims.AdjudicateBatch")
    decisions = call.transient_json("adjudications")
    results: list[Json] = []
    claims: list[Json] = []
    for claim_id in sorted(decisions):
        decision = {"adjudication": json.dumps(decisions[claim_id]).encode()}
        one = Call(call.msp, call.kind, [claim_id], decision, {**call.state, **call.writes}, call.tx_id, call.now)
        result: Json = {"claimId": claim_id, "status": "adjudicated", "code": "", "message": "", "claim": None}
        try:
            result["claim"] = _adjudicate(one)
        except LedgerRefused as e:
            results.append({**result, "status": "refused", "code": e.code, "message": e.message})
            continue
        call.writes.update(one.writes)
        results.append(result)
        claims.append(result["claim"])
    payload = {"insurer": call.msp, "txId": call.tx_id, "results": results, "claims": claims}
    if claims:
        call.emit("Claims.AdjudicatedBatch", payload)
    return payload


def _preauth_decided(call: Call, claim: Json, d: Json) -> Json:
    """A prior-authorisation request with the insurer's decision, refused as the contract refuses it."""
    cid, decisions = claim["claimId"], list(claim.get("decisions") or [])
    if claim["insurer"] != call.msp:
        raise LedgerForbidden(f"claim {cid} is addressed to {claim['insurer']}")
    if d.get("decision") not in ("approved", "denied", "pended") or (d["decision"] == "denied" and not d.get("reason")):
        raise LedgerInvalid(f"decision {d.get('decision')!r} is not a decision with its reason")
    if claim.get("use") != "preauthorization":
        raise LedgerConflict(f"claim {cid} is not a prior authorisation request; adjudicate it")
    if claim["status"] not in ("submitted", "pended", "appealed"):
        raise LedgerConflict(f"prior authorisation {cid} is {claim['status']}; there is nothing to decide")
    if "decisionsSeen" in d and d["decisionsSeen"] != len(decisions):
        raise LedgerConflict(f"prior authorisation {cid} has had {len(decisions)} decisions")
    made = {"decision": d["decision"], "reason": d.get("reason", ""), "at": call.now, "txId": call.tx_id}
    out = {**claim, "decisions": [*decisions, made]}
    if d["decision"] == "pended":
        return {**out, "status": "pended"}
    denied = d["decision"] == "denied"
    return {
        **out,
        "status": "decided",
        "outcome": d["decision"],
        "preAuthRef": d.get("preAuthRef", ""),
        "denialReason": d["reason"] if denied else "",
        "approvedCents": 0 if denied else claim["totalCents"],
        "decidedAt": call.now,
    }


def _decide_preauth(call: Call) -> Json:
    _must_be(call, "insurer", "Claims.DecidePreauth")
    return _save(call, _preauth_decided(call, _claim(call), json.loads(call.args[1])), "Claims.PreauthDecided")


def _decide_preauth_batch(call: Call) -> Json:
    _must_be(call, "insurer", "Claims.DecidePreauthBatch")
    decisions = call.transient_json("decisions")
    results: list[Json] = []
    claims: list[Json] = []
    for claim_id in sorted(decisions):
        try:
            claim = {**_preauth_decided(call, _claim(call, claim_id), decisions[claim_id]), "txId": call.tx_id}
        except LedgerRefused as e:
            results.append({"claimId": claim_id, "status": "refused", "code": e.code, "message": e.message})
            continue
        call.put(f"claim/{claim_id}", claim)
        results.append({"claimId": claim_id, "status": claim["status"], "code": "", "message": "", "claim": claim})
        claims.append(claim)
    payload = {"insurer": call.msp, "txId": call.tx_id, "results": results, "claims": claims}
    if claims:
        call.emit("Claims.PreauthDecidedBatch", payload)
    return payload


def _pay_batch(call: Call) -> Json:
    _must_be(call, "insurer", "Claims.PayBatch")
    provider, ref, claim_ids = call.args[0], call.args[1], json.loads(call.args[2])
    recorded: Json | None = call.get(f"payment/{ref}")
    if recorded is not None:
        if set(claim_ids) == {x["claimId"] for x in recorded["lines"] + recorded["refused"]}:
            return recorded  # the same payment again: what was recorded
        raise LedgerConflict(f"payment {ref} is recorded for another payment; read it with Claims:Payment")
    lines: list[Json] = []
    refused: list[Json] = []
    for cid in claim_ids:
        claim: Json | None = call.get(f"claim/{cid}")
        if claim is None or claim["provider"] != provider or claim["insurer"] != call.msp:
            refused.append({"claimId": cid, "code": "NOT_FOUND", "message": "not a claim of this payment"})
        elif claim["status"] != "adjudicated" or claim["outcome"] == "denied":
            refused.append({"claimId": cid, "code": "CONFLICT", "message": f"claim is {claim['status']}"})
        else:
            amount = claim["approvedCents"]
            lines.append({"claimId": cid, "amountCents": amount})
            call.put(f"claim/{cid}", {**claim, "status": "paid", "paymentRef": ref, "paidCents": amount})
    if not lines:
        raise LedgerConflict(f"no claim of payment {ref} can be paid")
    payment = {
        "paymentRef": ref,
        "provider": provider,
        "insurer": call.msp,
        "currency": "USD",
        "lines": lines,
        "totalCents": sum(x["amountCents"] for x in lines),
        "refused": refused,
        "paidAt": call.now,
        "txId": call.tx_id,
    }
    call.put(f"payment/{ref}", payment)
    call.emit("Claims.PaidBatch", payment)
    return payment


_CLAIMS: dict[str, Handler] = {
    "Claims:SubmitBatch": _submit_batch,
    "Claims:AdjudicateBatch": _adjudicate_batch,
    "Claims:PayBatch": _pay_batch,
    "Claims:Submit": _submit_claim,
    "Claims:Get": _claim,
    "Claims:Lines": _lines,
    "Claims:LinesBatch": _lines_batch,
    "Claims:Adjudicate": _adjudicate,
    "Claims:AdjudicationOf": _adjudication,
    "Claims:Pay": _pay,
    "Claims:Cancel": _cancel,
    "Claims:DecidePreauth": _decide_preauth,
    "Claims:DecidePreauthBatch": _decide_preauth_batch,
}
