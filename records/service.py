"""This org's FHIR records: the write path (validated entries → encrypted store → one ledger transaction) and the
reads, verification and erasure that follow from it.

A transaction bundle is all-or-nothing across both stores: its rows are staged pending, every entry is registered
in ONE Records:Register transaction, and the rows are committed only when that transaction is valid. When the ledger
refuses, the staged rows are discarded; when the outcome is unknown (timeout), the ledger is asked what happened.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fabric_gateway import NotCommitted
from ledger.contracts import Committed, Ledger
from ledger.errors import LedgerNotFound
from ledger.transport import UNKNOWN_OUTCOME_DEADLINE_S, OutcomeUnknown, Prepared, in_thread
from records import digests, disclosure, fhir_claim, json_form
from records.blobs import (
    BLOB_EXTENSION,
    BlobBackend,
    BlobInfo,
    Blobs,
    FileBackend,
    attachments,
    backend_from_env,
    blob_of,
    name_of,
    with_own_attachments,
)
from records.claim_outbox import ClaimOutbox, held_here
from records.compartments import DIRECTORY, EITHER, PATIENT_ELEMENTS, in_compartment, patient_references
from records.errors import (
    FhirInvalid,
    Issue,
    KeyReused,
    NotHeld,
    NotKeptHere,
    NotOnChain,
    OutsideCompartment,
    PreconditionFailed,
    StillPending,
    Tampered,
    VersionTaken,
)
from records.fhir_claim import PayerDirectory
from records.group_commit import GroupCommit
from records.identity import DEMOGRAPHICS_SYSTEM, IdentitySystems, demographic_token
from records.pending import (
    CLIENT_KEYS_KEPT_S,
    PendingFiles,
    PendingInMemory,
    PendingTransactions,
    Version,
    kept_once_answered,
)
from records.routes import CLAIM, HELD, POSTABLE, RECORDS, LedgerCall, Ledgers, Route, route_of
from records.search import identifier_condition
from records.settings import CustodianSettings
from records.store import OutboxClaim, Query, Row, Store, Stored
from records.validation import Entry


@dataclass(frozen=True)
class Written:
    """One stored resource version, as the transaction-response reports it."""

    type: str
    id: str
    version: int
    last_updated: str
    created: bool
    resource: dict[str, Any]

    @classmethod
    def of(cls, stored: Stored, created: bool = False) -> Written:
        """A version stored earlier, reported as found (or, answering a request again, as created by it)."""
        return cls(stored.type, stored.id, stored.version, stored.last_updated, created, json.loads(stored.content))


@dataclass(frozen=True)
class Verification:
    ok: bool
    reason: str
    ledger_digest: str
    store_digest: str
    tx_id: str


LEDGER_KEY_SYSTEM = "urn:careledger:ledger-key"  # indexes each resource by its key on chain, to find it from an event
PSEUDONYM_SYSTEM = "urn:careledger:pseudonym"  # indexes each Patient by its consortium pseudonym, wherever it is filed


def etag(version: int) -> str:
    return f'W/"{version}"'


def now_instant() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Custodian:
    """The org this gateway keeps records for, and its kind in the consortium."""

    msp: str
    kind: str  # provider | insurer | manufacturer


PRUNE_EVERY_S = 600.0


def _placed(issue: Issue, root: str, place: str) -> Issue:
    """The issue named where its resource is in the request: `Claim.total` at `Bundle.entry[3].resource.total`."""
    if issue.expression == root or issue.expression.startswith(root + "."):
        return replace(issue, expression=place + issue.expression[len(root) :])
    return issue


class Records:
    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        consortium_key: bytes,
        identity_systems: str | tuple[str, ...],
        custodian: Custodian,
        pending: PendingTransactions | None = None,
        payers: PayerDirectory | None = None,
        blob_backend: BlobBackend | None = None,
    ) -> None:
        self.store = store
        self.ledger = ledger
        systems = (identity_systems,) if isinstance(identity_systems, str) else identity_systems
        self.identity = IdentitySystems(systems, consortium_key)
        self.custodian = custodian
        self.payers = payers or PayerDirectory()
        self.pending = pending if pending is not None else PendingInMemory()
        self.claims_outbox = ClaimOutbox(store, ledger, self.payers)
        self._conditional_writes = asyncio.Lock()
        self._in_flight: dict[str, asyncio.Event] = {}  # batches this process is writing now (set when done)
        # Writes whose transactions committed together (the claims of one batch) commit their rows together.
        self._commit_rows = GroupCommit(self._committed)
        self._unknown: set[str] = set()  # batches this process sent and gave up waiting for: settled at once
        self._pruned_at = -PRUNE_EVERY_S
        # Binary content and attachments, encrypted under the patient's key, off the chain (`records.blobs`).
        backend = blob_backend or FileBackend(store_blobs_default(store))
        self.blobs = Blobs(backend, store.digest_key)

    @classmethod
    def open(cls, settings: CustodianSettings, ledger: Ledger) -> Records:
        """The org's records as its settings place them: its store, its keys, its kind in the consortium."""
        custodian = Custodian(settings.org.msp_id, settings.org.kind)
        pending = PendingFiles(settings.pending_dir)
        key, systems, payers = settings.consortium_key(), settings.identity_systems, settings.payers
        blobs = backend_from_env(settings.topology.gateway_home(settings.org) / "blobs")
        return cls(settings.open_store(), ledger, key, systems, custodian, pending, payers, blobs)

    # ----- patients --------------------------------------------------------------------------------------------

    @property
    def mpi_system(self) -> str:
        """The consortium's first person identifier system."""
        return self.identity.primary

    def pseudonym_of_identifier(self, system: str, value: str) -> str:
        return self.identity.pseudonym(system, value)

    def local_pseudonym(self, patient_id: str) -> str:
        """The pseudonym of a Patient with no consortium identifier: keyed with this org's own key (no other member
        can compute it), until it is linked to a consortium pseudonym."""
        return self.store.ledger_key("LocalPatient", patient_id)

    def pseudonym_of_patient(self, patient: dict[str, Any], patient_id: str) -> str:
        """A Patient is filed under the pseudonym it was first stored under; a new one under its consortium pseudonym,
        or a local one when it carries no consortium identifier."""
        head = self.store.head("Patient", patient_id)
        if head is not None:
            return head[1]
        return self.identity.of(patient) or self.local_pseudonym(patient_id)

    def _patient_index(self, patient: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        """What a Patient is also found by: its consortium pseudonym, its demographic token (`match`)."""
        found: tuple[tuple[str, str], ...] = ()
        if (consortium := self.identity.of(patient)) is not None:
            found += ((PSEUDONYM_SYSTEM, consortium),)
        if (token := demographic_token(patient)) is not None:
            found += ((DEMOGRAPHICS_SYSTEM, token),)
        return found

    def filed_under(self, pseudonym: str) -> str:
        """The pseudonym this org files a patient's records under: the consortium one, or the local one of a Patient
        registered here before it carried a consortium identifier."""
        found = self.store.with_identifier("Patient", PSEUDONYM_SYSTEM, pseudonym)
        head = self.store.head("Patient", found[0][0]) if found else None
        return head[1] if head is not None else pseudonym

    def consortium_pseudonym(self, patient_id: str) -> str | None:
        """The pseudonym the consortium knows a Patient held here by: its consortium identifier's, else the one it is
        filed under. None when the Patient is not held here."""
        stored = self.store.read("Patient", patient_id)
        if stored is None:
            return None
        return self.identity.of(json.loads(stored.content)) or stored.patient

    def by_ledger_key(self, rtype: str, key: str) -> Stored | None:
        """The newest version of the resource this org registered under a key seen on chain (in an event)."""
        found = self.store.with_identifier(rtype, LEDGER_KEY_SYSTEM, key)
        return self.store.read(rtype, found[0][0]) if found else None

    def pseudonym_of_local_patient(self, patient_id: str) -> str | None:
        head = self.store.head("Patient", patient_id)
        return head[1] if head else None

    # ----- writes ----------------------------------------------------------------------------------------------

    async def transaction(
        self, entries: list[Entry], compartment: str | None = None, request: str | None = None
    ) -> list[Written]:
        """Store and register the entries as one unit, in entry order; raises FhirInvalid, PreconditionFailed,
        LedgerRefused or a Fabric error. Conditional entries (ifNoneExist, ifMatch, ifNoneMatch) are decided and
        written under one lock, so concurrent requests cannot both create what only one may.
        `compartment`: the one patient (pseudonym) the request may write for, when it is limited to one.
        `request`: the request's key (its content, or the client's Idempotency-Key). From the moment its signed
        transaction is kept until its outcome is definite, the same request sent again (after a 503, a timeout, a
        gateway that died) gets the first one's result once it settles, and is never written twice."""
        if not entries:
            return []
        if request is not None and (earlier := await self._earlier(request)) is not None:
            return earlier
        return await self._transaction_once(entries, compartment, request)

    async def _earlier(self, request: str) -> list[Written] | None:
        """The result of the same request sent before and not answered for sure: settled now, or still pending."""
        remembered = await in_thread(self.pending.remembered, request)  # a file read: off the event loop
        if remembered is None:
            return None
        if remembered.asked_otherwise(request):
            raise KeyReused()
        batch = remembered.batch
        if (writing := self._in_flight.get(batch)) is not None:  # the first one is still being written here
            await writing.wait()
        rows = self.store.batch_rows(batch)
        committed = bool(rows) and self.store.read(*rows[0]) is not None  # committed rows are readable
        if not committed:
            settled = await self.reconcile(batch)
            if settled is None:
                raise StillPending(batch)
            committed = settled
        if not committed or not kept_once_answered(request):
            self.pending.forget(request)
        if not committed:
            return None  # it did not commit: this request writes anew
        # Answered as the first one would have been: its entries in the request's order, new ones as created.
        return [
            Written.of(self.read(rtype, rid, version), created=version == 1 and (rtype, rid, version) in rows)
            for rtype, rid, version in (remembered.answer or rows)
        ]

    async def _transaction_once(
        self, entries: list[Entry], compartment: str | None, request: str | None = None
    ) -> list[Written]:
        conditional = any(e.if_none_exist or e.if_match or e.if_none_match for e in entries)
        if not conditional:
            return await self._transaction(entries, {}, compartment, request)
        async with self._conditional_writes, self._locked_across_processes():
            return await self._transaction(entries, self._existing(entries), compartment, request)

    @contextlib.asynccontextmanager
    async def _locked_across_processes(self) -> AsyncIterator[None]:
        """The org's other gateway and worker processes (on this machine, or on any that share a PostgreSQL store)
        decide their conditional writes before or after this one's, never at the same time: the store's lock."""
        lock = self.store.exclusive()
        waiting = asyncio.ensure_future(asyncio.to_thread(lock.acquire))
        try:
            await asyncio.shield(waiting)
        except BaseException:
            # Given up while the thread still waits for the lock: let it go as soon as the thread has it.
            waiting.add_done_callback(lambda w: lock.release() if not w.cancelled() and w.exception() is None else None)
            raise
        try:
            yield
        finally:
            lock.release()

    def _existing(self, entries: list[Entry]) -> dict[int, Stored]:
        """The conditional entries that find what they ask for, by entry index; PreconditionFailed when one fails."""
        found: dict[int, Stored] = {}
        for e in entries:
            rtype = e.resource["resourceType"]
            at = f"Bundle.entry[{e.index}].request"
            if e.if_none_exist:
                system, value = identifier_condition(e.if_none_exist)
                matches = self.store.with_identifier(rtype, system, value)
                if len(matches) > 1:
                    raise PreconditionFailed(f"{at}.ifNoneExist matches {len(matches)} {rtype} resources")
                if matches:
                    found[e.index] = self.read(rtype, matches[0][0])
            head = self.store.head(rtype, str(e.resource_id)) if e.resource_id else None
            current = etag(head[0]) if head else None
            if e.if_match and e.if_match.strip() != current:
                raise PreconditionFailed(f"{at}.ifMatch {e.if_match} is not the current version {current or '(none)'}")
            if e.if_none_match and e.if_none_match.strip() == "*" and head is not None:
                raise PreconditionFailed(f"{at}.ifNoneMatch *: {rtype}/{e.resource_id} exists")
        return found

    async def _transaction(
        self, entries: list[Entry], existing: dict[int, Stored], compartment: str | None, request: str | None = None
    ) -> list[Written]:
        to_write = [e for e in entries if e.index not in existing]
        by_index = {e.index: e for e in entries}
        known = {by_index[i].full_url: s for i, s in existing.items() if by_index[i].full_url}
        written: dict[int, Written] = {i: Written.of(s) for i, s in existing.items()}
        if to_write:
            route, outboxed = self._route(to_write)
            ids = self._assign_ids(to_write)
            patients = self._patients(to_write, ids, {url: s.patient for url, s in known.items()})
            if compartment is not None and any(p != compartment for p in patients.values()):
                raise OutsideCompartment("the request may write only the launch patient's record")
            targets = {e.full_url: f"{ids[e.index][0]}/{ids[e.index][1]}" for e in to_write if e.full_url}
            targets |= {url: f"{s.type}/{s.id}" for url, s in known.items()}
            resources = [_rewrite_references(e.resource, targets) for e in to_write]
            versions = [(*ids[e.index], patients[e.index]) for e in to_write]
            found = {i: (s.type, s.id, s.version) for i, s in existing.items()}
            answer = tuple(found.get(e.index) or ids[e.index] for e in entries)
            places = {at: f"Bundle.entry[{to_write[at].index}].resource" for at in outboxed}
            done = await self._write(route, resources, versions, places, request, answer)
            written |= {e.index: w for e, w in zip(to_write, done, strict=True)}
            for w, (_, _, _, filed) in zip(done, versions, strict=True):
                if w.type == "Patient":
                    await self._link(filed, w.resource)
        return [written[e.index] for e in entries]

    async def _link(self, filed: str, patient: dict[str, Any]) -> None:
        """A Patient filed under this org's local pseudonym that now carries a consortium identifier: record on chain
        that its records are the consortium patient's (Records:LinkPatient; linking again changes nothing). The
        records stay filed where they are; members fetch them by the local pseudonym the link names."""
        consortium = self.identity.of(patient)
        if consortium is not None and consortium != filed:
            await self.ledger.link_patient(filed, consortium)

    async def keep(self, resource: dict[str, Any], patient: str) -> bool:
        """Keep a resource this org's own workers made (a ClaimResponse, a PaymentReconciliation) as its next version,
        unless the newest version says the same. True when something was stored."""
        version = self._next_version(resource)
        if version is None:
            return False
        try:
            await self._write(route_of(resource["resourceType"]), [resource], [(*version, patient)])
        except VersionTaken:
            return False  # a concurrent run kept it first
        return True

    async def keep_many(self, kept: list[tuple[dict[str, Any], str]]) -> list[bool]:
        """`keep` for many resources kept here only (the answers to the claims of one batch): one write to the store
        for all of them. Should a concurrent run keep one of them first, each is kept on its own instead."""
        changed = [(r, p, v) for r, p in kept if (v := self._next_version(r)) is not None]
        if any(route_of(r["resourceType"]) is not HELD for r, _, _ in changed):
            return [await self.keep(r, p) for r, p in kept]
        if changed:
            try:
                await self._write(HELD, [r for r, _, _ in changed], [(*v, p) for _, p, v in changed])
            except VersionTaken:
                return [await self.keep(r, p) for r, p in kept]
        stored = {id(r) for r, _, _ in changed}
        return [id(r) in stored for r, _ in kept]

    def _next_version(self, resource: dict[str, Any]) -> tuple[str, str, int] | None:
        """(type, id, the version to write) of a resource to keep; None when its newest version says the same."""
        rtype, rid = resource["resourceType"], resource["id"]
        newest = self.store.read(rtype, rid)
        if newest is not None:
            previous = json.loads(newest.content)
            previous.pop("meta", None)
            if previous == resource:
                return None
        return rtype, rid, newest.version + 1 if newest else 1

    async def _write(
        self,
        route: Route,
        resources: list[dict[str, Any]],
        versions: list[tuple[str, str, int, str]],
        outboxed: Mapping[int, str] = MappingProxyType({}),
        request: str | None = None,
        answer: tuple[Version, ...] | None = None,
    ) -> list[Written]:
        """The one write path: version and stamp each resource, stage its encrypted row, register the write on
        chain (unless the route keeps it here only), then commit the rows, or discard them when the ledger refuses.
        `outboxed`: positions of new Claims that go through the claim outbox, each submitted after the commit, with
        where each is in the request (the FHIRPath its problems are named under).
        `request`: the key of the request it answers, remembered with the signed transaction (see `transaction`)
        together with `answer`, the versions the request is answered with, in its entry order."""
        stamp = now_instant()
        asked = len(resources)
        if route is RECORDS:
            resources, versions = await self._attachments_to_blobs(resources, versions)
        rows: list[Row] = []
        entries: list[dict[str, Any]] = []
        claims: list[OutboxClaim] = []
        places: list[str] = []  # of each claim
        written: list[Written] = []
        digest_keys: dict[str, bytes] = {}  # one look-up per patient of the write, not one per resource
        for at, (resource, (rtype, rid, version, patient)) in enumerate(zip(resources, versions, strict=True)):
            key = self.store.ledger_key(rtype, rid)
            meta = {**(resource.get("meta") or {}), "versionId": str(version), "lastUpdated": stamp}
            resource = (CLAIM if at in outboxed else route).stamp({**resource, "id": rid, "meta": meta}, key)
            content = json_form.stored(resource)
            # Records get element digests (v2); claims and consents keep their v1 digests.
            scheme = digests.V2 if route is RECORDS and at not in outboxed else digests.V1
            if patient not in digest_keys:
                digest_keys[patient] = self.store.digest_key(patient)
            digest = _digest(scheme, digest_keys[patient], resource, key, version)
            identifiers = (*_identifiers(resource), (LEDGER_KEY_SYSTEM, key))
            if rtype == "Patient":
                identifiers += self._patient_index(resource)
            rows.append(Row(rtype, rid, version, patient, stamp, content, identifiers))
            written.append(Written(rtype, rid, version, stamp, version == 1, resource))
            if at in outboxed:
                claims.append(OutboxClaim(key, rid, patient, digest))
                places.append(outboxed[at])
                continue
            entries.append(
                {
                    "patient": "" if patient == DIRECTORY else patient,
                    "directory": patient == DIRECTORY,
                    "resourceType": rtype,
                    "resourceKey": key,
                    "version": version,
                    "digest": digest,
                    "digestScheme": scheme,
                    "lastUpdated": stamp,
                    "size": len(content),
                }
            )
        together = [(w.resource, v[3]) for w, v in zip(written, versions, strict=True)]
        claims = self._outbox_claims(claims, places, together)
        first = next((at for at in range(len(written)) if at not in outboxed), None)
        submit = None
        if first is not None:
            to = Ledgers(self.ledger, self.payers, held_here(self.store, versions[first][3], together))
            submit = route.call(to, written[first].resource, entries)
        batch = uuid.uuid4().hex
        # Kept here only (nothing to register): staged and committed at once, so a crash cannot leave a pending row
        # that holds the version while nothing will ever settle it (a worker killed between the two left a
        # ClaimResponse that every rerun took as "kept by a concurrent run", and nobody ever committed).
        # The store's writes and the pending files' syncs wait on the disk: in a thread, so that other requests go
        # on meanwhile (on the event loop they held up every request of the process under load).
        issued = self.store.issued(digest_keys)  # taken now: the keys these digests were made with
        await in_thread(self.store.stage, batch, rows, claims, committed=submit is None, issued=issued)
        if submit is not None:
            await self._settle(batch, submit, request, answer)
        if claims:
            self.claims_outbox.kick()
        return written[:asked]

    async def _attachments_to_blobs(
        self, resources: list[dict[str, Any]], versions: list[tuple[str, str, int, str]]
    ) -> tuple[list[dict[str, Any]], list[tuple[str, str, int, str]]]:
        """Attachments live in blobs: inline `data` becomes a blob and a Binary resource written in the same batch
        (the attachment then points at `Binary/<id>`); an attachment that points at a Binary held here gets that
        blob's size and hash, so the digest on chain commits to the content. A Binary of another patient, or a
        size or hash that contradicts the blob, is refused. A blob stored for a write the ledger then refuses stays
        unreferenced (content addressed: the same content stored again reuses it)."""
        out, out_versions, extra = [], [], []
        inline: list[tuple[dict[str, Any], bytes, str, str]] = []
        for resource, (rtype, rid, version, patient) in zip(resources, versions, strict=True):
            found = attachments(resource)
            if found:
                resource = with_own_attachments(resource)
                found = attachments(resource)
            for i, att in enumerate(found):
                where = f"{rtype}.attachment[{i}]"
                if att.get("data") is not None:
                    inline.append((att, _decoded(att, where), patient, f"{rtype}/{rid}"))
                elif str(att.get("url") or "").startswith("Binary/"):
                    held = self.store.read("Binary", str(att["url"]).split("/", 1)[1])
                    blob = blob_of(json.loads(held.content)) if held else None
                    if held is None or blob is None or held.patient != patient:
                        raise FhirInvalid(
                            [Issue("value", where + ".url", f"{att['url']} is no Binary of this patient")]
                        )
                    for k in ("size", "hash"):
                        if att.get(k) is not None and att[k] != blob[k]:
                            raise FhirInvalid([Issue("value", f"{where}.{k}", f"{k} is not the blob's {blob[k]}")])
                        att[k] = blob[k]
            out.append(resource)
            out_versions.append((rtype, rid, version, patient))
        extra += await self._inline_to_blobs(inline)
        for binary, patient in extra:
            out.append(binary)
            out_versions.append(("Binary", binary["id"], 1, patient))
        return out, out_versions

    async def _inline_to_blobs(
        self, inline: list[tuple[dict[str, Any], bytes, str, str]]
    ) -> list[tuple[dict[str, Any], str]]:
        """Store each inline content, (attachment, content, patient, "Type/id" of its resource), as a blob and point
        its attachment at a new Binary; the Binary resources to write, with their patients. The blobs are stored
        together, so their writes to disk overlap."""
        infos = await self.blobs.put_all([(patient, raw) for _, raw, patient, _ in inline])
        binaries = []
        for (att, _, patient, context), info in zip(inline, infos, strict=True):
            binary_id = str(uuid.uuid4())
            content_type = str(att.get("contentType") or "application/octet-stream")
            binaries.append((binary_resource(binary_id, content_type, info, context), patient))
            att |= {"url": f"Binary/{binary_id}", "size": info.size, "hash": info.sha1}
        return binaries

    async def keep_binary(self, patient: str, content_type: str, stream: AsyncIterator[bytes], context: str) -> Written:
        """Store streamed content as a blob and register its Binary resource (version 1) on chain."""
        info = await self.blobs.put(patient, stream)
        binary = binary_resource(str(uuid.uuid4()), content_type, info, context)
        (written,) = await self._write(RECORDS, [binary], [("Binary", binary["id"], 1, patient)])
        return written

    def _outbox_claims(
        self, claims: list[OutboxClaim], places: list[str], together: list[tuple[dict[str, Any], str]]
    ) -> list[OutboxClaim]:
        """The new Claims of a bundle, each checked now as the Claims contract will take it (what R4 forbids is
        refused with the bundle: the problems of every claim, each named at its entry, `places`), queued for its own
        transaction after the bundle's (`together`: the bundle's resources, which may name a claim's payer, with the
        patients they are filed under)."""
        resources = {r["id"]: r for r, _ in together if r["resourceType"] == "Claim"}
        held: dict[str, fhir_claim.HeldHere] = {}  # built once per patient (it indexes the whole bundle)
        out, issues = [], []
        for claim, place in zip(claims, places, strict=True):
            if claim.patient not in held:
                held[claim.patient] = held_here(self.store, claim.patient, together)
            try:
                found = fhir_claim.for_ledger(
                    resources[claim.id], claim.key, claim.patient, claim.digest, self.payers, held[claim.patient]
                )
            except FhirInvalid as e:
                issues += [_placed(issue, "Claim", place) for issue in e.issues]
                continue
            out.append(replace(claim, state="held" if found is None else "queued"))
        if issues:
            raise FhirInvalid(issues)
        return out

    def _route(self, entries: list[Entry]) -> tuple[Route, frozenset[int]]:
        """The route of the entries' ledger transaction, and which of them are Claims filed through the claim
        outbox after it: a bundle may mix new Claims with records; a Consent, or a Claim's update, goes alone."""
        types = [e.resource["resourceType"] for e in entries]
        outboxed: frozenset[int] = frozenset()
        if len(entries) > 1:
            outboxed = frozenset(
                i
                for i, (t, e) in enumerate(zip(types, entries, strict=True))
                if t == "Claim" and (e.resource_id is None or self.store.head("Claim", e.resource_id) is None)
            )
        routes = {self._posted_route(t) for i, t in enumerate(types) if i not in outboxed} or {RECORDS}
        if len(routes) > 1 or (len(entries) > 1 and any(r.alone for r in routes)):
            raise FhirInvalid(
                [
                    Issue(
                        "not-supported",
                        "Bundle.entry",
                        "a Consent, and a change to a submitted Claim, each become a ledger transaction of their own:"
                        " post them on their own",
                    )
                ]
            )
        route = routes.pop()
        kind = self.custodian.kind
        allowed = POSTABLE.get(kind, frozenset())
        for t in {*types}:
            if self._posted_route(t).name not in allowed:
                raise NotKeptHere([Issue("forbidden", "Bundle.entry", f"a {kind} org does not keep {t} here")])
        return route, outboxed

    def _posted_route(self, rtype: str) -> Route:
        """The route of a resource an EHR posts here: what an insurer's workers keep unregistered (Coverage,
        ClaimResponse, PaymentReconciliation) is, at a provider, a record like any other."""
        route = route_of(rtype)
        if route is HELD and HELD.name not in POSTABLE.get(self.custodian.kind, frozenset()):
            return RECORDS
        return route

    def _assign_ids(self, entries: list[Entry]) -> dict[int, tuple[str, str, int]]:
        out: dict[int, tuple[str, str, int]] = {}
        for e in entries:
            rtype = e.resource["resourceType"]
            if e.resource_id is None:
                out[e.index] = (rtype, str(uuid.uuid4()), 1)
            else:
                head = self.store.head(rtype, e.resource_id)
                out[e.index] = (rtype, e.resource_id, head[0] + 1 if head else 1)
        return out

    def _patients(
        self, entries: list[Entry], ids: dict[int, tuple[str, str, int]], known: dict[str, str]
    ) -> dict[int, str]:
        """Whom each entry is filed under: a Patient under its pseudonym; a resource of the patient compartment under
        the pseudonym of the patient its element names (a Patient of this bundle — `known`: those a conditional entry
        found —, a Patient held here, or the patient's consortium identifier, as a logical or conditional reference);
        any other resource under this org's directory."""
        by_url = {e.full_url: e for e in entries if e.full_url}
        out: dict[int, str] = {}
        for e in entries:
            if e.resource["resourceType"] == "Patient":
                out[e.index] = self.pseudonym_of_patient(e.resource, ids[e.index][1])
        issues: list[Issue] = []
        for e in entries:
            rtype = e.resource["resourceType"]
            if rtype == "Patient":
                continue
            if not in_compartment(rtype):
                out[e.index] = DIRECTORY
                continue
            refs = patient_references(e.resource)
            found = next((p for r in refs if (p := self._patient_named(r, by_url, out, known)) is not None), None)
            if found is not None:
                out[e.index] = found
            elif rtype in EITHER:
                out[e.index] = DIRECTORY
            else:
                where = f"Bundle.entry[{e.index}].resource.{PATIENT_ELEMENTS[rtype][0]}"
                names = ", ".join(self.identity.systems)
                issues.append(
                    Issue(
                        "invariant",
                        where,
                        "must name a Patient of this bundle or held here, or the patient by an identifier of a"
                        f" consortium system ({names})",
                    )
                )
        if issues:
            raise FhirInvalid(issues)
        return out

    def _patient_named(
        self, ref: dict[str, Any], by_url: dict[str, Entry], filed: dict[int, str], known: dict[str, str]
    ) -> str | None:
        """The pseudonym of the patient a Reference names, or None when it names none this org can file under."""
        target = str(ref.get("reference") or "")
        in_bundle = by_url.get(target)
        if in_bundle is not None:
            return filed.get(in_bundle.index)
        if target in known:
            return known[target]
        if target.startswith("Patient/") and (held := self.pseudonym_of_local_patient(target.split("/", 1)[1])):
            return held
        ident = ref.get("identifier") or {}
        if target.startswith("Patient?identifier="):
            system, _, value = target.split("=", 1)[1].partition("|")
            ident = {"system": system, "value": value}
        if not (ident.get("system") and ident.get("value")):
            return None
        system, value = str(ident["system"]), str(ident["value"])
        held_ids = self.store.with_identifier("Patient", system, value)
        if len(held_ids) == 1 and (head := self.store.head("Patient", held_ids[0][0])) is not None:
            return head[1]  # the Patient held here with that identifier, wherever it is filed
        if system in self.identity.systems:
            return self.pseudonym_of_identifier(system, value)
        return None

    async def _settle(
        self, batch: str, submit: LedgerCall, request: str | None = None, answer: tuple[Version, ...] | None = None
    ) -> None:
        """Send the write's ledger transaction, keeping it signed first (and which request it answers); commit the
        rows when it is valid, discard them when it is not; keep them pending when the outcome is still unknown (the
        reconciler settles it, and the request sent again finds it)."""
        self._in_flight[batch] = asyncio.Event()

        def keep(prepared: Prepared) -> Callable[[], None]:
            self.pending.save(batch, prepared, durable=False)  # made durable by the sender, once for all it keeps
            if request is not None:  # before it is sent: whatever happens next, a retry finds this write
                self.pending.remember(request, batch, answer)
            return self.pending.make_durable

        try:
            committed = await submit(keep)
        except OutcomeUnknown:
            self._unknown.add(batch)
            self._in_flight.pop(batch).set()
            raise StillPending(batch) from None
        except asyncio.CancelledError:  # the transaction may be on its way or committed: the reconciler finds out
            self._unknown.add(batch)
            self._in_flight.pop(batch).set()
            raise
        except BaseException:
            try:
                await in_thread(self._discarded, batch, request)
            finally:
                self._in_flight.pop(batch).set()
            raise
        try:
            await self._commit_rows((batch, committed.tx_id, request))
        finally:
            self._in_flight.pop(batch).set()

    def _committed(self, writes: list[tuple[str, str, str | None]]) -> None:
        """Commit the rows of writes whose transactions committed (batch, tx id, request), in one store
        transaction."""
        self.store.commit_many([(batch, tx_id) for batch, tx_id, _ in writes])
        for batch, _, request in writes:
            self.pending.remove(batch)
            if request is not None and not kept_once_answered(request):
                self.pending.forget(request)  # answered: the same content sent again is a new write, as in FHIR

    def _discarded(self, batch: str, request: str | None) -> None:
        self.store.discard(batch)
        self.pending.remove(batch)
        if request is not None:
            self.pending.forget(request)

    async def reconcile_pending(
        self,
        grace_s: float = 120.0,
        sending_s: float = UNKNOWN_OUTCOME_DEADLINE_S,
        writers_since: float | None = None,
    ) -> dict[str, int]:
        """Settle every pending batch this process is not writing now. Those this process gave up waiting for, at
        once; another process's (or a dead one's) with a kept transaction once they are `sending_s` old (until
        then the process that sent it is still waiting for its outcome); those without one once they are
        `grace_s` old (another process may still be about to send it). `writers_since`: when the processes now
        sharing the store started (a Unix time); a batch staged before then was left by a process that is gone,
        and is settled at once. Returns how many were committed, discarded and are still unknown."""
        unsent_old = set(self.store.pending_batches(older_than_s=grace_s))
        sent_old = set(self.store.pending_batches(older_than_s=sending_s))
        orphaned: set[str] = set()
        if writers_since is not None:
            orphaned = set(self.store.pending_batches(older_than_s=max(0.0, time.time() - writers_since)))
        counts = {"committed": 0, "discarded": 0, "unknown": 0}
        if time.monotonic() - self._pruned_at > PRUNE_EVERY_S:  # answers of client-keyed requests, a day old
            self.pending.prune(CLIENT_KEYS_KEPT_S)
            self._pruned_at = time.monotonic()
        for batch in self.store.pending_batches():
            if batch in self._in_flight:
                continue
            if batch in orphaned:
                pass
            elif self.pending.load(batch) is None:
                if batch not in unsent_old:
                    continue
            elif batch not in self._unknown and batch not in sent_old:
                continue
            settled = await self.reconcile(batch)
            counts["unknown" if settled is None else "committed" if settled else "discarded"] += 1
        return counts

    async def reconcile(self, batch: str) -> bool | None:
        """Settle a staged batch from its kept transaction: True committed, False discarded, None still unknown.
        A batch with no kept transaction never sent one: nothing of it can be on chain."""
        if batch in self._in_flight:
            return None
        prepared = self.pending.load(batch)
        if prepared is None:
            self.store.discard(batch)
            self._unknown.discard(batch)
            return False
        try:
            committed = await self.ledger.settle(prepared)
        except OutcomeUnknown:
            return None
        except NotCommitted:
            self.store.discard(batch)
            self.pending.remove(batch)
            self._unknown.discard(batch)
            return False
        self.store.commit(batch, committed.tx_id)
        self.pending.remove(batch)
        self._unknown.discard(batch)
        return True

    # ----- reads, verification, erasure -------------------------------------------------------------------------

    def read(self, rtype: str, rid: str, version: int | None = None) -> Stored:
        stored = self.store.read(rtype, rid, version)
        if stored is None:
            raise NotHeld(f"{rtype}/{rid}" + (f"/_history/{version}" if version else "") + " is not held here")
        return stored

    def history(self, rtype: str, rid: str) -> list[Stored]:
        versions = self.store.history(rtype, rid)
        if not versions:
            raise NotHeld(f"{rtype}/{rid} is not held here")
        return versions

    def match(self, patient: dict[str, Any]) -> list[tuple[Stored, float]]:
        """Patients held here that are the person described (`Patient/$match`), best first, with a score: 1.0 for
        one that shares an identifier, 0.9 for the same family and given name, birth date and gender."""
        found: dict[str, float] = {}
        for system, value in _identifiers(patient):
            for rid, _ in self.store.with_identifier("Patient", system, value):
                found[rid] = 1.0
        token = demographic_token(patient)
        if token is not None:
            for rid, _ in self.store.with_identifier("Patient", DEMOGRAPHICS_SYSTEM, token):
                found.setdefault(rid, 0.9)
        ranked = sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(stored, score) for rid, score in ranked if (stored := self.store.read("Patient", rid)) is not None]

    def submission(self, claim_id: str) -> OutboxClaim:
        """Where a Claim held here stands with the ledger: queued (in the claim outbox), submitted (its
        transaction), refused (why) or held (it names no payer of the consortium, so it is kept here only)."""
        queued = self.store.outbox_claim(claim_id)
        if queued is not None:
            return queued
        first = self.read("Claim", claim_id, 1)
        key = self.store.ledger_key("Claim", claim_id)
        if first.tx_id:
            return OutboxClaim(key, claim_id, first.patient, "", "submitted", tx_id=first.tx_id)
        return OutboxClaim(
            key, claim_id, first.patient, "", "held", reason="the claim names no payer of the consortium"
        )

    async def verify(self, stored: Stored) -> Verification:
        """Recompute the stored content's digest, by the scheme the chain recorded, and compare. A Claim of a
        bundle is on chain only once the claim outbox filed it: until then (or if it never will be) NotOnChain."""
        if stored.type == "Claim" and (filed := self.store.outbox_claim(stored.id)) and filed.state != "submitted":
            raise NotOnChain(f"Claim/{stored.id} is {filed.state} (Claim/$submission): not on chain to compare with")
        route = route_of(stored.type)
        if route is HELD and stored.tx_id:  # posted by an EHR and registered, not kept by a worker
            route = RECORDS
        key = self.store.ledger_key(stored.type, stored.id)
        on_chain = await route.on_chain(self.ledger, key, stored.version)
        scheme = digests.V1
        if route is RECORDS:
            scheme = str((await self.ledger.record(key, stored.version)).get("digestScheme") or digests.V1)
        if on_chain.first_version_only and stored.version > 1:
            stored = self.read(stored.type, stored.id, 1)
        resource = json.loads(stored.content)
        mine = _digest(scheme, self.store.digest_key(stored.patient), resource, key, stored.version)
        ok = mine == on_chain.digest
        reason = (
            f"the stored content matches the ledger (digest scheme {scheme})"
            if ok
            else "the stored content differs from what was registered"
        )
        return Verification(ok, reason, on_chain.digest, mine, on_chain.tx_id)

    def _blob_names(self, patient: str) -> list[str]:
        """The blobs the patient's Binary resources point at. Erasure must not depend on anything being readable:
        from a Binary row that fails authentication on, the listing stops (those blobs stay, unreadable once the key
        is gone)."""
        names: list[str] = []
        after = None
        while True:
            try:
                page = self.store.search_page(Query("Binary", patient=patient, count=500, after=after))
            except Tampered:
                return names
            for s in page.items:
                blob = blob_of(json.loads(s.content))
                if blob and (name := name_of(str(blob.get("url") or ""))):
                    names.append(name)
            if page.next is None or not page.items:
                return names
            after = page.next

    # ----- selective disclosure (digest scheme v2) --------------------------------------------------------------

    async def disclose(self, stored: Stored, paths: list[str]) -> dict[str, Any]:
        """A disclosure document of the chosen elements of a stored version registered with a v2 digest: values,
        salts and inclusion proofs against the root on chain. NotKeptHere when the version has a v1 digest (it
        was written before v2) or is not registered on chain; ValueError for a malformed element path."""
        route = route_of(stored.type)
        if route is HELD and stored.tx_id:  # posted by an EHR and registered, not kept by a worker
            route = RECORDS
        if route is not RECORDS:
            raise NotKeptHere([Issue("not-supported", "", f"{stored.type} is not registered with element digests")])
        key = self.store.ledger_key(stored.type, stored.id)
        record = await self.ledger.record(key, stored.version)
        if (record.get("digestScheme") or digests.V1) != digests.V2:
            raise NotKeptHere(
                [Issue("not-supported", "", "this version was registered with a v1 digest: nothing to disclose from")]
            )
        salt_key = digests.salt_key(self.store.digest_key(stored.patient))
        tree = disclosure.commit(json.loads(stored.content), salt_key, key, stored.version)
        return disclosure.disclosure(tree, disclosure.chosen(tree, paths), record, salt_key)

    async def verify_disclosure(self, document: dict[str, Any]) -> disclosure.Verified:
        """Check a disclosure document against the record on chain it names (any custodian's)."""
        key, version = str(document.get("resourceKey") or ""), document.get("version")
        if not disclosure.HEX64.match(key) or type(version) is not int or version < 1:
            return disclosure.Verified(False, "the document names no resource version (resourceKey, version)")
        try:
            record = await self.ledger.record(key, version)
        except LedgerNotFound:
            return disclosure.Verified(False, "the ledger has no record of this resource version")
        return disclosure.verify(document, record)

    async def appeal_preauth(self, claim_id: str, documentation: dict[str, Any]) -> Committed:
        """Appeal the denial of a prior-authorisation request this org made: the chain gets the keyed digest of the
        documentation the appeal adds (which stays with the caller), so the appeal is on record without PHI."""
        stored = self.read("Claim", claim_id)
        if json.loads(stored.content).get("use") != "preauthorization":
            raise FhirInvalid([Issue("value", "Claim.use", f"Claim/{claim_id} is not a prior-authorisation request")])
        digest = digests.resource_digest(self.store.digest_key(stored.patient), documentation)
        return await self.ledger.appeal_preauth(self.store.ledger_key("Claim", claim_id), digest)

    async def erase(self, patient: str) -> str:
        """Crypto-shred the patient's data here (their blob key derives from the data key too), delete their blobs,
        and record the erasure on chain; returns the transaction id."""
        names = self._blob_names(patient)
        self.store.erase(patient, now_instant())
        for name in names:
            if name:
                await self.blobs.delete(name)
        return (await self.ledger.record_erasure(patient)).tx_id


