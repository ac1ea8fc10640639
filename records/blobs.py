"""Large content off the chain: Binary resources and attachments as encrypted, content-addressed blobs.

A blob is streamed in and out in 1 MiB chunks; nothing holds a whole blob in memory (docs/BLOBS.md).

- Keys: each patient's blob key is derived from the patient's data key (through the store's digest key), so erasing
  the patient (crypto-shredding the data key) makes every blob of theirs unreadable; the blobs themselves are also
  deleted on erasure. Each blob has its own file key, HMAC-SHA-256(blob key, label ‖ random 32-byte salt).
- Format: header `CLB1` ‖ version 0x01 ‖ u32 chunk size ‖ salt (32 bytes), then the chunks, each AES-256-GCM with
  nonce u64(chunk index) ‖ u32(1 for the last chunk, else 0) and the header as associated data: a chunk cannot be
  moved, dropped, repeated, or the blob cut short or extended without decryption failing (the STREAM construction).
- Names: a blob is named by the keyed SHA-256 of its plaintext under the patient's blob-name key (content
  addressed per patient: the same file of another patient has another name, and a name is no oracle for
  guessing content). A download recomputes it and withholds the last chunk unless it matches.
- Backends: the local filesystem (the embedded default, run/gateway/<org>/blobs) or an S3-compatible object store
  (`records.s3`). Both write under a temporary name and move the blob under its name once it is complete.

The Binary resource that points at a blob (`meta.extension` BLOB_EXTENSION: an Attachment with the blob's URL,
size and SHA-1 hash as FHIR defines `Attachment.hash`) is what goes through the write path and is registered on
chain, so the chain's digest commits to the blob's name, size and hash.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import struct
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from records.errors import Tampered

MAGIC, VERSION = b"CLB1", 1
CHUNK = 1024 * 1024
TAG = 16
HEADER_LEN = len(MAGIC) + 1 + 4 + 32
BLOB_KEY_LABEL = b"careledger/blob-key/v1"
BLOB_NAME_LABEL = b"careledger/blob-name/v1"
FILE_KEY_LABEL = b"careledger/blob-file-key/v1"
BLOB_EXTENSION = "urn:careledger:extension:blob"
BLOB_URL_PREFIX = "urn:careledger:blob:"


class BlobBackend(Protocol):
    """Where encrypted blobs live. `put` writes a stream under a temporary name and returns it; `publish` moves it
    under its final name (dropping the temporary copy when the name exists already: same content)."""

    async def put(self, chunks: AsyncIterator[bytes]) -> str: ...

    async def publish(self, temporary: str, name: str) -> None: ...

    def get(self, name: str) -> AsyncIterator[bytes]: ...

    async def exists(self, name: str) -> bool: ...

    async def delete(self, name: str) -> None: ...


class BlobNotFound(Exception):
    pass


@dataclass(frozen=True)
class BlobInfo:
    name: str
    size: int
    sha1: str  # base64, as FHIR's Attachment.hash

    @property
    def url(self) -> str:
        return BLOB_URL_PREFIX + self.name

    def attachment(self, content_type: str) -> dict[str, Any]:
        return {"contentType": content_type, "url": self.url, "size": self.size, "hash": self.sha1}


def _nonce(index: int, last: bool) -> bytes:
    return struct.pack(">QI", index, 1 if last else 0)


class Blobs:
    def __init__(self, backend: BlobBackend, digest_key: Any) -> None:
        """`digest_key(patient) -> bytes`: the store's per-patient digest key (raises once the patient is erased)."""
        self.backend = backend
        self._digest_key = digest_key

    def _keys(self, patient: str) -> tuple[bytes, bytes]:
        base = self._digest_key(patient)
        return (
            hmac.new(base, BLOB_KEY_LABEL, hashlib.sha256).digest(),
            hmac.new(base, BLOB_NAME_LABEL, hashlib.sha256).digest(),
        )

    async def put(self, patient: str, stream: AsyncIterator[bytes], max_bytes: int | None = None) -> BlobInfo:
        """Encrypt and store a stream for the patient; returns its name, size and hash. ValueError past
        `max_bytes` (nothing is kept)."""
        return await self._put(self._keys(patient), stream, max_bytes)

    async def put_all(self, contents: Sequence[tuple[str, bytes]]) -> list[BlobInfo]:
        """Store contents held in memory, (patient, content) each (a bundle's inline attachments): the keys are
        derived once per patient, and the blobs written together, so that their writes to disk overlap."""
        keys = {patient: self._keys(patient) for patient in {p for p, _ in contents}}
        return list(await asyncio.gather(*(self._put(keys[p], one_shot(raw), None) for p, raw in contents)))

    async def _put(self, keys: tuple[bytes, bytes], stream: AsyncIterator[bytes], max_bytes: int | None) -> BlobInfo:
        blob_key, name_key = keys
        salt = os.urandom(32)
        header = MAGIC + bytes([VERSION]) + struct.pack(">I", CHUNK) + salt
        aead = AESGCM(hmac.new(blob_key, FILE_KEY_LABEL + salt, hashlib.sha256).digest())
        namer, sha1 = hmac.new(name_key, digestmod=hashlib.sha256), hashlib.sha1()
        size = 0

        async def encrypted() -> AsyncIterator[bytes]:
            nonlocal size
            yield header
            pending = bytearray()
            index = 0
            async for piece in stream:
                size += len(piece)
                if max_bytes is not None and size > max_bytes:
                    raise ValueError(f"the content is larger than {max_bytes} bytes")
                namer.update(piece)
                sha1.update(piece)
                pending += piece
                while len(pending) > CHUNK:  # keep at least one byte back: the last chunk is marked as such
                    yield aead.encrypt(_nonce(index, False), bytes(pending[:CHUNK]), header)
                    del pending[:CHUNK]
                    index += 1
            yield aead.encrypt(_nonce(index, True), bytes(pending), header)

        temporary = await self.backend.put(encrypted())
        info = BlobInfo(namer.hexdigest(), size, base64.b64encode(sha1.digest()).decode())
        await self.backend.publish(temporary, info.name)
        return info

    async def get(self, patient: str, name: str) -> AsyncIterator[bytes]:
        """The blob's plaintext, chunk by chunk. Tampered when a chunk fails authentication, the blob is cut short,
        or its content is not what its name says (the last chunk is withheld then)."""
        blob_key, name_key = self._keys(patient)
        namer = hmac.new(name_key, digestmod=hashlib.sha256)
        buffer = bytearray()
        header = b""
        aead: AESGCM | None = None
        index = 0
        sealed = CHUNK + TAG

        def opened(ciphertext: bytes, last: bool) -> bytes:
            assert aead is not None
            try:
                return aead.decrypt(_nonce(index, last), ciphertext, header)
            except InvalidTag:
                raise Tampered(f"blob {name}: chunk {index} fails authentication") from None

        async for piece in self.backend.get(name):
            buffer += piece
            if aead is None and len(buffer) >= HEADER_LEN:
                header = bytes(buffer[:HEADER_LEN])
                if header[:4] != MAGIC or header[4] != VERSION or struct.unpack(">I", header[5:9])[0] != CHUNK:
                    raise Tampered(f"blob {name} is not a blob of this format")
                aead = AESGCM(hmac.new(blob_key, FILE_KEY_LABEL + header[9:], hashlib.sha256).digest())
                del buffer[:HEADER_LEN]
            while aead is not None and len(buffer) > sealed:
                plain = opened(bytes(buffer[:sealed]), False)
                del buffer[:sealed]
                index += 1
                namer.update(plain)
                yield plain
        if aead is None or len(buffer) < TAG:
            raise Tampered(f"blob {name} is cut short")
        last = opened(bytes(buffer), True)
        namer.update(last)
        if not hmac.compare_digest(namer.hexdigest(), name):
            raise Tampered(f"blob {name}: the content is not what its name commits to")
        yield last

    async def delete(self, name: str) -> None:
        await self.backend.delete(name)


