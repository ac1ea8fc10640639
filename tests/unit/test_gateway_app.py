"""The gateway's routes in process, over the in-memory ledger: status codes, OperationOutcomes, scopes, headers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from fabric_gateway import CommitStatusUnavailable, EndorseError, ErrorDetail
from gateway import consistency, metrics
from ledger.errors import LedgerConflict
from records import synthetic
from records.store import Query
from tests.unit.gateway_harness import WRITE, Gateway

Run = Callable[[Callable[[Gateway], Awaitable[None]]], None]


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    g = Gateway(tmp_path)
    yield g
    g.close()


def _simulation_failed(why: str) -> EndorseError:
    """What the gateway's own peer answers when it cannot run the chaincode for a proposal."""
    detail = ErrorDetail(
        "127.0.0.1:7100", "HospitalMSP", f"error in simulation: failed to execute transaction 1f: {why}"
    )
    return EndorseError("ABORTED", "failed to endorse transaction, see attached details for more info", (detail,))


def stored(gw: Gateway, rtype: str) -> int:
    return gw.records.store.search(Query(rtype))[0]


def test_the_capability_statement_needs_no_token(gw: Gateway) -> None:
    async def scenario(g: Gateway) -> None:
        assert g.http is not None
        r = await g.http.get("/fhir/metadata")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/fhir+json")
        assert r.json()["resourceType"] == "CapabilityStatement"

    gw.run(scenario)


def test_a_transaction_is_answered_per_entry_and_reads_back(gw: Gateway) -> None:
    async def scenario(g: Gateway) -> None:
        r = await g.post("/fhir", synthetic.Synthetic.seeded(3).transaction(4))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["type"] == "transaction-response"
        locations = [e["response"]["location"] for e in body["entry"]]
        assert all(e["response"]["status"] == "201 Created" for e in body["entry"])
        rtype, rid, _, version = locations[1].split("/")
        read = await g.get(f"/fhir/{rtype}/{rid}")
        assert read.status_code == 200 and read.headers["etag"] == f'W/"{version}"'
        verify = await g.get(f"/fhir/{rtype}/{rid}/$verify")
        assert verify.json()["parameter"][0] == {"name": "result", "valueBoolean": True}
        patient_id = locations[0].split("/")[1]
        found = await g.get(f"/fhir/{rtype}?patient=Patient/{patient_id}")
        assert found.json()["total"] >= 1

    gw.run(scenario)


def test_without_a_token_401_and_without_the_scope_403(gw: Gateway) -> None:
    async def scenario(g: Gateway) -> None:
        assert g.http is not None
        assert (await g.http.get("/fhir/Patient")).status_code == 401
        r = await g.post("/fhir", synthetic.Synthetic.seeded(4).transaction(2), scope="system/*.read")
        assert r.status_code == 403
        assert r.json()["issue"][0]["code"] == "forbidden"
        assert stored(g, "Patient") == 0

    gw.run(scenario)


def test_every_problem_of_a_bundle_is_listed_and_nothing_is_stored(gw: Gateway) -> None:
    async def scenario(g: Gateway) -> None:
        bundle = synthetic.Synthetic.seeded(5).transaction(4)
        bundle["entry"][0]["resource"]["gender"] = "unknown-to-fhir"
        bundle["entry"][2]["resource"]["status"] = "nonsense"
        bundle["entry"][3]["request"]["url"] = "Somewhere"
        r = await g.post("/fhir", bundle)
        assert r.status_code == 422
        expressions = [i["expression"][0] for i in r.json()["issue"]]
        assert "Bundle.entry[0].resource.gender" in expressions
        assert any(e.startswith("Bundle.entry[2].resource.status") for e in expressions)
        assert "Bundle.entry[3].request.url" in expressions
        assert g.rows() == 0

    gw.run(scenario)


def test_a_bundle_with_more_problems_than_listed_says_how_many_more(gw: Gateway) -> None:
    async def scenario(g: Gateway) -> None:
        bundle = synthetic.Synthetic.seeded(8).transaction(1)
        patient = bundle["entry"][0]
        entries = []
        for i in range(150):
            entry = {**patient, "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}"}
            entry["resource"] = {**patient["resource"], "gender": "unknown-to-fhir"}
            entries.append(entry)
        r = await g.post("/fhir", {**bundle, "entry": entries})
        assert r.status_code == 422
        issues = r.json()["issue"]
        assert len(issues) == 100
        assert issues[98]["expression"] == ["Bundle.entry[98].resource.gender"]
        assert issues[99]["diagnostics"] == "51 more problems are not listed"
        assert g.rows() == 0

    gw.run(scenario)


