"""This org's FHIR records: the write path (validated entries → encrypted store → one ledger transaction) and the
reads, verification and erasure that follow from it.

A transaction bundle is all-or-nothing across both stores: its rows are staged pending, every entry is registered
in ONE Records:Register transaction, and the rows are committed only when that transaction is valid. When the ledger
refuses, the staged rows are discarded; when the outcome is unknown (timeout), the ledger is asked what happened.
"""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fabric_gateway import CommitUnknown
from ledger.contracts import Committed, Ledger
from ledger.errors import LedgerNotFound
from records import digests, disclosure
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
    one_shot,
)
from records.errors import (
    FhirInvalid,
    Issue,
    NotHeld,
    NotKeptHere,
    OutcomeUnknown,
    OutsideCompartment,
    PreconditionFailed,
    Tampered,
    VersionTaken,
)
from records.routes import POSTABLE, RECORDS, Route, route_of
from records.search import identifier_condition
from records.settings import CustodianSettings
from records.store import Query, Row, Store, Stored
from records.validation import PATIENT_ELEMENT, Entry


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
    def of(cls, stored: Stored) -> Written:
        """A version stored earlier, reported as found rather than created."""
        return cls(stored.type, stored.id, stored.version, stored.last_updated, False, json.loads(stored.content))


@dataclass(frozen=True)
class Verification:
    ok: bool
    reason: str
    ledger_digest: str
    store_digest: str
    tx_id: str


LEDGER_KEY_SYSTEM = "urn:careledger:ledger-key"  # indexes each resource by its key on chain, to find it from an event


def etag(version: int) -> str:
    return f'W/"{version}"'


def now_instant() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Custodian:
    """The org this gateway keeps records for, and its kind in the consortium."""

    msp: str
    kind: str  # provider | insurer | manufacturer


