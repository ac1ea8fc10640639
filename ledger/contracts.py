"""CareLedger's contracts as typed async calls: one method per contract function, JSON in and out.

Refusals are `ledger.errors` exceptions; everything else a `Transport` raises (an unreachable peer, a timeout, a
commit failure) passes through unchanged, so the caller can tell a refusal from an unknown outcome.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger import position
from ledger.claim_batches import ClaimBatches
from ledger.transport import OnPrepared, Prepared, Sent, Transport

PROVIDERS, CLAIMS, PHARMA = "providers", "claims", "pharma"


@dataclass(frozen=True)
class Committed:
    tx_id: str
    result: Any  # the contract's JSON answer, decoded
    block_number: int = 0


def _committed(sent: Sent) -> Committed:
    return Committed(sent.tx_id, json.loads(sent.result) if sent.result else None, sent.block_number)


class Ledger:
    """The contracts, over a transport: Fabric as one org's identity, or the in-memory fake in unit tests."""

    def __init__(self, transport: Transport, claim_window_s: float = 0.0) -> None:
        """`claim_window_s` > 0: claims filed within that window of each other go in one transaction."""
        self.transport = transport
        self.claim_batches = ClaimBatches(self, claim_window_s) if claim_window_s > 0 else None

    async def submit(
        self,
        channel: str,
        function: str,
        *args: str,
        transient: Mapping[str, Any] | None = None,
        on_prepared: OnPrepared | None = None,
    ) -> Committed:
        """Submit and wait for the commit. `on_prepared` receives the signed transaction before it is sent, for a
        caller that keeps it to settle an unknown outcome after a crash (see `settle`)."""
        encoded = {k: json.dumps(v).encode() for k, v in (transient or {}).items()}
        sent = await self.transport.submit(channel, function, list(args), encoded or None, on_prepared)
        position.note(channel, sent.block_number)
        return _committed(sent)

    async def settle(self, prepared: Prepared) -> Committed:
        """Finish a transaction kept from an unknown outcome: committed, or NotCommitted."""
        sent = await self.transport.settle(prepared)
        position.note(prepared.channel, sent.block_number)
        return _committed(sent)

    async def wait_for_block(self, channel: str, block_number: int, orgs: Sequence[str]) -> None:
        """Return once these orgs' peers hold the block, e.g. before acting on another org's fresh write."""
        await self.transport.wait_for_block(channel, block_number, orgs)

    async def evaluate(self, channel: str, function: str, *args: str) -> Any:
        raw = await self.transport.evaluate(channel, function, list(args))
        return json.loads(raw) if raw else None

    # ----- Records ---------------------------------------------------------------------------------------------
    # Resources, claims and consents are named on chain by opaque keys (64-hex, keyed by the custodian), never by
    # the ids clients chose.

    async def register(self, entries: Sequence[Mapping[str, Any]], on_prepared: OnPrepared | None = None) -> Committed:
        return await self.submit(PROVIDERS, "Records:Register", json.dumps(list(entries)), on_prepared=on_prepared)

    async def record(self, resource_key: str, version: int = 0) -> dict[str, Any]:
        """One registered version (0: the newest)."""
        return dict(await self.evaluate(PROVIDERS, "Records:Get", resource_key, str(version)))

    async def custodians(self, patient: str) -> list[dict[str, Any]]:
        """Who holds records of the patient: registered under the pseudonym, or linked to it from a local one."""
        return list(await self.evaluate(PROVIDERS, "Records:Custodians", patient))

    async def record_erasure(self, patient: str) -> Committed:
        return await self.submit(PROVIDERS, "Records:RecordErasure", patient)

    async def link_patient(self, local: str, consortium: str) -> Committed:
        return await self.submit(PROVIDERS, "Records:LinkPatient", local, consortium)

    # ----- Claims ----------------------------------------------------------------------------------------------

    async def submit_claim(
        self, submission: Mapping[str, Any], detail: Mapping[str, Any], on_prepared: OnPrepared | None = None
    ) -> Committed:
        """File a claim: with others filed at about the same time when batching is on, else on its own."""
        if self.claim_batches is not None:  # sent from the batch's own task: note its block for this caller too
            committed = await self.claim_batches.submit(submission, detail, on_prepared)
            position.note(CLAIMS, committed.block_number)
            return committed
        return await self.submit_claim_now(submission, detail, on_prepared)

    async def submit_claim_now(
        self, submission: Mapping[str, Any], detail: Mapping[str, Any], on_prepared: OnPrepared | None = None
    ) -> Committed:
        arg, transient = json.dumps(submission), {"claim": detail}
        return await self.submit(CLAIMS, "Claims:Submit", arg, transient=transient, on_prepared=on_prepared)

    async def submit_claims(
        self,
        submissions: Sequence[Mapping[str, Any]],
        details: Mapping[str, Any],
        on_prepared: OnPrepared | None = None,
    ) -> Committed:
        """Many claims of this provider in one transaction, all or none (details by claim key)."""
        arg, transient = json.dumps(list(submissions)), {"claims": details}
        return await self.submit(CLAIMS, "Claims:SubmitBatch", arg, transient=transient, on_prepared=on_prepared)

    async def claim(self, claim_id: str) -> dict[str, Any]:
        return dict(await self.evaluate(CLAIMS, "Claims:Get", claim_id))

    async def cancel_claim(self, claim_id: str, reason: str, on_prepared: OnPrepared | None = None) -> Committed:
        return await self.submit(CLAIMS, "Claims:Cancel", claim_id, reason, on_prepared=on_prepared)

    async def claim_lines(self, claim_id: str) -> dict[str, Any]:
        return dict(await self.evaluate(CLAIMS, "Claims:Lines", claim_id))

    async def claim_lines_batch(self, claim_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Many claims' lines in one read (1 to 500 distinct ids): a result per claim, in the order asked, with its
        `detail`, or the `code` and `message` that `claim_lines` would have been refused with for it."""
        return list(await self.evaluate(CLAIMS, "Claims:LinesBatch", json.dumps(list(claim_ids))))

    async def adjudication(self, claim_id: str) -> dict[str, Any]:
        return dict(await self.evaluate(CLAIMS, "Claims:AdjudicationOf", claim_id))

    async def adjudicate(self, claim_id: str, decision: Mapping[str, Any]) -> Committed:
        return await self.submit(CLAIMS, "Claims:Adjudicate", claim_id, transient={"adjudication": decision})

    async def adjudicate_batch(self, decisions: Mapping[str, Mapping[str, Any]]) -> Committed:
        """Many claims in one transaction; each claim's result says whether it was adjudicated or why not."""
        return await self.submit(CLAIMS, "Claims:AdjudicateBatch", transient={"adjudications": decisions})

    async def pay(self, claim_id: str, payment_ref: str) -> Committed:
        return await self.submit(CLAIMS, "Claims:Pay", claim_id, payment_ref)

    async def pay_batch(self, provider: str, payment_ref: str, claim_ids: Sequence[str]) -> Committed:
        return await self.submit(CLAIMS, "Claims:PayBatch", provider, payment_ref, json.dumps(list(claim_ids)))

    async def payment(self, payment_ref: str) -> dict[str, Any]:
        return dict(await self.evaluate(CLAIMS, "Claims:Payment", payment_ref))

    async def decide_preauth(self, claim_id: str, decision: Mapping[str, Any]) -> Committed:
        return await self.submit(CLAIMS, "Claims:DecidePreauth", claim_id, json.dumps(decision))

    async def decide_preauth_batch(self, decisions: Mapping[str, Mapping[str, Any]]) -> Committed:
        """Many prior-authorisation decisions in one transaction; each request's result says whether its decision
        was recorded or why not."""
        return await self.submit(CLAIMS, "Claims:DecidePreauthBatch", transient={"decisions": decisions})

    async def appeal_preauth(self, claim_id: str, documentation_digest: str) -> Committed:
        """The provider's one appeal of a denied prior authorisation, with the keyed digest of its documentation."""
        return await self.submit(CLAIMS, "Claims:AppealPreauth", claim_id, documentation_digest)

    async def due_for_purge(self, before: str, page_size: int = 200) -> list[dict[str, Any]]:
        return await self._pages(CLAIMS, "Claims:DueForPurge", "claims", before, page_size=page_size)

    async def purge_lines(self, claim_id: str) -> Committed:
        return await self.submit(CLAIMS, "Claims:PurgeLines", claim_id)

    async def preauths(self, insurer: str, start: str, end: str) -> list[dict[str, Any]]:
        return await self._pages(CLAIMS, "Claims:PreauthsByPeriod", "claims", insurer, start, end)

    # ----- Consent and audit -----------------------------------------------------------------------------------

    async def grant(self, grant: Mapping[str, Any], on_prepared: OnPrepared | None = None) -> Committed:
        return await self.submit(PROVIDERS, "Consent:Grant", json.dumps(grant), on_prepared=on_prepared)

    async def revoke(self, consent_id: str, document_digest: str, on_prepared: OnPrepared | None = None) -> Committed:
        return await self.submit(PROVIDERS, "Consent:Revoke", consent_id, document_digest, on_prepared=on_prepared)

    async def consent(self, consent_id: str) -> dict[str, Any]:
        return dict(await self.evaluate(PROVIDERS, "Consent:Get", consent_id))

    async def record_access(
        self, patient: str, accessor: str, resource: str, purpose: str, categories: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Decide an access against the patient's consent and log it, in one transaction. `resource` is
        `$everything`, a type (every resource of it), or `Type/<resource key>` (with its `categories`)."""
        request: dict[str, Any] = {"patient": patient, "accessor": accessor, "resource": resource, "purpose": purpose}
        if categories:
            request["categories"] = list(categories)
        return dict((await self.submit(PROVIDERS, "Audit:RecordAccess", json.dumps(request))).result)

    async def audit_by_patient(self, patient: str, start: str, end: str) -> list[dict[str, Any]]:
        return await self._pages(PROVIDERS, "Audit:ByPatient", "entries", patient, start, end)

    async def audit_page(
        self, patient: str, start: str, end: str, page_size: int, bookmark: str = ""
    ) -> tuple[list[dict[str, Any]], str]:
        """One page of a patient's access log, oldest first, and the bookmark of the next ("" on the last)."""
        page = await self.evaluate(PROVIDERS, "Audit:ByPatient", patient, start, end, str(page_size), bookmark)
        return list(page["entries"] or []), str(page["bookmark"] or "")

    # ----- Supply ----------------------------------------------------------------------------------------------

    async def pack(self, gtin: str, serial: str) -> dict[str, Any]:
        """A pack's current state (NOT_FOUND when it was never commissioned)."""
        return dict(await self.evaluate(PHARMA, "Supply:Get", gtin, serial))

    async def custody(self, gtin: str, serial: str) -> list[dict[str, Any]]:
        """A pack's custody events, oldest first."""
        return list(await self.evaluate(PHARMA, "Supply:History", gtin, serial) or [])

    async def pack_alerts(self, gtin: str, serial: str) -> list[dict[str, Any]]:
        """Suspicious verifications reported for a pack, oldest first."""
        return list(await self.evaluate(PHARMA, "Supply:Alerts", gtin, serial) or [])

    async def verify_pack(self, gtin: str, serial: str, lot: str, expiry: str) -> dict[str, Any]:
        """Whether a pack as printed is authentic now, with the flags that say why not."""
        return dict(await self.evaluate(PHARMA, "Supply:Verify", gtin, serial, lot, expiry))

    # ----- Trials ----------------------------------------------------------------------------------------------

    async def register_study(self, study_id: str, protocol_digest: str) -> Committed:
        return await self.submit(PROVIDERS, "Trials:RegisterStudy", study_id, protocol_digest)

    async def enrol(self, study_id: str, subject: str, consent_id: str) -> Committed:
        return await self.submit(PROVIDERS, "Trials:Enrol", study_id, subject, consent_id)

    async def enrolments(self, study_id: str) -> list[dict[str, Any]]:
        return list(await self.evaluate(PROVIDERS, "Trials:Enrolments", study_id) or [])

    async def anchor_dataset(self, study_id: str, version: str, digest: str) -> Committed:
        return await self.submit(PROVIDERS, "Trials:AnchorDataset", study_id, version, digest)

    async def verify_dataset(self, study_id: str, version: str, digest: str) -> dict[str, Any]:
        return dict(await self.evaluate(PROVIDERS, "Trials:VerifyDataset", study_id, version, digest))

    async def _pages(
        self, channel: str, function: str, field: str, *args: str, page_size: int = 100
    ) -> list[dict[str, Any]]:
        """Every item of a paged read (the contract's bookmark pages)."""
        items: list[dict[str, Any]] = []
        bookmark = ""
        while True:
            page = await self.evaluate(channel, function, *args, str(page_size), bookmark)
            items += list(page[field] or [])
            bookmark = page["bookmark"]
            if not bookmark:
                return items
