"""No PHI on the ledger: after every other integration test, look for every patient any test wrote in every block of
every channel on every node, and in every record of every peer's LevelDB databases (state, history, private data,
transient store).

What is looked for comes from the PHI registry (tests/conftest.py): the names, identifiers, birth dates, addresses,
phone numbers and e-mail addresses of every Patient an accepted request carried, synthetic generator's included, the
ids clients chose (an id can be an MRN), and the hand-made patients of tests/fhir_samples.py. The first test here
writes a patient whose id IS its MRN through every route that reaches the chain, so the scan has a case it must
not find; it also proves the scan reads what it should, by finding that patient's pseudonym and claim key.

Both tests carry the `phi_scan` marker: tests/conftest.py moves them after every other test that uses the network.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest

from consortium.topology import Topology
from network import control
from records import digests, synthetic
from tests import fhir_samples as fhir
from tests.conftest import CLAIM_KEY_SYSTEM, GatewayHttp, PhiRegistry
from tests.integration import phi_scan
from tests.integration.phi_scan import Needles

pytestmark = [pytest.mark.network, pytest.mark.phi_scan]

MRN_SYSTEM = "urn:oid:2.16.840.1.113883.3.4711.2.7"  # the hospital's own medical record numbers (synthetic)
SHORTEST = 4  # shorter strings ("1", "Bo") are everywhere in binary data; the scan skips them and says how many


@dataclass
class Canary:
    """What the MRN patient left on the chain on purpose: keys and pseudonyms, never its identity."""

    mrn: str = ""
    pseudonym: str = ""
    claim_key: str = ""
    written: list[str] = field(default_factory=list)


CANARY = Canary()


def test_a_patient_whose_id_is_its_mrn_is_written_through_every_route(
    gateways: dict[str, GatewayHttp], phi_registry: PhiRegistry
) -> None:
    hospital, clinic, insurer = gateways["HospitalOrg"], gateways["ClinicOrg"], gateways["InsurerOrg"]
    mrn = f"MRN-{secrets.randbelow(10**9):09d}-QZ"
    mpi = f"MPI-{secrets.randbelow(10**9):09d}-W"
    patient = {
        "resourceType": "Patient",
        "id": mrn,
        "identifier": [{"system": MRN_SYSTEM, "value": mrn}, {"system": synthetic.MPI_SYSTEM, "value": mpi}],
        "name": [{"family": "Oyelaran-Brisbane", "given": ["Zoë", "Marguerite"], "text": "Zoë Oyelaran-Brisbane"}],
        "gender": "female",
        "birthDate": "1958-07-19",
        "address": [{"line": ["4471 Quillfeather Lane"], "city": "Wexbridge", "postalCode": "KW17 3QP"}],
        "telecom": [
            {"system": "phone", "value": "+1 555 0142 887"},
            {"system": "email", "value": "zoe.oyelaran@example.org"},
        ],
        "contact": [{"name": {"family": "Oyelaran", "given": ["Tobiah"]}}],
    }
    written = []

    def put(gw: GatewayHttp, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = gw.put(path, body)
        assert r.status_code in (200, 201), (path, r.text)
        written.append(f"{gw.settings.org.name}{path}")
        return dict(r.json())

    # The hospital holds the patient under its MRN, with a lab result, a consent and a claim, each under an id its
    # EHR chose from the MRN. The clinic holds the same patient under the same id: equal ids, different keys.
    put(hospital, f"/Patient/{mrn}", patient)
    observation = synthetic.Synthetic.seeded(5).clinical(f"Patient/{mrn}", 0)
    put(hospital, f"/Observation/{mrn}-hb", {**observation, "id": f"{mrn}-hb"})
    put(hospital, f"/Consent/{mrn}-consent", {**synthetic.consent(mrn, "ClinicMSP"), "id": f"{mrn}-consent"})
    coverage = insurer.post("/Coverage", synthetic.coverage(mpi, "InsurerMSP", "2026-01-01", "2026-12-31"))
    assert coverage.status_code == 201, coverage.text
    today = datetime.date.today().isoformat()
    claim = synthetic.claim(mrn, "InsurerMSP", [("99213", 1, "95.00")], today, f"Coverage/{coverage.json()['id']}")
    submitted = put(hospital, f"/Claim/{mrn}-claim", {**claim, "id": f"{mrn}-claim"})
    put(clinic, f"/Patient/{mrn}", patient)

    # The clinic reads the record under the consent: an access decision logged on chain.
    everything = clinic.get("/Patient/$everything", params={"identifier": f"{synthetic.MPI_SYSTEM}|{mpi}"})
    assert everything.status_code == 200, everything.text
    assert any(e["resource"].get("id") == f"{mrn}-hb" for e in everything.json()["entry"])

    # The registry saw it all: the scan will look for these.
    for text in (mrn, f"{mrn}-hb", f"{mrn}-consent", f"{mrn}-claim", mpi, "Zoë", "1958-07-19", "+1 555 0142 887"):
        assert text in phi_registry.strings, text
    CANARY.mrn = mrn
    CANARY.pseudonym = digests.pseudonym(hospital.settings.custodian.consortium_key(), synthetic.MPI_SYSTEM, mpi)
    CANARY.claim_key = next(i["value"] for i in submitted["identifier"] if i["system"] == CLAIM_KEY_SYSTEM)
    CANARY.written = written


@dataclass
class Findings:
    """Where each string was found, and what was read."""

    hits: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    bytes_read: int = 0
    leaves: int = 0
    blocks: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (node, channel) -> block numbers
    databases: dict[str, phi_scan.LevelDb] = field(default_factory=dict)  # path relative to the run folder -> db


class Scan:
    """Every distinct field value is searched once (the same blocks sit on several nodes), and what it holds is
    reported for every place it sits."""

    def __init__(self, needles: Needles) -> None:
        self.needles = needles
        self.found_in: dict[bytes, set[str]] = {}  # a field value's digest -> the strings in it
        self.findings = Findings()

    def value(self, data: bytes, where: str) -> None:
        for leaf in phi_scan.leaves(data):
            digest = hashlib.sha256(leaf).digest()
            found = self.found_in.get(digest)
            if found is None:
                found = self.found_in[digest] = self.needles.find(leaf)
                self.findings.leaves += 1
            for text in found:
                self.findings.hits[text].add(where)

    def blocks(self, network: Topology) -> None:
        for node in network.nodes:
            for block_file in sorted(network.data_dir(node.name).rglob("blockfile_*")):
                channel = block_file.parent.name
                self.findings.bytes_read += block_file.stat().st_size
                numbers = self.findings.blocks.setdefault((node.name, channel), [])
                for block in phi_scan.blocks(block_file):
                    numbers.append(block.number)
                    for part in (*block.envelopes, *block.metadata):
                        self.value(part, f"{node.name}: {channel} block {block.number}")

    def databases(self, network: Topology) -> None:
        for node in network.peers:
            for path in phi_scan.leveldb_dirs(network.data_dir(node.name)):
                db = phi_scan.read_leveldb(path)
                name = str(path.relative_to(network.home))
                self.findings.databases[name] = db
                for key, value in db.entries:
                    self.findings.bytes_read += len(key) + len(value)
                    self.value(key, f"{name}: a key")
                    self.value(value, f"{name}: the value of {key[:80]!r}")


def registered_phi(registry: PhiRegistry) -> tuple[dict[str, str], int]:
    """Every string to look for, and how many were too short to look for."""
    strings = dict(registry.strings)
    for p in fhir.PATIENTS:  # written to the chain directly by test_contracts, as pseudonyms
        strings.setdefault(p["id"], "client-chosen Patient id")
        for text in fhir.phi_strings():
            strings.setdefault(text, "hand-made patient")
    kept = {t: what for t, what in strings.items() if len(t.strip()) >= SHORTEST}
    return kept, len(strings) - len(kept)


def test_no_phi_in_any_block_or_peer_database(network: Topology, phi_registry: PhiRegistry) -> None:
    heights = {ch: state["heights"] for ch, state in control.status(network)["channels"].items()}
    strings, too_short = registered_phi(phi_registry)
    assert CANARY.mrn in strings, "the MRN patient was not written: run the whole module"
    pseudonym, claim_key = CANARY.pseudonym, CANARY.claim_key
    scan = Scan(Needles({**strings, pseudonym: "control", claim_key: "control"}))
    scan.blocks(network)
    scan.databases(network)
    found = scan.findings
    summary = (
        f"{len(strings)} strings ({too_short} shorter than {SHORTEST} skipped), {found.bytes_read:,} bytes,"
        f" {found.leaves:,} distinct field values, {len(found.blocks)} block files, {len(found.databases)} databases"
    )

    # Every block of every channel on every node, from the genesis block on.
    for channel, members in network.channels.items():
        for org in members:
            peer = network.peer_of(org).name
            numbers = found.blocks.get((peer, channel), [])
            assert numbers == list(range(len(numbers))), (peer, channel, "blocks missing or out of order")
            assert len(numbers) >= (heights[channel][peer] or 1), (peer, channel, len(numbers), summary)
        for orderer in network.orderers:
            numbers = found.blocks.get((orderer.name, channel), [])
            assert numbers and numbers == list(range(len(numbers))), (orderer.name, channel, summary)
    for node in network.peers:
        state = next((db for name, db in found.databases.items() if node.name in name and "stateLeveldb" in name), None)
        assert state is not None and state.entries, (node.name, "no state database read", summary)

    # The scan reads what it must: what the MRN patient left on purpose (its pseudonym in the providers channel and
    # state, its claim's key in the claims channel) is found where it should be.
    controls = found.hits.pop(pseudonym, set()), found.hits.pop(claim_key, set())
    for node in ("o1.orderer", "peer0.hospital", "peer0.clinic"):
        assert any(w.startswith(f"{node}: providers block") for w in controls[0]), (node, summary)
    for peer in ("peer0.hospital", "peer0.clinic"):
        assert any(f"data/{peer}/" in w and "stateLeveldb" in w for w in controls[0]), (peer, summary)
    assert any(": claims block" in w for w in controls[1]), summary
    assert any("peer0.insurer" in w and "stateLeveldb" in w for w in controls[1]), summary

    # A claim's date of service is on the claims channel by design (docs/SECURITY.md, "Not covered"): a birth date
    # that is also the date of service of a claim some test filed is no leak where claims are kept. Elsewhere it is.
    for text in [t for t in found.hits if strings[t] == "birth date" and t in phi_registry.service_dates]:
        elsewhere = {w for w in found.hits[text] if not on_claims_channel(w)}
        if elsewhere:
            found.hits[text] = elsewhere
        else:
            del found.hits[text]
    leaks = {f"{text!r} ({strings[text]})": sorted(where)[:5] for text, where in found.hits.items()}
    assert not leaks, f"PHI on the ledger: {leaks}\n{summary}"


def on_claims_channel(where: str) -> bool:
    """Whether a finding's place is a block of `claims` or a record of the claims channel's databases."""
    return ": claims block" in where or "claims\\x00" in where


def test_no_phi_in_the_logs_of_gateways_and_workers(network: Topology, phi_registry: PhiRegistry) -> None:
    """The gateways, listeners and workers log routes, statuses and transaction ids, never what a resource says."""
    strings, _ = registered_phi(phi_registry)
    needles = Needles(strings)
    logs = [
        p for p in sorted((network.home / "logs").glob("*.log")) if p.name.startswith(("gateway", "worker", "listener"))
    ]
    assert logs, "no gateway log: the gateways never ran"
    leaks = {str(p.relative_to(network.home)): sorted(needles.find(p.read_bytes()))[:10] for p in logs}
    assert not {p: found for p, found in leaks.items() if found}
