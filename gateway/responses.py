"""FHIR JSON responses: resources with their version headers, transaction entries, searchset Bundles."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import JSONResponse

from gateway.outcome import FHIR_JSON
from records.service import Written, etag
from records.store import Cursor, Stored


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


def page_links(request: Request, next_page: Cursor | None) -> list[dict[str, str]]:
    """`self` (the request as made) and, when there is more, `next`: the same request with the next page's cursor."""
    base = f"{base_url(request)}{request.url.path}"
    params = list(request.query_params.multi_items())
    links = [{"relation": "self", "url": f"{base}?{urlencode(params)}" if params else base}]
    if next_page is not None:
        onward = [(k, v) for k, v in params if k != "_cursor"] + [("_cursor", next_page.encode())]
        links.append({"relation": "next", "url": f"{base}?{urlencode(onward)}"})
    return links


def searchset_bundle(entries: list[dict[str, Any]], total: int | None, links: list[dict[str, str]]) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    return bundle | {"link": links, "entry": entries}


def searchset(
    request: Request, resources: list[dict[str, Any]], total: int | None, next_page: Cursor | None = None
) -> dict[str, Any]:
    """A searchset Bundle of this server's resources with self and next links (pages go forward by cursor; there is
    no previous link: a client that wants a page again keeps its link)."""
    base = base_url(request)
    entries = [match(f"{base}/fhir/{r['resourceType']}/{r['id']}", r) for r in resources]
    return searchset_bundle(entries, total, page_links(request, next_page))