def binary_resource(binary_id: str, content_type: str, info: BlobInfo, context: str) -> dict[str, Any]:
    """A Binary that points at a blob (its content is never inline: `meta.extension` names the blob)."""
    return {
        "resourceType": "Binary",
        "id": binary_id,
        "meta": {"extension": [{"url": BLOB_EXTENSION, "valueAttachment": info.attachment(content_type)}]},
        "contentType": content_type,
        "securityContext": {"reference": context},
    }


def store_blobs_default(store: Store) -> Path:
    """Beside the store, when no backend is given (unit tests, tools)."""
    return Path(tempfile.gettempdir()) / "careledger-blobs" / store.ledger_key("Store", "blobs")[:16]


def _decoded(attachment: dict[str, Any], where: str) -> bytes:
    """An attachment's inline content, taken out of it."""
    try:
        return base64.b64decode(str(attachment.pop("data")), validate=True)
    except ValueError:
        raise FhirInvalid([Issue("value", where + ".data", "not base64")]) from None


def _digest(scheme: str, digest_key: bytes, resource: dict[str, Any], key: str, version: int) -> str:
    try:
        return digests.digest(scheme, digest_key, resource, key, version)
    except ValueError as e:  # a key that is no FHIR element name cannot be committed to element by element
        raise FhirInvalid([Issue("structure", resource.get("resourceType", ""), str(e))]) from None


