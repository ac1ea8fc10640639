"""Blobs: the chunked encryption format (round trips, every way of tampering), per-patient keys and erasure, the
S3 request signature (AWS's published example), and the Binary routes and attachments over the in-memory ledger."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from records import blobs
from records.blobs import CHUNK, Blobs, FileBackend
from records.errors import PatientErased, Tampered
from records.s3 import signature_v4
from tests import fhir_samples as fhir
from tests.unit.gateway_harness import Gateway


class Keys:
    def __init__(self) -> None:
        self.erased: set[str] = set()

    def __call__(self, patient: str) -> bytes:
        if patient in self.erased:
            raise PatientErased("erased")
        return hashlib.sha256(patient.encode()).digest()


async def pieces(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([p async for p in stream])


@pytest.fixture
def store(tmp_path: Path) -> tuple[Blobs, Keys, Path]:
    keys = Keys()
    return Blobs(FileBackend(tmp_path / "blobs"), keys), keys, tmp_path / "blobs"


def blob_file(root: Path, name: str) -> Path:
    return root / name[:2] / name[2:4] / name


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17])
def test_round_trip_at_every_chunk_boundary(store: tuple[Blobs, Keys, Path], size: int) -> None:
    b, _, root = store
    data = os.urandom(size)
    info = asyncio.run(b.put("p" * 64, pieces(data)))
    assert info.size == size and info.sha1 == base64.b64encode(hashlib.sha1(data).digest()).decode()
    assert asyncio.run(collect(b.get("p" * 64, info.name))) == data
    on_disk = blob_file(root, info.name).read_bytes()
    chunks = max(1, -(-size // CHUNK))
    assert len(on_disk) == blobs.HEADER_LEN + size + 16 * chunks
    if size >= 64:
        assert data[:64] not in on_disk  # nothing in the clear


def test_content_addressed_per_patient(store: tuple[Blobs, Keys, Path]) -> None:
    b, _, root = store
    data = b"the same scan" * 1000
    one = asyncio.run(b.put("a" * 64, pieces(data)))
    again = asyncio.run(b.put("a" * 64, pieces(data)))
    other = asyncio.run(b.put("b" * 64, pieces(data)))
    assert one.name == again.name != other.name
    assert not list((root / "tmp").iterdir())
    with pytest.raises(Tampered):  # another patient's key opens nothing
        asyncio.run(collect(b.get("b" * 64, one.name)))


def test_contents_stored_together_are_each_their_patient_s_blob(store: tuple[Blobs, Keys, Path]) -> None:
    b, _, _ = store
    contents = [("a" * 64, b"note one"), ("b" * 64, b"note one"), ("a" * 64, b"note two"), ("a" * 64, b"")]
    infos = asyncio.run(b.put_all(contents))
    singly = [asyncio.run(b.put(patient, pieces(raw))) for patient, raw in contents]
    assert [i.name for i in infos] == [i.name for i in singly] and len({i.name for i in infos}) == 4
    for (patient, raw), info in zip(contents, infos, strict=True):
        assert asyncio.run(collect(b.get(patient, info.name))) == raw


def test_a_copy_with_its_own_attachments_leaves_the_resource_as_it_was() -> None:
    report = {
        "resourceType": "DiagnosticReport",
        "code": {"text": "shared"},
        "presentedForm": [{"contentType": "text/plain", "data": "aGk="}],
    }
    document = {"resourceType": "DocumentReference", "content": [{"attachment": {"data": "aGk="}, "format": {}}]}
    for resource in (report, document):
        before = json.loads(json.dumps(resource))
        copy = blobs.with_own_attachments(resource)
        for att in blobs.attachments(copy):
            att["url"] = "Binary/x"
            del att["data"]
        assert resource == before and copy != before
        assert all(
            att == {"url": "Binary/x"} | {k: v for k, v in att.items() if k == "contentType"}
            for att in blobs.attachments(copy)
        )
    assert blobs.with_own_attachments(report)["code"] is report["code"]  # what holds no attachment is shared


def test_every_kind_of_tampering_is_detected(store: tuple[Blobs, Keys, Path]) -> None:
    b, _, root = store
    data = os.urandom(3 * CHUNK + 100)
    info = asyncio.run(b.put("p" * 64, pieces(data)))
    path = blob_file(root, info.name)
    original = path.read_bytes()
    sealed = CHUNK + 16
    h = blobs.HEADER_LEN
    body = original[h:]
    cases = {
        "flipped bit": original[: h + 5] + bytes([original[h + 5] ^ 1]) + original[h + 6 :],
        "truncated at a chunk boundary": original[: h + 2 * sealed],
        "last chunk dropped, a full chunk marked last": original[: h + 3 * sealed],
        "chunks swapped": original[:h] + body[sealed : 2 * sealed] + body[:sealed] + body[2 * sealed :],
        "chunk repeated": original[:h] + body[:sealed] + body,
        "header salt changed": original[:10] + bytes([original[10] ^ 1]) + original[11:],
        "cut to the header": original[:h],
    }
    for what, forged in cases.items():
        path.write_bytes(forged)
        with pytest.raises(Tampered):
            asyncio.run(collect(b.get("p" * 64, info.name)))
        assert what
    # A whole valid blob of the same patient put under another name: decrypts, but is not what the name says.
    other = asyncio.run(b.put("p" * 64, pieces(b"something else")))
    path.write_bytes(blob_file(root, other.name).read_bytes())
    got: list[bytes] = []

    async def read() -> None:
        async for p in b.get("p" * 64, info.name):
            got.append(p)

    with pytest.raises(Tampered, match="not what its name commits to"):
        asyncio.run(read())
    assert got == []  # the (only, last) chunk was withheld


def test_an_erased_patient_s_blobs_cannot_be_read(store: tuple[Blobs, Keys, Path]) -> None:
    b, keys, _ = store
    info = asyncio.run(b.put("p" * 64, pieces(b"x-ray")))
    keys.erased.add("p" * 64)
    with pytest.raises(PatientErased):
        asyncio.run(collect(b.get("p" * 64, info.name)))


def test_sigv4_matches_aws_published_example() -> None:
    """AWS's Signature Version 4 example for S3 (GET /test.txt with a Range header)."""
    auth = signature_v4(
        "GET",
        "examplebucket.s3.amazonaws.com",
        "/test.txt",
        {},
        {"Range": "bytes=0-9"},
        hashlib.sha256(b"").hexdigest(),
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "us-east-1",
        "20130524T000000Z",
    )
    assert auth == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def patient_bundle(mpi: str, extra: list[dict[str, Any]]) -> dict[str, Any]:
    patient = json.loads(json.dumps(fhir.PATIENTS[0]))
    patient.pop("id")
    patient["identifier"][0]["value"] = mpi
    entries = [{"fullUrl": "urn:uuid:p", "resource": patient, "request": {"method": "POST", "url": "Patient"}}]
    entries += [
        {"fullUrl": f"urn:uuid:x{i}", "resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
        for i, r in enumerate(extra)
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def report(patient_ref: str, attachment: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}]},
        "subject": {"reference": patient_ref},
        "presentedForm": [attachment],
    }


