"""An S3-compatible object store as a blob backend: path-style requests signed with AWS Signature Version 4, over
httpx, streaming both ways.

Uploads are multipart (8 MiB parts, so a part is the most held in memory), under `tmp/<random>`; `publish` copies the
object to its name on the server (CopyObject, objects up to 5 GiB) and deletes the temporary one. Downloads stream
the object's body. The bucket is created when missing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import httpx

from records.blobs import BlobNotFound

PART = 8 * 1024 * 1024
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class S3Config:
    endpoint: str  # http(s)://host:port
    bucket: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    prefix: str = "blobs/"


def _encode(text: str, safe: str = "") -> str:
    return quote(text, safe="-_.~" + safe)


def signature_v4(
    method: str,
    host: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    payload_sha256: str,
    access_key: str,
    secret_key: str,
    region: str,
    amz_date: str,
) -> str:
    """The Authorization header of a request (AWS Signature Version 4, service s3). `headers` are the headers to
    sign besides host, x-amz-content-sha256 and x-amz-date."""
    signed = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
    signed |= {"host": host, "x-amz-content-sha256": payload_sha256, "x-amz-date": amz_date}
    names = sorted(signed)
    canonical = "\n".join(
        [
            method,
            _encode(path, "/"),
            "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(query.items())),
            "".join(f"{n}:{signed[n]}\n" for n in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    day = amz_date[:8]
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = f"AWS4{secret_key}".encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"AWS4-HMAC-SHA256 Credential={access_key}/{scope},SignedHeaders={';'.join(names)},Signature={sig}"


class S3Error(Exception):
    pass


class S3Backend:
    def __init__(self, config: S3Config, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0))
        self._host = httpx.URL(config.endpoint).netloc.decode()
        self._bucket_ready = False

    async def aclose(self) -> None:
        await self._client.aclose()

    def _request(
        self, method: str, key: str, query: Mapping[str, str] | None = None, body: bytes = b"", **extra: str
    ) -> httpx.Request:
        path = f"/{self.config.bucket}" + (f"/{key}" if key else "")
        query = dict(query or {})
        digest = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        amz_date = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        c = self.config
        auth = signature_v4(
            method, self._host, path, query, extra, digest, c.access_key, c.secret_key, c.region, amz_date
        )
        headers = {**extra, "x-amz-content-sha256": digest, "x-amz-date": amz_date, "Authorization": auth}
        url = self.config.endpoint.rstrip("/") + _encode(path, "/")
        if query:  # encoded exactly as signed
            url += "?" + "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(query.items()))
        return self._client.build_request(method, url, headers=headers, content=body or None)

    async def _send(self, request: httpx.Request, ok: tuple[int, ...] = (200,)) -> httpx.Response:
        r = await self._client.send(request)
        if r.status_code not in ok:
            raise S3Error(f"{request.method} {request.url.path}: {r.status_code} {r.text[:300]}")
        return r

    async def ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        r = await self._client.send(self._request("HEAD", ""))
        if r.status_code == 404:
            await self._send(self._request("PUT", ""), (200, 409))
        elif r.status_code != 200:
            raise S3Error(f"bucket {self.config.bucket}: {r.status_code}")
        self._bucket_ready = True

    def _key(self, name: str) -> str:
        if not name.isalnum():
            raise BlobNotFound(name)
        return self.config.prefix + name

    async def put(self, chunks: AsyncIterator[bytes]) -> str:
        await self.ensure_bucket()
        temporary = uuid.uuid4().hex
        key = f"tmp/{temporary}"
        created = await self._send(self._request("POST", key, {"uploads": ""}))
        match = re.search(r"<UploadId>([^<]+)</UploadId>", created.text)
        if match is None:
            raise S3Error("CreateMultipartUpload answered no UploadId")
        upload = match.group(1)
        etags: list[str] = []
        try:
            part = bytearray()
            async for chunk in chunks:
                part += chunk
                if len(part) >= PART:
                    etags.append(await self._part(key, upload, len(etags) + 1, bytes(part)))
                    part.clear()
            if part or not etags:
                etags.append(await self._part(key, upload, len(etags) + 1, bytes(part)))
            body = "".join(
                f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>" for n, etag in enumerate(etags, 1)
            )
            done = f"<CompleteMultipartUpload>{body}</CompleteMultipartUpload>".encode()
            r = await self._send(self._request("POST", key, {"uploadId": upload}, done))
            if "<Error>" in r.text:
                raise S3Error(f"CompleteMultipartUpload: {r.text[:300]}")
        except BaseException:
            await self._client.send(self._request("DELETE", key, {"uploadId": upload}))
            raise
        return temporary

    async def _part(self, key: str, upload: str, number: int, data: bytes) -> str:
        r = await self._send(self._request("PUT", key, {"partNumber": str(number), "uploadId": upload}, data))
        return r.headers["etag"]

    async def publish(self, temporary: str, name: str) -> None:
        target, source = self._key(name), f"tmp/{temporary}"
        if not await self.exists(name):
            copy_source = f"/{self.config.bucket}/{source}"
            await self._send(self._request("PUT", target, None, b"", **{"x-amz-copy-source": copy_source}))
        await self._send(self._request("DELETE", source), (200, 204))

    async def get(self, name: str) -> AsyncIterator[bytes]:
        request = self._request("GET", self._key(name))
        r = await self._client.send(request, stream=True)
        try:
            if r.status_code == 404:
                raise BlobNotFound(name)
            if r.status_code != 200:
                raise S3Error(f"GET {name}: {r.status_code}")
            async for piece in r.aiter_bytes(1024 * 1024):
                yield piece
        finally:
            await r.aclose()

    async def exists(self, name: str) -> bool:
        r = await self._client.send(self._request("HEAD", self._key(name)))
        return r.status_code == 200

    async def delete(self, name: str) -> None:
        await self._send(self._request("DELETE", self._key(name)), (200, 204))