class Records:
    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        consortium_key: bytes,
        mpi_system: str,
        custodian: Custodian,
        blob_backend: BlobBackend | None = None,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.consortium_key = consortium_key
        self.mpi_system = mpi_system
        self.custodian = custodian
        self._conditional_writes = asyncio.Lock()
        # Binary content and attachments, encrypted under the patient's key, off the chain (`records.blobs`).
        backend = blob_backend or FileBackend(store_blobs_default(store))
        self.blobs = Blobs(backend, store.digest_key)

    @classmethod
    def open(cls, settings: CustodianSettings, ledger: Ledger) -> Records:
        """The org's records as its settings place them: its store, its keys, its kind in the consortium."""
        custodian = Custodian(settings.org.msp_id, settings.org.kind)
        blobs = backend_from_env(settings.topology.gateway_home(settings.org) / "blobs")
        return cls(settings.open_store(), ledger, settings.consortium_key(), settings.mpi_system, custodian, blobs)

    # ----- patients --------------------------------------------------------------------------------------------

    def pseudonym_of_identifier(self, system: str, value: str) -> str:
        return digests.pseudonym(self.consortium_key, system, value)

    def pseudonym_of_patient(self, patient: dict[str, Any], where: str) -> str:
        for ident in patient.get("identifier") or []:
            if ident.get("system") == self.mpi_system and ident.get("value"):
                return self.pseudonym_of_identifier(self.mpi_system, ident["value"])
        raise FhirInvalid(
            [
                Issue(
                    "required",
                    f"{where}.identifier",
                    f"a Patient needs its consortium identifier (system {self.mpi_system})",
                )
            ]
        )

    def by_ledger_key(self, rtype: str, key: str) -> Stored | None:
        """The newest version of the resource this org registered under a key seen on chain (in an event)."""
        found = self.store.with_identifier(rtype, LEDGER_KEY_SYSTEM, key)
        return self.store.read(rtype, found[0][0]) if found else None

    def pseudonym_of_local_patient(self, patient_id: str) -> str | None:
        head = self.store.head("Patient", patient_id)
        return head[1] if head else None

    # ----- writes ----------------------------------------------------------------------------------------------

    async def transaction(self, entries: list[Entry], compartment: str | None = None) -> list[Written]:
        """Store and register the entries as one unit, in entry order; raises FhirInvalid, PreconditionFailed,
        LedgerRefused or a Fabric error. Conditional entries (ifNoneExist, ifMatch, ifNoneMatch) are decided and
        written under one lock, so concurrent requests cannot both create what only one may.
        `compartment`: the one patient (pseudonym) the request may write for, when it is limited to one."""
        if not entries:
            return []
        conditional = any(e.if_none_exist or e.if_match or e.if_none_match for e in entries)
        if not conditional:
            return await self._transaction(entries, {}, compartment)
        async with self._conditional_writes:
            return await self._transaction(entries, self._existing(entries), compartment)

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
        self, entries: list[Entry], existing: dict[int, Stored], compartment: str | None
    ) -> list[Written]:
        to_write = [e for e in entries if e.index not in existing]
        by_index = {e.index: e for e in entries}
        known = {by_index[i].full_url: s for i, s in existing.items() if by_index[i].full_url}
        written: dict[int, Written] = {i: Written.of(s) for i, s in existing.items()}
        if to_write:
            route = self._route(to_write)
            ids = self._assign_ids(to_write)
            patients = self._patients(to_write, ids, {url: s.patient for url, s in known.items()})
            if compartment is not None and any(p != compartment for p in patients.values()):
                raise OutsideCompartment("the request may write only the launch patient's record")
            targets = {e.full_url: f"{ids[e.index][0]}/{ids[e.index][1]}" for e in to_write if e.full_url}
            targets |= {url: f"{s.type}/{s.id}" for url, s in known.items()}
            resources = [_rewrite_references(e.resource, targets) for e in to_write]
            versions = [(*ids[e.index], patients[e.index]) for e in to_write]
            done = await self._write(route, resources, versions)
            written |= {e.index: w for e, w in zip(to_write, done, strict=True)}
        return [written[e.index] for e in entries]

    async def keep(self, resource: dict[str, Any], patient: str) -> bool:
        """Keep a resource this org's own workers made (a ClaimResponse, a PaymentReconciliation) as its next version,
        unless the newest version says the same. True when something was stored."""
        rtype, rid = resource["resourceType"], resource["id"]
        newest = self.store.read(rtype, rid)
        if newest is not None:
            previous = json.loads(newest.content)
            previous.pop("meta", None)
            if previous == resource:
                return False
        try:
            await self._write(route_of(rtype), [resource], [(rtype, rid, newest.version + 1 if newest else 1, patient)])
        except VersionTaken:
            return False  # a concurrent run kept it first
        return True

    async def _write(
        self, route: Route, resources: list[dict[str, Any]], versions: list[tuple[str, str, int, str]]
    ) -> list[Written]:
        """The one write path: version and stamp each resource, stage its encrypted row, register the write on
        chain (unless the route keeps it here only), then commit the rows, or discard them when the ledger refuses."""
        stamp = now_instant()
        asked = len(resources)
        if route is RECORDS:
            resources, versions = await self._attachments_to_blobs(resources, versions)
        rows: list[Row] = []
        entries: list[dict[str, Any]] = []
        written: list[Written] = []
        for resource, (rtype, rid, version, patient) in zip(resources, versions, strict=True):
            key = self.store.ledger_key(rtype, rid)
            meta = {**(resource.get("meta") or {}), "versionId": str(version), "lastUpdated": stamp}
            resource = route.stamp({**resource, "id": rid, "meta": meta}, key)
            content = digests.canonical_json(resource)
            scheme = digests.V2 if route is RECORDS else digests.V1  # claims and consents keep their v1 digests
            digest = _digest(scheme, self.store.digest_key(patient), resource, key, version)
            identifiers = (*_identifiers(resource), (LEDGER_KEY_SYSTEM, key))
            rows.append(Row(rtype, rid, version, patient, stamp, content, identifiers))
            entries.append(
                {
                    "patient": patient,
                    "resourceType": rtype,
                    "resourceKey": key,
                    "version": version,
                    "digest": digest,
                    "digestScheme": scheme,
                    "lastUpdated": stamp,
                    "size": len(content),
                }
            )
            written.append(Written(rtype, rid, version, stamp, version == 1, resource))
        submit = route.call(self.ledger, written[0].resource, entries)
        batch = uuid.uuid4().hex
        self.store.stage(batch, rows)
        if submit is None:
            self.store.commit(batch, "")
        else:
            await self._settle(batch, submit)
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
        for resource, (rtype, rid, version, patient) in zip(resources, versions, strict=True):
            found = attachments(resource)
            if found:
                resource = json.loads(json.dumps(resource))
                found = attachments(resource)
            for i, att in enumerate(found):
                where = f"{rtype}.attachment[{i}]"
                if att.get("data") is not None:
                    try:
                        raw = base64.b64decode(str(att.pop("data")), validate=True)
                    except ValueError:
                        raise FhirInvalid([Issue("value", where + ".data", "not base64")]) from None
                    info = await self.blobs.put(patient, one_shot(raw))
                    binary_id = str(uuid.uuid4())
                    content_type = str(att.get("contentType") or "application/octet-stream")
                    extra.append((binary_resource(binary_id, content_type, info, f"{rtype}/{rid}"), patient))
                    att |= {"url": f"Binary/{binary_id}", "size": info.size, "hash": info.sha1}
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
        for binary, patient in extra:
            out.append(binary)
            out_versions.append(("Binary", binary["id"], 1, patient))
        return out, out_versions

    async def keep_binary(self, patient: str, content_type: str, stream: AsyncIterator[bytes], context: str) -> Written:
        """Store streamed content as a blob and register its Binary resource (version 1) on chain."""
        info = await self.blobs.put(patient, stream)
        binary = binary_resource(str(uuid.uuid4()), content_type, info, context)
        (written,) = await self._write(RECORDS, [binary], [("Binary", binary["id"], 1, patient)])
        return written

    def _route(self, entries: list[Entry]) -> Route:
        routes = {route_of(e.resource["resourceType"]) for e in entries}
        if len(routes) > 1 or (len(entries) > 1 and any(r.alone for r in routes)):
            raise FhirInvalid(
                [
                    Issue(
                        "not-supported",
                        "Bundle.entry",
                        "Claim and Consent each become their own ledger transaction: post them on their own",
                    )
                ]
            )
        route = routes.pop()
        if route.name not in POSTABLE.get(self.custodian.kind, frozenset()):
            kind = self.custodian.kind
            what = entries[0].resource["resourceType"]
            raise NotKeptHere([Issue("forbidden", "Bundle.entry", f"a {kind} org does not keep {what} here")])
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
        """The pseudonym each entry is filed under: its own (Patient) or its patient element's, which names a
        Patient of this bundle (`known`: those a conditional entry found), a Patient held here, or the patient's
        consortium identifier (logical reference)."""
        by_url = {e.full_url: e for e in entries if e.full_url}
        out: dict[int, str] = {}
        for e in entries:
            where = f"Bundle.entry[{e.index}].resource"
            if e.resource["resourceType"] == "Patient":
                out[e.index] = self.pseudonym_of_patient(e.resource, where)
        for e in entries:
            element = PATIENT_ELEMENT[e.resource["resourceType"]]
            if element is None:
                continue
            where = f"Bundle.entry[{e.index}].resource.{element}"
            value = e.resource.get(element) or {}
            ref = str(value.get("reference") or "")
            ident = value.get("identifier") or {}
            target = by_url.get(ref)
            if target is not None and target.resource["resourceType"] == "Patient":
                out[e.index] = out[target.index]
            elif ref in known:
                out[e.index] = known[ref]
            elif ref.startswith("Patient/") and (p := self.pseudonym_of_local_patient(ref.split("/", 1)[1])):
                out[e.index] = p
            elif not ref and ident.get("system") == self.mpi_system and ident.get("value"):
                out[e.index] = self.pseudonym_of_identifier(self.mpi_system, str(ident["value"]))
            else:
                raise FhirInvalid(
                    [
                        Issue(
                            "invariant",
                            where,
                            f"{ref or 'no reference'}: must name a Patient held here or in this bundle,"
                            f" or the patient's identifier of system {self.mpi_system}",
                        )
                    ]
                )
        return out

    async def _settle(self, batch: str, submit: Callable[[], Awaitable[Committed]]) -> None:
        try:
            committed = await submit()
        except CommitUnknown as e:
            # Ordered or not? Ask the ledger rather than guess.
            if await self.reconcile(batch):
                return
            raise OutcomeUnknown(f"the ledger did not confirm the write, and it is not registered: {e}") from e
        except BaseException:
            self.store.discard(batch)
            raise
        self.store.commit(batch, committed.tx_id)

    async def reconcile(self, batch: str) -> bool:
        """Settle a staged batch by asking the ledger: commit it if its first row is registered, else discard."""
        rows = self.store.batch_rows(batch)
        if not rows:
            return False
        rtype, rid, version = rows[0]
        tx_id = await route_of(rtype).registered(self.ledger, self.store.ledger_key(rtype, rid), version)
        if tx_id is None:
            self.store.discard(batch)
            return False
        self.store.commit(batch, tx_id)
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

    async def verify(self, stored: Stored) -> Verification:
        """Recompute the stored content's digest, by the scheme the chain recorded, and compare."""
        route = route_of(stored.type)
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
        offset = 0
        while True:
            try:
                total, page = self.store.search(Query("Binary", patient=patient, count=500, offset=offset))
            except Tampered:
                return names
            for s in page:
                blob = blob_of(json.loads(s.content))
                if blob and (name := name_of(str(blob.get("url") or ""))):
                    names.append(name)
            offset += len(page)
            if not page or offset >= total:
                return names

    # ----- selective disclosure (digest scheme v2) --------------------------------------------------------------

    async def disclose(self, stored: Stored, paths: list[str]) -> dict[str, Any]:
        """A disclosure document of the chosen elements of a stored version registered with a v2 digest: values,
        salts and inclusion proofs against the root on chain. NotKeptHere when the version has a v1 digest (it
        was written before v2) or is not registered on chain; ValueError for a malformed element path."""
        if route_of(stored.type) is not RECORDS:
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


def _digest(scheme: str, digest_key: bytes, resource: dict[str, Any], key: str, version: int) -> str:
    try:
        return digests.digest(scheme, digest_key, resource, key, version)
    except ValueError as e:  # a key that is no FHIR element name cannot be committed to element by element
        raise FhirInvalid([Issue("structure", resource.get("resourceType", ""), str(e))]) from None


def _rewrite_references(resource: dict[str, Any], targets: dict[str, str]) -> dict[str, Any]:
    """A copy of the resource with in-bundle (urn:uuid:) references pointing at the stored Type/id."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            if isinstance(out.get("reference"), str) and out["reference"] in targets:
                out["reference"] = targets[out["reference"]]
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return dict(walk(resource))


def _identifiers(resource: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (str(i["system"]), str(i["value"]))
        for i in resource.get("identifier") or []
        if isinstance(i, dict) and i.get("system") and i.get("value")
    )