def test_a_ledger_refusal_is_a_conflict_and_leaves_nothing(gw: Gateway) -> None:
    async def scenario(g: Gateway) -> None:
        g.world.fail_next("Records:Register", LedgerConflict("not the next version"))
        r = await g.post("/fhir", synthetic.Synthetic.seeded(6).transaction(3))
        assert r.status_code == 409
        assert g.rows() == 0

    gw.run(scenario)


def test_an_unknown_outcome_asks_for_a_retry_that_returns_the_same_result(gw: Gateway) -> None:
    async def scenario(g: Gateway) -> None:
        bundle = synthetic.Synthetic.seeded(7).transaction(3)
        g.world.fail_next("Records:Register", CommitStatusUnavailable("UNAVAILABLE", "peer gone"), committed=True)
        r = await g.post("/fhir", bundle)
        assert r.status_code == 503
        assert r.headers["retry-after"]
        assert stored(g, "Patient") == 0
        again = await g.post("/fhir", bundle)  # the same request: the first one's result, never a second write
        assert again.status_code == 200, again.text
        assert stored(g, "Patient") == 1
        third = await g.post("/fhir", bundle)  # once answered, the same content again is a new write, as in FHIR
        assert third.status_code == 200 and stored(g, "Patient") == 2
        assert again.json()["entry"][0]["response"]["location"] != third.json()["entry"][0]["response"]["location"]

    gw.run(scenario)


def test_member_routes_are_closed_without_federation(gw: Gateway) -> None:
    async def scenario(g: Gateway) -> None:
        r = await g.get(f"/federation/everything/{'a' * 64}")
        assert r.status_code == 404  # this gateway was made without federation: it answers no member

    gw.run(scenario)


def test_bodies_must_be_fhir_json_and_answers_are_fhir_json(gw: Gateway) -> None:
    async def scenario(g: Gateway) -> None:
        bundle = synthetic.Synthetic.seeded(8).transaction(2)
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/fhir+xml", ""):
            r = await g.post("/fhir", bundle, **{"Content-Type": content_type})
            assert r.status_code == 415, content_type
        ok = await g.post("/fhir", bundle, **{"Content-Type": "application/json; charset=utf-8"})
        assert ok.status_code == 200
        assert (await g.get("/fhir/Patient", Accept="application/fhir+xml")).status_code == 406
        assert (await g.get("/fhir/Patient", Accept="application/fhir+json")).status_code == 200
        assert (await g.get("/fhir/Patient", Accept="*/*")).status_code == 200

    gw.run(scenario)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        # A member's peer is down: no set of live peers meets the endorsement policy.
        (
            EndorseError(
                "FAILED_PRECONDITION",
                "no combination of peers can be derived which satisfy the endorsement"
                " policy: no peer combination can satisfy the endorsement policy",
            ),
            503,
        ),
        # An endorser went away during the call.
        (
            EndorseError(
                "ABORTED",
                "failed to collect enough transaction endorsements, see attached details for more info",
                (ErrorDetail("127.0.0.1:7120", "InsurerMSP", "rpc error: code = Unavailable desc = error reading"),),
            ),
            503,
        ),
        # The chaincode server is down.
        (_simulation_failed("could not launch chaincode cc_1:ab: connection to 127.0.0.1:7200 failed"), 503),
        # The chaincode server is killed during the call.
        (_simulation_failed("chaincode stream terminated"), 503),
        # Anything else the ledger fails with is still a bad gateway.
        (EndorseError("ABORTED", "failed", (ErrorDetail("p", "HospitalMSP", "chaincode response 500, panic"),)), 502),
    ],
)
def test_a_ledger_that_cannot_endorse_now_is_unavailable_not_a_bad_gateway(
    gw: Gateway, error: Exception, status: int
) -> None:
    async def scenario(g: Gateway) -> None:
        g.world.fail_next("Records:Register", error)
        r = await g.post("/fhir", synthetic.Synthetic.seeded(8).transaction(2))
        assert r.status_code == status, r.text
        assert ("retry-after" in r.headers) == (status == 503)
        assert g.rows() == 0

    gw.run(scenario)