def test_binary_routes_and_attachments(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)

    async def scenario(g: Gateway) -> None:
        r = await g.post("/fhir", patient_bundle("MPI-B1", []))
        patient = r.json()["entry"][0]["response"]["location"].split("/_history")[0]
        r = await g.post("/fhir", patient_bundle("MPI-B2", []))
        stranger = r.json()["entry"][0]["response"]["location"].split("/_history")[0]
        content = os.urandom(2 * CHUNK + 5)
        up = await g.post(
            "/fhir/Binary", content, **{"Content-Type": "application/dicom", "X-Security-Context": patient}
        )
        assert up.status_code == 201, up.text
        binary = up.json()
        assert "data" not in binary and binary["contentType"] == "application/dicom"
        blob = blobs.blob_of(binary)
        assert blob is not None and blob["size"] == len(content)
        down = await g.get(f"/fhir/Binary/{binary['id']}", Accept="*/*")
        assert down.status_code == 200 and down.content == content
        assert down.headers["content-type"] == "application/dicom"
        meta = await g.get(f"/fhir/Binary/{binary['id']}", Accept="application/fhir+json")
        assert meta.json()["id"] == binary["id"]
        verified = await g.get(f"/fhir/Binary/{binary['id']}/$verify")
        assert verified.json()["parameter"][0]["valueBoolean"] is True
        # Refusals: no patient, another org's scope, a patient not held here.
        assert (await g.post("/fhir/Binary", b"x", **{"Content-Type": "text/plain"})).status_code == 422
        assert (
            await g.post("/fhir/Binary", b"x", scope="system/Patient.write", **{"X-Security-Context": patient})
        ).status_code == 403
        assert (await g.post("/fhir/Binary", b"x", **{"X-Security-Context": "Patient/nobody"})).status_code == 404

        # An attachment that points at the Binary gets its size and hash; inline data becomes a blob of its own.
        linked = report(patient, {"contentType": "application/dicom", "url": f"Binary/{binary['id']}"})
        note = b"Report text that would otherwise sit in the row."
        inline = report(patient, {"contentType": "text/plain", "data": base64.b64encode(note).decode()})
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": x, "request": {"method": "POST", "url": "DiagnosticReport"}} for x in (linked, inline)
            ],
        }
        r = await g.post("/fhir", bundle)
        assert r.status_code == 200, r.text
        assert len(r.json()["entry"]) == 2
        first, second = [
            await g.get("/fhir/" + e["response"]["location"].split("/_history")[0]) for e in r.json()["entry"]
        ]
        att = first.json()["presentedForm"][0]
        assert att["size"] == len(content) and att["hash"] == blob["hash"]
        att2 = second.json()["presentedForm"][0]
        assert "data" not in att2 and att2["url"].startswith("Binary/") and att2["size"] == len(note)
        assert (await g.get("/fhir/" + att2["url"], Accept="text/plain")).content == note
        # Another patient's Binary, or a hash that contradicts the blob, is refused.
        wrong = report(stranger, {"url": f"Binary/{binary['id']}"})
        assert (await g.post("/fhir/DiagnosticReport", wrong)).status_code == 422
        lying = report(patient, {"url": f"Binary/{binary['id']}", "hash": "AAAA"})
        assert (await g.post("/fhir/DiagnosticReport", lying)).status_code == 422

        # Erasure: the blobs go with the patient.
        pid = patient.split("/")[1]
        erased = await g.post(f"/fhir/Patient/{pid}/$erase", {})
        assert erased.status_code == 200, erased.text
        assert (await g.get(f"/fhir/Binary/{binary['id']}", Accept="*/*")).status_code == 410
        name = blobs.name_of(blob["url"])
        assert name is not None and not await g.records.blobs.backend.exists(name)

    try:
        gw.run(scenario)
    finally:
        gw.close()


