"""FHIR JSON responses: resources with their version headers, transaction entries, searchset Bundles."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import JSONResponse

from gateway.outcome import FHIR_JSON
from records.service import Written, etag
from records.store import Stored


class FhirResponse(JSONResponse):
    media_type = FHIR_JSON

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()


def resource_response(stored: Stored, status: int = 200) -> FhirResponse:
    headers = {"ETag": etag(stored.version), "Last-Modified": stored.last_updated}
    return FhirResponse(json.loads(stored.content), status_code=status, headers=headers)


def written_response(w: Written) -> FhirResponse:
    headers = {"Location": location(w), "ETag": etag(w.version)}
    return FhirResponse(w.resource, status_code=201 if w.created else 200, headers=headers)


def location(w: Written) -> str:
    return f"{w.type}/{w.id}/_history/{w.version}"


def entry_response(w: Written) -> dict[str, Any]:
    return {
        "status": "201 Created" if w.created else "200 OK",
        "location": location(w),
        "etag": etag(w.version),
        "lastModified": w.last_updated,
    }


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def match(full_url: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": full_url, "resource": resource, "search": {"mode": "match"}}


def searchset(
    request: Request, resources: list[dict[str, Any]], total: int, offset: int = 0, count: int | None = None
) -> dict[str, Any]:
    """A searchset Bundle with self/next/previous links that repeat the query with another `_offset`."""
    base = base_url(request)

    def link(relation: str, at: int) -> dict[str, str]:
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "_offset"] + [("_offset", str(at))]
        return {"relation": relation, "url": f"{base}{request.url.path}?{urlencode(params)}"}

    links = [link("self", offset)]
    if count is not None and offset + count < total:
        links.append(link("next", offset + count))
    if count is not None and offset > 0:
        links.append(link("previous", max(0, offset - count)))
    entries = [match(f"{base}/fhir/{r['resourceType']}/{r['id']}", r) for r in resources]
    return {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links, "entry": entries}
