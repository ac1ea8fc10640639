"""Privacy on the real network, through the gateways as their own processes (mutual TLS between members):
minimum necessary under consents of different scopes, selective disclosure checked against the chain, a
de-identified research export anchored and verified, blobs streamed through a gateway and through the
development S3-compatible server (with the figures: MiB/s both ways and the gateway's peak RSS for 1 GiB), blobs
erased with the patient on either backend, and the insurer's records review receiving selected elements only."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json
import os
import re
import ssl
import time
import uuid
import zipfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from consortium import tls
from consortium.topology import Topology
from fabric_gateway import Gateway
from gateway import cli as gateway_cli
from network import s3_server
from records import blobs, deidentify, disclosure, synthetic
from records.errors import PatientErased
from records.s3 import S3Backend, S3Config
from records.settings import CustodianSettings
from tests.conftest import GatewayHttp, claim_key
from workers import cli as worker_cli

pytestmark = pytest.mark.network

OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
MiB = 1024 * 1024


def obs(patient: str, category: str, code: str, value: float, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}], "text": "seen by Dr. Example"},
        "subject": {"reference": patient},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": "g/dL"},
        "note": [{"text": "the patient's neighbour drove her in"}],
    }


def immunization(patient: str, cvx: str) -> dict[str, Any]:
    return {
        "resourceType": "Immunization",
        "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": cvx}]},
        "patient": {"reference": patient},
        "occurrenceDateTime": "2025-10-01",
    }


def record_of(gw: GatewayHttp, mpi: str) -> tuple[str, dict[str, str]]:
    """Post a patient with two lab and one vital-sign Observations, two Immunizations and a Condition; returns
    the Patient's id and {Type/id: what it is}."""
    gen = synthetic.Synthetic.seeded(hash(mpi) % 1000)
    resources = [
        ("lab", obs("urn:uuid:p", "laboratory", "718-7", 13.1, "2026-03-01T10:00:00Z")),
        ("lab", obs("urn:uuid:p", "laboratory", "2345-7", 5.4, "2026-03-01T10:05:00Z")),
        ("vital", obs("urn:uuid:p", "vital-signs", "8867-4", 71.0, "2026-03-01T09:55:00Z")),
        ("imm", immunization("urn:uuid:p", "140")),
        ("imm", immunization("urn:uuid:p", "208")),
        ("cond", gen.clinical("urn:uuid:p", 7)),
    ]
    patient_id, locations = record_with(gw, gen.patient(mpi), [r for _, r in resources])
    what = {loc: kind for loc, (kind, _) in zip(locations, resources, strict=True)}
    return patient_id, {f"Patient/{patient_id}": "patient", **what}


