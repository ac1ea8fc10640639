"""Sharing a patient's records between custodians, under the patient's consent on chain.

- `everything`: the asking side. The ledger says which members hold the patient; this org's own records and what
  every other custodian discloses to it are merged, a page at a time.
- `disclose`: the custodian side. Another member asks for what this org holds; consent is checked and the access
  logged on chain in ONE transaction (Audit:RecordAccess), permit, partial or deny. Minimum necessary: a permit
  releases the record, a partial decision exactly the resources some consent in force covers (its resource types
  and, where it names any, its categories), a deny nothing.
- `disclose_elements`: the same decision, but what is released is a disclosure document per covered resource of the
  asked types, with only the asked elements (salted Merkle proofs against the digests on chain, `records.disclosure`).
- `research_export` / `research_dataset`: de-identified data of a study's subjects for its sponsor (the custodian's
  part, decided per subject on the research consent; the sponsor's whole, collected from every enrolling custodian).
- `claim_response_for`: the insurer answers a claim's provider, and nobody else, with its ClaimResponse.

Paging `everything`: this org's own resources come from the store `count` at a time, in (lastUpdated, type, id)
order, each page after the cursor of the one before. What the other custodians disclose comes whole, on the FIRST
page only, together with who withheld and why: a custodian answers a disclosure request with everything it releases
(and logs that one access on chain), so asking again for each later page would repeat the consent check and the
on-chain access log entry per page, and a cursor across custodians would have to say where each of them stopped.
Later pages therefore ask neither the ledger nor the other members; they continue through this org's own records
only, which the first page's caller may read anyway. A page of own resources costs the same wherever it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from records import deidentify
from records.errors import NotHeld, NotKeptHere, PatientErased, Refused
from records.federation import Disclosed, Federation, Withheld
from records.fhir_claim import claim_response_id
from records.service import Records
from records.store import Cursor, Page, Stored

CLAIM_RESPONSE_WAIT_S = 5.0
# A member's requests that may wait for a response still being kept here at once; its further ones are answered at
# once with what is kept (a member that asks in a loop costs one store read per request, not 5 s of polling each).
WAITS_PER_CALLER = 8
EVERYTHING_COUNT, EVERYTHING_MAX_COUNT = 100, 1000  # own resources per $everything page: default, most
RESEARCH_PURPOSE = "HRESCH"
log = logging.getLogger("careledger.sharing")


@dataclass(frozen=True)
class Everything:
    """A patient's longitudinal record as this org sees it: own resources, disclosed ones, and who withheld."""

    own: list[Stored]
    disclosed: list[Disclosed] = field(default_factory=list)
    withheld: list[Withheld] = field(default_factory=list)
    own_total: int = 0  # this org's resources of the patient, on every page together
    next: Cursor | None = None  # where the next page of own resources starts; None: this is the last page
    first: bool = True  # the first page, which alone carries the other custodians' part

    @property
    def refused_entirely(self) -> bool:
        return bool(self.withheld) and not self.own_total and not any(d.resources for d in self.disclosed)

    @property
    def total(self) -> int:
        """Everything found, own and disclosed (what the first page's Bundle.total says)."""
        return self.own_total + sum(len(d.resources) for d in self.disclosed)


def categories_of(resource: dict[str, Any]) -> set[str]:
    """The category codes a resource carries. `category` is a CodeableConcept (Procedure), a list of them
    (Observation, Condition, ...) or a list of codes (AllergyIntolerance)."""
    value = resource.get("category")
    items = value if isinstance(value, list) else [value] if value is not None else []
    codes: set[str] = set()
    for item in items:
        if isinstance(item, str):
            codes.add(item)
        elif isinstance(item, dict):
            codes |= {str(c["code"]) for c in item.get("coding") or [] if isinstance(c, dict) and c.get("code")}
    return codes


def covers(coverage: dict[str, Any], resource: dict[str, Any]) -> bool:
    """Whether one consent's coverage (resource types, and categories when it names any) reaches a resource."""
    scope = coverage.get("scope") or []
    if "*" not in scope and resource.get("resourceType") not in scope:
        return False
    wanted = set(coverage.get("categories") or [])
    return not wanted or bool(wanted & categories_of(resource))


def released(decision: dict[str, Any], held: list[Stored]) -> list[Stored]:
    """What a decision on a whole-record request lets the custodian release: all on permit, exactly what some
    coverage entry covers on partial, nothing on deny."""
    if decision.get("decision") == "permit":
        return held
    if decision.get("decision") != "partial":
        return []
    coverage = decision.get("coverage") or []
    return [s for s in held if any(covers(c, json.loads(s.content)) for c in coverage)]