def test_erasure_does_not_depend_on_readable_rows(tmp_path: Path) -> None:
    import sqlite3

    gw = Gateway(tmp_path)

    async def scenario(g: Gateway) -> None:
        obs = fhir.observation("x", "x", "718-7", 12.0, "g/dL")
        obs.pop("id")
        obs["subject"] = {"reference": "urn:uuid:p"}
        r = await g.post("/fhir", patient_bundle("MPI-E1", [obs]))
        assert r.status_code == 200, r.text
        patient, observation = (e["response"]["location"].split("/_history")[0] for e in r.json()["entry"])
        up = await g.post("/fhir/Binary", b"scan", **{"Content-Type": "image/png", "X-Security-Context": patient})
        assert up.status_code == 201
        with sqlite3.connect(g.db) as db:  # someone flips a byte of the Observation's ciphertext
            (ct,) = db.execute("SELECT ciphertext FROM resources WHERE id = ?", (observation.split("/")[1],)).fetchone()
            db.execute(
                "UPDATE resources SET ciphertext = ? WHERE id = ?",
                (bytes([ct[0] ^ 1]) + ct[1:], observation.split("/")[1]),
            )
        erased = await g.post(f"/fhir/{patient}/$erase", {})
        assert erased.status_code == 200, erased.text
        name = blobs.name_of(str(blobs.blob_of(up.json())["url"]))  # type: ignore[index]
        assert name is not None and not await g.records.blobs.backend.exists(name)

    try:
        gw.run(scenario)
    finally:
        gw.close()