def test_a_bundles_claims_answer_201_and_say_where_they_stand(gw: Gateway) -> None:
    async def scenario(g: Gateway) -> None:
        bundle = synthetic.Synthetic.seeded(5).transaction(2)
        claim = synthetic.claim("x", "InsurerMSP", [("99213", 1, "80.00")], "2026-11-01", "Coverage/c1")
        claim["patient"] = {"reference": bundle["entry"][0]["fullUrl"]}
        bundle["entry"].append({"resource": claim, "request": {"method": "POST", "url": "Claim"}})
        r = await g.post("/fhir", bundle)
        assert r.status_code == 200, r.text
        status, location = (r.json()["entry"][-1]["response"][k] for k in ("status", "location"))
        assert status == "201 Created" and location.startswith("Claim/")
        await g.records.claims_outbox.idle()
        state = await g.get(f"/fhir/{location.rsplit('/', 2)[0]}/$submission")
        params = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in state.json()["parameter"]}
        assert params["state"] == "submitted" and params["transaction"]
        metrics = (await g.get("/metrics")).text
        assert "claim_outbox_queued 0.0" in metrics.splitlines(), metrics

    gw.run(scenario)


def test_patient_match_and_link(gw: Gateway) -> None:
    async def scenario(g: Gateway) -> None:
        ann = {"resourceType": "Patient", "name": [{"family": "Doe", "given": ["Ann"]}], "birthDate": "1970-01-01",
               "gender": "female"}  # fmt: skip
        assert (await g.request("PUT", "/fhir/Patient/ann", ann, WRITE)).status_code == 201
        query = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": ann}]}
        found = (await g.post("/fhir/Patient/$match", query)).json()
        assert [(e["resource"]["id"], e["search"]["score"]) for e in found["entry"]] == [("ann", 0.9)]
        certain = {**query, "parameter": [*query["parameter"], {"name": "onlyCertainMatches", "valueBoolean": True}]}
        assert (await g.post("/fhir/Patient/$match", certain)).json()["total"] == 0
        mpi = {"system": synthetic.MPI_SYSTEM, "value": "MPI-ANN-9"}
        link = {"resourceType": "Parameters", "parameter": [{"name": "identifier", "valueIdentifier": mpi}]}
        linked = await g.post("/fhir/Patient/ann/$link", link)
        assert linked.status_code == 200 and mpi in linked.json()["identifier"]
        other = {"system": "urn:not-a-consortium-system", "value": "1"}
        bad = {"resourceType": "Parameters", "parameter": [{"name": "identifier", "valueIdentifier": other}]}
        refused = await g.post("/fhir/Patient/ann/$link", bad)
        assert refused.status_code == 422 and refused.json()["resourceType"] == "OperationOutcome"

    gw.run(scenario)