class Sharing:
    def __init__(self, records: Records, federation: Federation | None) -> None:
        self.records = records
        self.federation = federation  # None: this org neither asks nor answers other members
        self._waiting: Counter[str] = Counter()  # callers' requests waiting in `_patience`

    @property
    def org(self) -> str:
        return self.records.custodian.msp

    async def everything(
        self, pseudonym: str, purpose: str, count: int = EVERYTHING_COUNT, after: Cursor | None = None
    ) -> Everything:
        """A page of the patient's record: the first (no cursor) with every other custodian's part, later ones with
        this org's own resources after the cursor only (see the module's note on paging)."""
        store = self.records.store
        if after is not None:
            page = store.patient_page(self.records.filed_under(pseudonym), count, after)
            return Everything(page.items, own_total=page.total, next=page.next, first=False)
        # Each custodian files the patient under the consortium pseudonym, or under its own local pseudonym that it
        # linked to it (a patient first registered without a consortium identifier).
        custodians: dict[str, str] = {}
        for c in await self.records.ledger.custodians(pseudonym):
            custodians.setdefault(str(c["custodian"]), str(c.get("localPseudonym") or pseudonym))
        if not custodians:
            raise NotHeld("no member holds records of this patient")
        mine = custodians.pop(self.org, None)
        own = store.patient_page(mine, count) if mine is not None else Page([], 0, None)
        if custodians and self.federation is None:
            raise NotHeld("this gateway is not configured to reach the other members that hold this patient")
        answers = await self.federation.everything(custodians, purpose) if self.federation else []
        result = Everything(
            own.items,
            [a for a in answers if isinstance(a, Disclosed)],
            [a for a in answers if isinstance(a, Withheld)],
            own_total=own.total,
            next=own.next,
        )
        log.info("everything", extra={"custodians": len(custodians), "withheld": len(result.withheld)})
        return result

    async def _decided(self, pseudonym: str, accessor: str, purpose: str) -> list[Stored]:
        """Decide a whole-record request on chain (logged either way) and return what it releases; Refused when
        nothing. A patient not held here is refused with the same answer as one held without consent, so the
        answer tells the asking member nothing about whom this org treats."""
        refused = Refused(f"{self.org} discloses no records of this patient to {accessor} for {purpose}")
        pid = self.records.store.patient_of_pseudonym(pseudonym)
        if pid is None:
            log.info("disclosure", extra={"accessor": accessor, "decision": "deny", "reason": "not held"})
            raise refused
        decision = await self.records.ledger.record_access(pseudonym, accessor, "$everything", purpose)
        log.info("disclosure", extra={"accessor": accessor, "decision": decision["decision"], "tx": decision["txId"]})
        if decision["decision"] not in ("permit", "partial"):
            raise refused
        return released(decision, self.records.store.patient_resources(pseudonym))

    async def disclose(self, pseudonym: str, accessor: str, purpose: str) -> list[dict[str, Any]]:
        """What this org holds of the patient, for `accessor`, as far as the patient's consent reaches; Refused if
        it reaches nothing. Every request is logged: a decision on chain (in the same transaction that checked
        consent) for a patient held here, a log line for one that is not."""
        return [json.loads(s.content) for s in await self._decided(pseudonym, accessor, purpose)]

    async def disclose_elements(
        self, pseudonym: str, accessor: str, purpose: str, wanted: dict[str, list[str]]
    ) -> list[dict[str, Any]]:
        """Disclosure documents, under the same decision as `disclose`: for each released resource of a type in
        `wanted`, only the elements named for that type. Versions registered before v2 have nothing to disclose
        from and are left out (logged)."""
        documents = []
        for stored in await self._decided(pseudonym, accessor, purpose):
            paths = wanted.get(stored.type)
            if not paths:
                continue
            try:
                documents.append(await self.records.disclose(stored, paths))
            except NotKeptHere:
                log.info("not disclosable", extra={"type": stored.type, "reason": "v1 digest"})
        return documents

    # ----- research ------------------------------------------------------------------------------------------------

    async def research_export(self, study_id: str, sponsor: str) -> list[dict[str, Any]]:
        """The de-identified records of the study's subjects this org enrolled, for the sponsor: per subject, only
        when the enrolment's consent was given to `sponsor` (the study's sponsor: the contract checked it at
        enrolment), and only what the research consent releases now (decided and logged on chain, purpose
        HRESCH). Erased or no longer held subjects are left out."""
        today = datetime.now(UTC).date()
        store, ledger = self.records.store, self.records.ledger
        out: list[dict[str, Any]] = []
        for enrolment in await ledger.enrolments(study_id):
            subject = str(enrolment["subject"])
            patient_id = store.patient_of_pseudonym(subject)
            if enrolment["enrolledBy"] != self.org or patient_id is None:
                continue
            if store.is_erased(subject) or (await ledger.consent(enrolment["consentId"]))["grantee"] != sponsor:
                continue
            decision = await ledger.record_access(subject, sponsor, "$everything", RESEARCH_PURPOSE)
            held = [json.loads(s.content) for s in released(decision, store.patient_resources(subject))]
            keys = deidentify.Subject.keyed(store.digest_key(subject), study_id)
            out += deidentify.subject_export(held, keys, today, patient_id)
        log.info("research export", extra={"study": study_id, "sponsor": sponsor, "resources": len(out)})
        return out

    async def research_dataset(self, study_id: str) -> list[dict[str, Any]]:
        """This org's study, as its sponsor sees it: every enrolling custodian's de-identified part (this org's own
        part directly, the others' over mutual TLS). A custodian that refuses or fails makes the whole fail: a
        dataset is anchored only complete."""
        custodians = sorted({str(e["enrolledBy"]) for e in await self.records.ledger.enrolments(study_id)})
        resources: list[dict[str, Any]] = []
        for custodian in custodians:
            if custodian == self.org:
                resources += await self.research_export(study_id, self.org)
                continue
            member = self.federation.members.get(custodian) if self.federation else None
            if member is None or self.federation is None:
                raise NotHeld(f"{custodian} enrolled subjects, and this gateway cannot reach it")
            r = await self.federation._client.get(f"{member.url}/federation/research/{study_id}", timeout=300)
            if r.status_code != 200:
                raise Refused(f"{custodian} did not export its part of {study_id}: {r.status_code} {r.text[:200]}")
            resources += list(r.json()["resources"])
        return resources

    async def payment_for(self, payment_ref: str, caller: str) -> Stored:
        """The PaymentReconciliation of a batch payment, for the provider it paid only (waiting a little, as for a
        ClaimResponse, while this org's worker keeps it)."""
        stored = await self._appearing("PaymentReconciliation", payment_ref, caller)
        requestor = json.loads(stored.content).get("requestor", {}).get("identifier", {}).get("value")
        if caller != requestor:
            raise Refused(f"payment {payment_ref} is not a payment to {caller}")
        return stored

    @contextlib.contextmanager
    def _patience(self, caller: str) -> Iterator[float]:
        """Until when a caller's request may wait for what it asks to be kept here: CLAIM_RESPONSE_WAIT_S from now,
        or not at all while the caller already has WAITS_PER_CALLER requests waiting."""
        if self._waiting[caller] >= WAITS_PER_CALLER:
            yield time.monotonic()
            return
        self._waiting[caller] += 1
        try:
            yield time.monotonic() + CLAIM_RESPONSE_WAIT_S
        finally:
            self._waiting[caller] -= 1
            if not self._waiting[caller]:
                del self._waiting[caller]

    async def _appearing(self, rtype: str, rid: str, caller: str) -> Stored:
        with self._patience(caller) as deadline:
            while self.records.store.read(rtype, rid) is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        return self.records.read(rtype, rid)

    async def claim_responses_for(self, claim_ids: list[str], caller: str) -> list[Stored]:
        """The ClaimResponses to many claims of the caller's, in the order asked, waiting a little for those not
        kept yet (as `claim_response_for`); those still missing, erased since, or to another provider's claims are
        left out, so the answer says nothing about claims that are not the caller's."""
        ids = [claim_response_id(c) for c in claim_ids]
        missing = set(ids)
        with self._patience(caller) as deadline:
            while True:
                missing = {i for i in missing if self.records.store.head("ClaimResponse", i) is None}
                if not missing or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.05)
        found = []
        for rid in ids:
            if rid in missing:
                continue
            try:
                stored = self.records.read("ClaimResponse", rid)
            except (NotHeld, PatientErased):
                continue
            if json.loads(stored.content).get("requestor", {}).get("identifier", {}).get("value") == caller:
                found.append(stored)
        return found

    async def claim_response_for(self, claim_id: str, caller: str) -> Stored:
        """The ClaimResponse to a claim, for the claim's provider only. The provider asks as soon as the adjudication
        commits, while this org's worker may still be storing the response: wait for it a little here rather than
        have the provider poll."""
        stored = await self._appearing("ClaimResponse", claim_response_id(claim_id), caller)
        # The requestor was written from the claim on chain when the response was built.
        requestor = json.loads(stored.content).get("requestor", {}).get("identifier", {}).get("value")
        if caller != requestor:
            raise Refused(f"claim {claim_id} is not a claim of {caller}")
        return stored