def record_with(gw: GatewayHttp, patient: dict[str, Any], resources: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """Post a patient and these resources of theirs (referring to the patient as `urn:uuid:p`) in one transaction;
    returns the Patient's id and each resource's `Type/id`, in order."""
    entries = [{"fullUrl": "urn:uuid:p", "resource": patient, "request": {"method": "POST", "url": "Patient"}}]
    entries += [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
        for r in resources
    ]
    r = gw.post("", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert r.status_code == 200, r.text
    locations = [e["response"]["location"].split("/_history")[0] for e in r.json()["entry"]]
    return locations[0].split("/")[1], locations[1:]


def consent(patient_id: str, grantee: str, purpose: str, types: list[str], categories: list[str]) -> dict[str, Any]:
    c = synthetic.consent(patient_id, grantee, purpose)
    c["provision"]["class"] = [{"system": "http://hl7.org/fhir/resource-types", "code": t} for t in types]
    if categories:
        c["provision"]["code"] = [{"coding": [{"system": OBS_CATEGORY, "code": x}]} for x in categories]
    return c


def from_hospital(gw: GatewayHttp, response: httpx.Response, hospital: GatewayHttp) -> set[str]:
    assert response.status_code == 200, response.text
    entries = [e for e in response.json()["entry"] if e.get("search", {}).get("mode") == "match"]
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in entries
        if e["fullUrl"].startswith(hospital.settings.url)
    }


def test_each_consent_releases_exactly_its_scope(gateways: dict[str, GatewayHttp]) -> None:
    hospital, clinic = gateways["HospitalOrg"], gateways["ClinicOrg"]
    mpi = f"MPI-MN-{uuid.uuid4().hex[:8]}"
    patient_id, held = record_of(hospital, mpi)
    everything = f"/Patient/$everything?identifier={synthetic.MPI_SYSTEM}|{mpi}&purpose=TREAT"

    def of(*kinds: str) -> set[str]:
        return {loc for loc, kind in held.items() if kind in kinds}

    labs = hospital.post("/Consent", consent(patient_id, "ClinicMSP", "TREAT", ["Observation"], ["laboratory"]))
    assert labs.status_code == 201, labs.text
    assert from_hospital(clinic, clinic.get(everything), hospital) == of("lab")
    assert clinic.get(everything.replace("TREAT", "HPAYMT")).status_code == 403  # the purpose is part of it

    revoked = hospital.put(f"/Consent/{labs.json()['id']}", labs.json() | {"status": "inactive"})
    assert revoked.status_code == 200, revoked.text
    imms = hospital.post("/Consent", consent(patient_id, "ClinicMSP", "TREAT", ["Immunization"], []))
    assert imms.status_code == 201, imms.text
    assert from_hospital(clinic, clinic.get(everything), hospital) == of("imm")

    whole = hospital.post("/Consent", consent(patient_id, "ClinicMSP", "TREAT", [], []))
    assert whole.status_code == 201, whole.text
    consents = {f"Consent/{c.json()['id']}" for c in (labs, imms, whole)}  # the consents are part of the record
    assert from_hospital(clinic, clinic.get(everything), hospital) == set(held) | consents

    log = hospital.get("/AuditEvent", params={"patient": patient_id}).json()["entry"]
    assert len(log) == 4  # partial, deny (purpose), partial, permit: every decision on chain


def test_selective_disclosure_verifies_against_the_chain(
    network: Topology, gateways: dict[str, GatewayHttp], gateway_as: Callable[..., Gateway], tmp_path: Path
) -> None:
    hospital, clinic = gateways["HospitalOrg"], gateways["ClinicOrg"]
    mpi = f"MPI-SD-{uuid.uuid4().hex[:8]}"
    patient_id, held = record_of(hospital, mpi)
    lab = next(loc for loc, kind in held.items() if kind == "lab")
    ask = {
        "resourceType": "Parameters",
        "parameter": [{"name": "path", "valueString": p} for p in ("code.coding", "value[x]", "effective[x]")],
    }
    r = hospital.post(f"{lab}/$disclose", ask)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert "Dr. Example" not in r.text and "neighbour" not in r.text and "laboratory" not in r.text
    # Another member checks it against the chain through its own gateway...
    checked = clinic.post("/$verify-disclosure", doc)
    assert checked.status_code == 200, checked.text
    params = {p["name"]: p for p in checked.json()["parameter"]}
    assert params["result"]["valueBoolean"] is True, params
    assert params["disclosed"]["resource"]["valueQuantity"]["value"] in (13.1, 5.4)
    # ... and anyone can, offline, from the chain's record and the document.
    record = json.loads(
        gateway_as("ClinicOrg")
        .network("providers")
        .contract("careledger")
        .evaluate("Records:Get", args=[doc["resourceKey"], str(doc["version"])])
    )
    assert record["digestScheme"] == "v2" and record["digest"] == doc["root"]
    (tmp_path / "d.json").write_text(json.dumps(doc))
    (tmp_path / "r.json").write_text(json.dumps(record))
    assert disclosure.main(["verify", str(tmp_path / "d.json"), "--record", str(tmp_path / "r.json")]) == 0
    forged = json.loads(json.dumps(doc))
    forged["elements"][-1]["json"] = "99.9"
    assert clinic.post("/$verify-disclosure", forged).json()["parameter"][0]["valueBoolean"] is False
    # The whole resource still verifies by the scheme on chain.
    assert hospital.get(f"{lab}/$verify").json()["parameter"][0]["valueBoolean"] is True

    # Org to org: the review route releases only the named elements of covered resources, checked and logged.
    granted = hospital.post("/Consent", consent(patient_id, "ClinicMSP", "HPAYMT", ["Observation"], ["laboratory"]))
    assert granted.status_code == 201, granted.text
    member = httpx.Client(verify=tls.member_client_context(network, network.org("ClinicOrg")), timeout=30)
    pseudonym = disclosure_pseudonym(network, mpi)
    url = f"{hospital.settings.url}/federation/disclosures/{pseudonym}"
    got = member.get(url, params={"purpose": "HPAYMT", "element": ["Observation.value[x]", "Immunization.vaccineCode"]})
    assert got.status_code == 200, got.text
    docs = got.json()["disclosures"]
    assert len(docs) == 2 and {d["resourceType"] for d in docs} == {"Observation"}
    assert {e["path"] for d in docs for e in d["elements"]} == {
        "resourceType",
        "valueQuantity.value",
        "valueQuantity.unit",
    }
    assert all(disclosure.verify(d).ok for d in docs)
    assert member.get(url, params={"purpose": "TREAT", "element": "Observation.code"}).status_code == 403
    member.close()


def disclosure_pseudonym(network: Topology, mpi: str) -> str:
    from records import digests

    key = CustodianSettings.load(network, "HospitalOrg").consortium_key()
    return digests.pseudonym(key, synthetic.MPI_SYSTEM, mpi)


def submit(gw: Gateway, fn: str, *args: str) -> Any:
    """Submit on `providers`, tried again for a few seconds while the other provider's peer catches up with what was
    just committed (its endorsement then differs or says NOT_FOUND)."""
    contract = gw.network("providers").contract("careledger")
    for attempt in range(30):
        try:
            return json.loads(contract.submit(fn, args=list(args)).result or b"null")
        except Exception:
            if attempt == 29:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def test_a_study_export_is_deidentified_anchored_and_verifiable(
    network: Topology, gateways: dict[str, GatewayHttp], gateway_as: Callable[..., Gateway]
) -> None:
    """The clinic sponsors a study; the hospital holds and enrols the subjects under research consents to the clinic;
    the clinic's researcher gets the de-identified export, anchored on chain, and anyone verifies a copy."""
    hospital, clinic = gateways["HospitalOrg"], gateways["ClinicOrg"]
    study = f"STUDY-{uuid.uuid4().hex[:8]}"
    submit(gateway_as("ClinicOrg"), "Trials:RegisterStudy", study, hashlib.sha256(b"protocol").hexdigest())
    store = CustodianSettings.load(network, "HospitalOrg").open_store()
    secrets: list[str] = []
    for types in ([], ["Observation", "ResearchSubject"]):
        mpi = f"MPI-RS-{uuid.uuid4().hex[:8]}"
        patient_id, _ = record_of(hospital, mpi)
        patient = hospital.get(f"/Patient/{patient_id}").json()
        secrets += [mpi, patient_id, patient["birthDate"], patient["name"][0]["family"], *patient["name"][0]["given"]]
        granted = hospital.post("/Consent", consent(patient_id, "ClinicMSP", "HRESCH", types, []))
        assert granted.status_code == 201, granted.text
        consent_key = store.ledger_key("Consent", granted.json()["id"])
        subject = store.head("Patient", patient_id)
        assert subject is not None
        submit(gateway_as("HospitalOrg"), "Trials:Enrol", study, subject[1], consent_key)
        secrets.append(subject[1])
    store.close()

    token = {"Authorization": f"Bearer {clinic.token('system/ResearchStudy.read')}"}
    made = clinic.http.post(f"{clinic.settings.url}/research/studies/{study}/datasets/v1", headers=token)
    assert made.status_code == 200, made.text
    archive = zipfile.ZipFile(BytesIO(made.content))
    text = "".join(archive.read(n).decode() for n in archive.namelist() if n.endswith(".ndjson"))
    assert not [s for s in secrets if s in text]
    patients = [json.loads(line) for line in archive.read("Patient.ndjson").decode().splitlines()]
    assert len(patients) == 1  # the second subject's consent covers Observations only
    observations = archive.read("Observation.ndjson").decode().splitlines()
    assert len(observations) == 6 and "2026-03-01" not in text  # dates shifted
    digest = made.headers["x-dataset-digest"]
    assert deidentify.dataset_digest(study, "v1", deidentify.read_zip(made.content)[2]) == digest

    anyone = {"Authorization": f"Bearer {hospital.token('system/Patient.read')}", "Content-Type": "application/zip"}
    url = f"{hospital.settings.url}/research/studies/{study}/datasets/v1/$verify"
    ok = hospital.http.post(url, content=made.content, headers=anyone)
    assert ok.status_code == 200 and ok.json()["parameter"][0]["valueBoolean"] is True, ok.text
    _, _, files = deidentify.read_zip(made.content)
    files["Observation.ndjson"] = files["Observation.ndjson"].replace(b"g/dL", b"mg/dL", 1)
    altered = hospital.http.post(url, content=deidentify.write_zip(study, "v1", files), headers=anyone)
    assert altered.json()["parameter"][0]["valueBoolean"] is False
    # A member that is not the sponsor gets nothing from the custodian.
    insurer = httpx.Client(verify=tls.member_client_context(network, network.org("InsurerOrg")), timeout=30)
    assert insurer.get(f"{hospital.settings.url}/federation/research/{study}").json() == {"resources": []}
    insurer.close()


BLOCK = os.urandom(MiB)


def _stream(total: int) -> Iterator[bytes]:
    """`total` bytes (a multiple of MiB) of random-looking content, one MiB at a time."""
    for _ in range(total // MiB):
        yield BLOCK


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_1_gib_binary_streams_through_the_gateway(network: Topology, gateways: dict[str, GatewayHttp]) -> None:
    hospital = gateways["HospitalOrg"]
    patient_id, _ = record_of(hospital, f"MPI-BL-{uuid.uuid4().hex[:8]}")
    pid = gateway_cli.process(network, "HospitalOrg").pid()
    assert pid is not None
    before = _peak_rss_kib(pid)
    size = 1024 * MiB
    headers = {
        "Authorization": f"Bearer {hospital.token()}",
        "Content-Type": "application/octet-stream",
        "X-Security-Context": f"Patient/{patient_id}",
    }
    client = httpx.Client(verify=ssl.create_default_context(cafile=hospital.ca), timeout=600)
    started = time.monotonic()
    up = client.post(f"{hospital.base}/Binary", content=_stream(size), headers=headers)
    upload_s = time.monotonic() - started
    assert up.status_code == 201, up.text
    peak = _peak_rss_kib(pid)
    binary = up.json()
    digest = hashlib.sha256()
    started = time.monotonic()
    received = 0
    with client.stream("GET", f"{hospital.base}/Binary/{binary['id']}", headers={**headers, "Accept": "*/*"}) as down:
        assert down.status_code == 200
        for piece in down.iter_bytes():
            received += len(piece)
            digest.update(piece)
    download_s = time.monotonic() - started
    expected = hashlib.sha256()
    for piece in _stream(size):
        expected.update(piece)
    assert received == size and digest.hexdigest() == expected.hexdigest()
    print(
        f"\n1 GiB Binary through the gateway (HTTPS, filesystem blobs): upload {size / MiB / upload_s:.0f} MiB/s"
        f" ({upload_s:.1f} s), download {size / MiB / download_s:.0f} MiB/s ({download_s:.1f} s);"
        f" gateway peak RSS {before // 1024} MiB before, {peak // 1024} MiB after the upload"
    )
    assert peak - before < 256 * 1024  # streamed: far less than the 1 GiB that went through
    assert hospital.get(f"/Binary/{binary['id']}/$verify").json()["parameter"][0]["valueBoolean"] is True
    client.close()


def test_blobs_on_the_development_s3_server(network: Topology) -> None:
    if not s3_server.answering(network):
        pytest.fail("the development S3 server is not running: scripts/bootstrap installs it, network up starts it")
    config = S3Config(s3_server.endpoint(network), "careledger-test", s3_server.ACCESS_KEY, s3_server.SECRET_KEY)
    keys = {"p" * 64: hashlib.sha256(b"p").digest(), "q" * 64: hashlib.sha256(b"q").digest()}

    async def scenario() -> None:
        backend = S3Backend(config)
        store = blobs.Blobs(backend, keys.__getitem__)
        size = 256 * MiB

        async def body() -> Any:
            for piece in _stream(size):
                yield piece

        started = time.monotonic()
        info = await store.put("p" * 64, body())
        upload_s = time.monotonic() - started
        started = time.monotonic()
        received, digest, expected = 0, hashlib.sha256(), hashlib.sha256()
        async for piece in store.get("p" * 64, info.name):
            received += len(piece)
            digest.update(piece)
        download_s = time.monotonic() - started
        for piece in _stream(size):
            expected.update(piece)
        assert received == size and info.size == size and digest.digest() == expected.digest()
        print(
            f"\n256 MiB blob on the development S3 server: upload {size / MiB / upload_s:.0f} MiB/s,"
            f" download {size / MiB / download_s:.0f} MiB/s"
        )
        small = await store.put("q" * 64, body_of(b"lab report"))
        assert b"".join([p async for p in store.get("q" * 64, small.name)]) == b"lab report"
        with pytest.raises(Exception):  # noqa: B017 - another patient's key opens nothing
            [p async for p in store.get("p" * 64, small.name)]
        await store.delete(info.name)
        assert not await backend.exists(info.name)
        await backend.aclose()

    asyncio.run(scenario())


async def body_of(data: bytes) -> Any:
    yield data


# ----- Blobs erased with the patient, on the filesystem and on S3 ----------------------------------------------------

T = TypeVar("T")


@dataclass(frozen=True)
class BlobPlace:
    """Where the hospital's gateway keeps its blobs during a test, as this process reaches them: a backend like the
    gateway's, and where a blob lies (the gateway's folder, or its S3 bucket listed directly)."""

    open: Callable[[], blobs.BlobBackend]
    folder: Path | None = None
    bucket_url: str = ""

    def objects(self) -> set[str]:
        """Every object key in the bucket (ListObjectsV2; the development server asks no signature for it)."""
        listed = httpx.get(self.bucket_url, params={"list-type": "2"}, timeout=30)
        assert listed.status_code == 200, listed.text
        return set(re.findall(r"<Key>([^<]+)</Key>", listed.text))

    def holds(self, name: str) -> bool:
        """Whether the blob of this name is there, by the layout docs/BLOBS.md gives (not through the backend)."""
        if self.folder is not None:
            return (self.folder / name[:2] / name[2:4] / name).is_file()
        return f"blobs/{name}" in self.objects()

    def run(self, use: Callable[[blobs.BlobBackend], Awaitable[T]]) -> T:
        """`use` a backend of its own (an S3 client belongs to one event loop)."""

        async def scenario() -> T:
            backend = self.open()
            try:
                return await use(backend)
            finally:
                if isinstance(backend, S3Backend):
                    await backend.aclose()

        return asyncio.run(scenario())


@contextmanager
def gateway_with_env(network: Topology, org: str, env: dict[str, str]) -> Iterator[None]:
    """The org's gateway restarted with these environment variables, and restarted without them afterwards."""
    saved = {k: os.environ.get(k) for k in env}
    gateway_cli.process(network, org).stop()
    os.environ.update(env)
    try:
        gateway_cli.start(network, org)
        yield
    finally:
        gateway_cli.process(network, org).stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        gateway_cli.start(network, org)


@pytest.fixture(params=["filesystem", "s3"])
def hospital_blobs(
    request: pytest.FixtureRequest, network: Topology, gateways: dict[str, GatewayHttp]
) -> Iterator[BlobPlace]:
    """The hospital's gateway keeping blobs in its default folder, or restarted for the test with
    `CARELEDGER_BLOBS=s3://<a bucket of its own>` on the development S3 server (docs/BLOBS.md)."""
    if request.param == "filesystem":
        folder = network.gateway_home(network.org("HospitalOrg")) / "blobs"
        yield BlobPlace(lambda: blobs.FileBackend(folder), folder=folder)
        return
    if not s3_server.answering(network):
        pytest.fail("the development S3 server is not running: scripts/bootstrap installs it, network up starts it")
    bucket = f"careledger-hospital-{uuid.uuid4().hex[:8]}"
    endpoint = s3_server.endpoint(network)
    env = {
        "CARELEDGER_BLOBS": f"s3://{bucket}",
        "CARELEDGER_S3_ENDPOINT": endpoint,
        "CARELEDGER_S3_ACCESS_KEY": s3_server.ACCESS_KEY,
        "CARELEDGER_S3_SECRET_KEY": s3_server.SECRET_KEY,
    }
    config = S3Config(endpoint, bucket, s3_server.ACCESS_KEY, s3_server.SECRET_KEY)
    with gateway_with_env(network, "HospitalOrg", env):
        yield BlobPlace(lambda: S3Backend(config), bucket_url=f"{endpoint}/{bucket}")


def test_blobs_are_kept_encrypted_and_erased_with_the_patient(
    network: Topology, gateways: dict[str, GatewayHttp], hospital_blobs: BlobPlace
) -> None:
    """A Binary streamed to the hospital's gateway, and a DiagnosticReport's inline attachment, become blobs where the
    gateway keeps them (its folder, or its S3 bucket): sealed there, read back identical through the gateway, and
    opened by the patient's key in the org's store. Erasing the patient deletes both blobs and destroys that key:
    the Binaries are gone (410), and a copy of the sealed blobs kept from before opens no more."""
    hospital, place = gateways["HospitalOrg"], hospital_blobs
    gen = synthetic.Synthetic.seeded(None)
    patient_id, _ = record_with(hospital, gen.patient(f"MPI-BE-{uuid.uuid4().hex[:8]}"), [])
    token = {"Authorization": f"Bearer {hospital.token()}"}
    scan = os.urandom(2 * MiB + 5)  # three chunks, the last one short
    sent = {**token, "Content-Type": "application/dicom", "X-Security-Context": f"Patient/{patient_id}"}
    up = hospital.http.post("/Binary", content=scan, headers=sent)
    assert up.status_code == 201, up.text
    text = b"Impression: no acute cardiopulmonary findings. Dictated for the record."
    report = {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "presentedForm": [{"contentType": "text/plain", "data": base64.b64encode(text).decode()}],
    }
    made = hospital.post("/DiagnosticReport", report)
    assert made.status_code == 201, made.text
    attachment = hospital.get(f"/DiagnosticReport/{made.json()['id']}").json()["presentedForm"][0]
    assert "data" not in attachment and attachment["url"].startswith("Binary/") and attachment["size"] == len(text)
    contents = {up.json()["id"]: scan, attachment["url"].removeprefix("Binary/"): text}

    def read(binary_id: str, accept: str = "*/*") -> httpx.Response:
        return hospital.http.get(f"/Binary/{binary_id}", headers={**token, "Accept": accept})

    names: dict[str, str] = {}
    for binary_id, content in contents.items():
        assert read(binary_id).content == content
        pointer = blobs.blob_of(read(binary_id, "application/fhir+json").json())
        assert pointer is not None
        name = blobs.name_of(str(pointer["url"]))
        assert name is not None and place.holds(name), binary_id
        names[binary_id] = name
    if place.bucket_url:
        assert place.objects() == {f"blobs/{name}" for name in names.values()}  # nothing else, no leftover parts

    store = CustodianSettings.load(network, "HospitalOrg").open_store()
    head = store.head("Binary", up.json()["id"])
    assert head is not None
    patient_key = head[1]  # the pseudonym the patient's data is kept under

    async def sealed(backend: blobs.BlobBackend) -> dict[str, bytes]:
        return {binary_id: b"".join([piece async for piece in backend.get(name)]) for binary_id, name in names.items()}

    async def opened(backend: blobs.BlobBackend) -> dict[str, bytes]:
        keyed = blobs.Blobs(backend, store.digest_key)
        return {
            binary_id: b"".join([piece async for piece in keyed.get(patient_key, name)])
            for binary_id, name in names.items()
        }

    kept = place.run(sealed)
    for binary_id, content in contents.items():
        assert kept[binary_id].startswith(blobs.MAGIC) and content[:32] not in kept[binary_id]
    assert place.run(opened) == contents

    erased = hospital.post(f"/Patient/{patient_id}/$erase", {})
    assert erased.status_code == 200, erased.text
    for binary_id, name in names.items():
        assert read(binary_id).status_code == 410
        assert not place.holds(name)
    if place.bucket_url:
        assert place.objects() == set()

    async def restored(backend: blobs.BlobBackend) -> None:
        """Put the kept copies back, as from a backup, and try to open them."""
        for binary_id, name in names.items():
            await backend.publish(await backend.put(body_of(kept[binary_id])), name)
        try:
            with pytest.raises(PatientErased):
                await opened(backend)
        finally:
            for name in names.values():
                await backend.delete(name)

    place.run(restored)
    store.close()


# ----- The insurer's records review -------------------------------------------------------------------------------

REVIEW_CODE = "97110"  # config/workers/InsurerOrg.yaml: a line with this code is paid after a records review
REVIEWED = {  # what a records review needs of the record: these elements, of these types only
    "Observation.code",
    "Observation.status",
    "Observation.value[x]",
    "Observation.effective[x]",
    "Procedure.code",
    "Procedure.status",
    "Procedure.performed[x]",
}
PERFORMER = "Dr. Quill Hartwell"
NOTE = "the patient's neighbour drove her in"


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (result := check()) is not None:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextmanager
def insurer_workers(network: Topology) -> Iterator[Path]:
    """The insurer's chain-event listener and Celery worker with the insurer's own settings (config/workers),
    stopped afterwards if started here; yields the worker's log file."""
    started = worker_cli.start_listener(network, "InsurerOrg"), worker_cli.start_worker(network, "InsurerOrg")
    try:
        yield worker_cli.worker_process(network, "InsurerOrg").log_file
    finally:
        if started[0]:
            worker_cli.listener_process(network, "InsurerOrg").stop()
        if started[1]:
            worker_cli.worker_process(network, "InsurerOrg").stop(timeout=30)


def test_the_insurers_records_review_receives_only_the_elements_a_claim_line_needs(
    network: Topology,
    gateways: dict[str, GatewayHttp],
    gateway_as: Callable[..., Gateway],
    member_client: Callable[[str], httpx.Client],
) -> None:
    """A claim line whose code needs a records review is decided by the insurer's worker once the provider has
    disclosed what the review needs. The patient let the insurer read the whole record for payment, yet the request
    the worker sent (as its log names it) asks only for the Observations' and Procedures' code, status, value and
    date, and what the provider answers it (asked again with the insurer's certificate) holds exactly those elements
    of exactly the patient's Observations and Procedure: each proven against its digest on chain, and never a
    performer, a note, the subject, or another resource of the record. The line is paid, and the provider's access
    log on chain shows the insurer's reads, permitted."""
    hospital, insurer = gateways["HospitalOrg"], gateways["InsurerOrg"]
    mpi = f"MPI-RR-{uuid.uuid4().hex[:8]}"
    gen = synthetic.Synthetic.seeded(hash(mpi) % 1000)
    patient = gen.patient(mpi)
    lab = obs("urn:uuid:p", "laboratory", "718-7", 13.1, "2026-03-01T10:00:00Z")
    vital = obs("urn:uuid:p", "vital-signs", "8867-4", 71.0, "2026-03-01T09:55:00Z")
    for o, text in ((lab, "Hemoglobin"), (vital, "Heart rate")):
        o["code"]["text"] = text
        o["performer"] = [{"display": PERFORMER}]
    procedure = gen.clinical("urn:uuid:p", 8) | {
        "performedDateTime": "2026-03-01T11:00:00Z",
        "performer": [{"actor": {"display": PERFORMER}}],
        "note": [{"text": NOTE}],
    }
    others = [immunization("urn:uuid:p", "140"), gen.clinical("urn:uuid:p", 7)]
    patient_id, locations = record_with(hospital, patient, [lab, vital, procedure, *others])
    reviewable = locations[:3]
    granted = hospital.post("/Consent", synthetic.consent(patient_id, "InsurerMSP", "HPAYMT"))  # the whole record
    assert granted.status_code == 201, granted.text
    year = datetime.date.today().year
    covered = insurer.post("/Coverage", synthetic.coverage(mpi, "InsurerMSP", f"{year}-01-01", f"{year + 1}-12-31"))
    assert covered.status_code == 201, covered.text
    today = datetime.date.today().isoformat()
    filed = hospital.post(
        "/Claim", synthetic.claim(patient_id, "InsurerMSP", [(REVIEW_CODE, 1, "60.00")], today, "Coverage/t")
    )
    assert filed.status_code == 201, filed.text
    claim_id = claim_key(filed.json())
    claims = gateway_as("InsurerOrg").network("claims").contract("careledger")

    def decided() -> dict[str, Any] | None:
        on_chain: dict[str, Any] = json.loads(claims.evaluate("Claims:Get", args=[claim_id]))
        return None if on_chain["status"] == "submitted" else on_chain

    with insurer_workers(network) as worker_log:
        on_chain = wait_until(decided, 240, "the insurer's worker to decide the claim")
    assert on_chain["status"] in ("adjudicated", "paid") and on_chain["outcome"] == "approved", on_chain
    lines = json.loads(claims.evaluate("Claims:AdjudicationOf", args=[claim_id]))["lines"]
    assert [(line["outcome"], line.get("reasons") or []) for line in lines] == [("approved", [])]

    # The worker's request, as its log has it (httpx logs each request it sends).
    request = re.compile(
        r"HTTP Request: GET (\S+/federation/disclosures/"
        + re.escape(on_chain["patient"])
        + r'\?\S+) "HTTP/[\d.]+ (\d+)'
    )
    sent = [m.groups() for line in worker_log.read_text(errors="replace").splitlines() if (m := request.search(line))]
    assert sent, f"{worker_log} names no disclosure request for the claim's patient"
    url, status = sent[-1]
    assert status == "200"
    asked = parse_qs(urlsplit(url).query)
    assert asked["purpose"] == ["HPAYMT"]
    assert sorted(asked["element"]) == sorted(REVIEWED)
    audit = hospital.get("/AuditEvent", params={"patient": patient_id}).json()["entry"]
    reads = {(e["resource"]["outcome"], e["resource"]["agent"][0]["who"]["identifier"]["value"]) for e in audit}
    assert reads == {("0", "InsurerMSP")}

    answer = member_client("InsurerOrg").get(url)
    assert answer.status_code == 200, answer.text
    for secret in (PERFORMER, NOTE, mpi, patient["birthDate"]):
        assert secret not in answer.text
    store = CustodianSettings.load(network, "HospitalOrg").open_store()
    expected_keys = {store.ledger_key(*loc.split("/")) for loc in reviewable}
    store.close()
    documents = answer.json()["disclosures"]
    assert sorted(d["resourceKey"] for d in documents) == sorted(expected_keys)
    elements = {
        "Observation": {"resourceType", "code", "status", "valueQuantity", "effectiveDateTime"},
        "Procedure": {"resourceType", "code", "status", "performedDateTime"},
    }
    providers = gateway_as("HospitalOrg").network("providers").contract("careledger")
    for document in documents:
        record = json.loads(providers.evaluate("Records:Get", args=[document["resourceKey"], str(document["version"])]))
        checked = disclosure.verify(document, record)
        assert checked.ok, checked.reason
        assert set(checked.resource) == elements[document["resourceType"]], checked.resource