def test_a_write_says_its_block_and_a_read_can_wait_for_one(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[tuple[str, int]] = []
    transport = gw.records.ledger.transport

    async def wait_for_block(channel: str, block_number: int, orgs: object) -> None:
        waits.append((channel, block_number))

    monkeypatch.setattr(transport, "wait_for_block", wait_for_block)

    async def scenario(g: Gateway) -> None:
        r = await g.post("/fhir", synthetic.Synthetic.seeded(5).transaction(2))
        assert r.status_code == 200, r.text
        channel, _, block = r.headers["x-ledger-block"].partition(":")
        assert channel == "providers" and int(block) >= 1
        patient = r.json()["entry"][0]["response"]["location"].split("/")[1]
        read = await g.get(f"/fhir/Patient/{patient}", **{"X-Ledger-Min-Block": f"providers:{block}, claims:3"})
        assert read.status_code == 200 and "x-ledger-block" not in read.headers  # a read commits nothing
        assert sorted(waits) == [("claims", 3), ("providers", int(block))]
        for bad in ("providers", "providers:-1", "providers:x", "providers:1,", "Providers:1"):
            refused = await g.get(f"/fhir/Patient/{patient}", **{"X-Ledger-Min-Block": bad})
            assert refused.status_code == 400, bad
            assert refused.json()["issue"][0]["diagnostics"].startswith("X-Ledger-Min-Block")
        unknown = await g.get(f"/fhir/Patient/{patient}", **{"X-Ledger-Min-Block": "elsewhere:4"})
        assert unknown.status_code == 400 and "elsewhere" in unknown.text

    gw.run(scenario)


def test_a_peer_that_does_not_reach_the_block_named_gets_a_503_to_retry(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never(channel: str, block_number: int, orgs: object) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(gw.records.ledger.transport, "wait_for_block", never)
    monkeypatch.setattr(consistency, "MIN_BLOCK_WAIT_S", 0.2)

    async def scenario(g: Gateway) -> None:
        r = await g.get("/fhir/Patient?_count=1", **{"X-Ledger-Min-Block": "providers:999"})
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.json()["issue"][0]["code"] == "transient"


def test_a_claim_sent_again_with_its_idempotency_key_is_the_same_claim_not_a_duplicate(gw: Gateway) -> None:
    """A client that lost the answer to its claim sends it again with the same Idempotency-Key: it gets the first
    answer (the same Claim), not a second claim the insurer would deny as an exact duplicate. Without the key, the
    same content again is a second claim, filed as the first one's duplicate (CARC 18)."""

    async def scenario(g: Gateway) -> None:
        patient = await g.post("/fhir/Patient", synthetic.Synthetic.seeded(9).transaction(0)["entry"][0]["resource"])
        assert patient.status_code == 201, patient.text
        claim = synthetic.claim(patient.json()["id"], "InsurerMSP", [("99213", 1, "80.00")], "2026-11-01", "C/1")
        first = await g.post("/fhir/Claim", claim, **{"Idempotency-Key": "claim-0001"})
        again = await g.post("/fhir/Claim", claim, **{"Idempotency-Key": "claim-0001"})
        assert first.status_code == 201 and again.status_code in (200, 201), again.text
        assert again.json()["id"] == first.json()["id"]
        submitted = [p for _, _, name, p in g.world.events if name == "Claims.Submitted"]
        assert len(submitted) == 1
        resent = await g.post("/fhir/Claim", claim)  # no key: a new request with the same content
        assert resent.status_code == 201 and resent.json()["id"] != first.json()["id"]
        key = g.records.store.ledger_key("Claim", resent.json()["id"])
        assert (await g.records.ledger.claim_lines(key))["duplicateOf"] == submitted[0]["claimId"]

    gw.run(scenario)


def test_an_idempotency_key_sent_with_a_different_request_is_refused_and_writes_nothing(gw: Gateway) -> None:
    """A key names one request: the same key with another body is a client error, 422, and nothing is written;
    the first request sent again with it still gets its first answer."""

    async def scenario(g: Gateway) -> None:
        patient = await g.post("/fhir/Patient", synthetic.Synthetic.seeded(9).transaction(0)["entry"][0]["resource"])
        assert patient.status_code == 201, patient.text
        claim = synthetic.claim(patient.json()["id"], "InsurerMSP", [("99213", 1, "80.00")], "2026-11-01", "C/1")
        other = synthetic.claim(patient.json()["id"], "InsurerMSP", [("99214", 1, "90.00")], "2026-11-01", "C/1")
        first = await g.post("/fhir/Claim", claim, **{"Idempotency-Key": "claim-0002"})
        assert first.status_code == 201, first.text
        events = len(g.world.events)
        reused = await g.post("/fhir/Claim", other, **{"Idempotency-Key": "claim-0002"})
        assert reused.status_code == 422, reused.text
        assert reused.json()["resourceType"] == "OperationOutcome"
        assert reused.json()["issue"][0]["code"] == "business-rule"
        assert len(g.world.events) == events  # nothing reached the ledger
        again = await g.post("/fhir/Claim", claim, **{"Idempotency-Key": "claim-0002"})
        assert again.status_code in (200, 201) and again.json()["id"] == first.json()["id"]

    gw.run(scenario)


def test_metrics_are_served_when_the_outbox_count_cannot_be_read() -> None:
    def unreachable() -> int:
        raise ConnectionError("the store's database is down")

    app = FastAPI()
    metrics.instrument(app, unreachable)

    async def scrape() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            return await http.get("/metrics")

    r = asyncio.run(scrape())
    assert r.status_code == 200 and "claim_outbox_queued NaN" in r.text.splitlines(), r.text
    assert "fhir_request_seconds" in r.text