def _rewrite_references(resource: dict[str, Any], targets: dict[str, str]) -> dict[str, Any]:
    """The resource with in-bundle (urn:uuid:) references pointing at the stored Type/id: a new dict, sharing the
    parts that hold no such reference with the resource given (nothing changes either afterwards)."""
    return dict(_rewritten(resource, targets))


def _rewritten(node: Any, targets: dict[str, str]) -> Any:
    """`node` itself when no reference in it changes, else a copy of the objects and arrays on the way to those
    that do (copy on write)."""
    if isinstance(node, dict):
        out: dict[str, Any] | None = None
        for k, v in node.items():
            if isinstance(v, (dict, list)) and (w := _rewritten(v, targets)) is not v:
                out = out if out is not None else dict(node)
                out[k] = w
        ref = node.get("reference")
        if isinstance(ref, str) and ref in targets:
            out = out if out is not None else dict(node)
            out["reference"] = targets[ref]
        return out if out is not None else node
    if isinstance(node, list):
        items: list[Any] | None = None
        for i, v in enumerate(node):
            if isinstance(v, (dict, list)) and (w := _rewritten(v, targets)) is not v:
                items = items if items is not None else list(node)
                items[i] = w
        return items if items is not None else node
    return node


def _identifiers(resource: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (str(i["system"]), str(i["value"]))
        for i in resource.get("identifier") or []
        if isinstance(i, dict) and i.get("system") and i.get("value")
    )