def blob_of(binary: dict[str, Any]) -> dict[str, Any] | None:
    """The blob attachment a stored Binary points at, if it does."""
    for e in (binary.get("meta") or {}).get("extension") or []:
        if e.get("url") == BLOB_EXTENSION and isinstance(e.get("valueAttachment"), dict):
            return dict(e["valueAttachment"])
    return None


def name_of(url: str) -> str | None:
    return url.removeprefix(BLOB_URL_PREFIX) if url.startswith(BLOB_URL_PREFIX) else None


# ----- the local filesystem ------------------------------------------------------------------------------------------


class FileBackend:
    """Blobs as files under a folder (two levels of fan-out), written to a temporary file and renamed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        if not name.isalnum():
            raise BlobNotFound(name)
        return self.root / name[:2] / name[2:4] / name

    async def put(self, chunks: AsyncIterator[bytes]) -> str:
        temporary = uuid.uuid4().hex
        path = self.root / "tmp" / temporary
        try:
            with open(path, "wb") as f:
                async for chunk in chunks:
                    f.write(chunk)
                f.flush()
                await asyncio.to_thread(os.fsync, f.fileno())  # the disk's wait does not hold up other requests
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return temporary

    async def publish(self, temporary: str, name: str) -> None:
        target = self._path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.root / "tmp" / temporary, target)

    async def get(self, name: str) -> AsyncIterator[bytes]:
        path = self._path(name)
        if not path.exists():
            raise BlobNotFound(name)
        with open(path, "rb") as f:
            while piece := f.read(CHUNK):
                yield piece

    async def exists(self, name: str) -> bool:
        return self._path(name).exists()

    async def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)


# ----- choosing a backend --------------------------------------------------------------------------------------------


def backend_from_env(default_root: Path, env: Any = os.environ) -> BlobBackend:
    """`CARELEDGER_BLOBS`: a folder (default: the org's run/gateway/<org>/blobs) or `s3://<bucket>` with
    `CARELEDGER_S3_ENDPOINT`, `CARELEDGER_S3_ACCESS_KEY`, `CARELEDGER_S3_SECRET_KEY` (and `CARELEDGER_S3_REGION`)."""
    location = env.get("CARELEDGER_BLOBS") or ""
    if location.startswith("s3://"):
        from records.s3 import S3Backend, S3Config

        return S3Backend(
            S3Config(
                endpoint=env["CARELEDGER_S3_ENDPOINT"],
                bucket=location.removeprefix("s3://").strip("/"),
                access_key=env["CARELEDGER_S3_ACCESS_KEY"],
                secret_key=env["CARELEDGER_S3_SECRET_KEY"],
                region=env.get("CARELEDGER_S3_REGION") or "us-east-1",
            )
        )
    return FileBackend(Path(location) if location else default_root)


# ----- attachments ---------------------------------------------------------------------------------------------------

# Where the attachments of a resource are: (element, sub-element or None).
ATTACHMENTS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "DiagnosticReport": (("presentedForm", None),),
    "DocumentReference": (("content", "attachment"),),
    "Media": (("content", None),),
    "Communication": (("payload", "contentAttachment"),),
}


def attachments(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """The Attachment objects of a resource (the objects themselves: changing them changes the resource)."""
    found: list[dict[str, Any]] = []
    for element, sub in ATTACHMENTS.get(str(resource.get("resourceType")), ()):
        value = resource.get(element)
        for item in value if isinstance(value, list) else [value] if isinstance(value, dict) else []:
            target = item.get(sub) if sub and isinstance(item, dict) else item
            if isinstance(target, dict):
                found.append(target)
    return found


def with_own_attachments(resource: dict[str, Any]) -> dict[str, Any]:
    """A copy of the resource whose Attachment objects, and the objects and arrays on the way to them, are its own
    (changing them leaves the resource given as it was); everything else is shared with it."""
    out = dict(resource)
    for element, sub in ATTACHMENTS.get(str(resource.get("resourceType")), ()):
        value = out.get(element)
        if isinstance(value, list):
            out[element] = [_own_item(item, sub) for item in value]
        elif isinstance(value, dict):
            out[element] = _own_item(value, sub)
    return out


def _own_item(item: Any, sub: str | None) -> Any:
    if not isinstance(item, dict):
        return item
    item = dict(item)
    if sub and isinstance(item.get(sub), dict):
        item[sub] = dict(item[sub])
    return item


async def one_shot(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), CHUNK):
        yield data[i : i + CHUNK]
    if not data:
        yield b""
