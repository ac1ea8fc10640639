"""Topic-based subscriptions (Subscriptions R5 Backport IG on R4): topic discovery, the Subscription resource an org's
own system manages at its own gateway, and the `$status` and `$events` operations. What they mean, and how the
workers deliver notifications, is in `records.subscriptions`, `workers.subscriptions` and docs/SUBSCRIPTIONS.md.

Subscriptions belong to a backend system: every route needs a `system/` scope for Subscription (a `patient/` token
is refused). Topic definitions need only a valid token.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from gateway.auth import Grant, require
from gateway.deps import BodyDep, ClientDep, Scope, ServicesDep, negotiate
from gateway.outcome import HttpProblem, operation_outcome
from gateway.responses import FhirResponse, base_url, match, resource_response
from records import subscriptions as sub
from records import validation as fv
from records.errors import Issue, NotHeld, PreconditionFailed
from records.service import Records, etag
from records.store import Stored

router = APIRouter(prefix="/fhir", dependencies=[Depends(negotiate)])


def _system(grant: Grant) -> Grant:
    if grant.patient is not None:
        raise HttpProblem(403, "forbidden", "subscriptions belong to a backend system: a system/ scope is needed")
    return grant


class SystemScope(Scope):
    async def __call__(self, request: Request, client: ClientDep) -> Grant:
        return _system(await super().__call__(request, client))


Reader = Annotated[Grant, Depends(SystemScope("r", "Subscription"))]
Searcher = Annotated[Grant, Depends(SystemScope("s", "Subscription"))]
Creator = Annotated[Grant, Depends(SystemScope("c", "Subscription"))]
Deleter = Annotated[Grant, Depends(SystemScope("d", "Subscription"))]


def _base(request: Request) -> str:
    return f"{base_url(request)}/fhir"


# ----- topics -------------------------------------------------------------------------------------------------------


@router.get("/SubscriptionTopic")
async def topics(request: Request, svc: ServicesDep, client: ClientDep, url: str | None = None) -> FhirResponse:
    """The topics this org can subscribe to (R4B SubscriptionTopic resources), optionally the one with `url`."""
    found = [t for t in sub.topics_for(svc.records.custodian.kind) if url in (None, t.url)]
    entries = [match(f"{_base(request)}/SubscriptionTopic/{t.code}", sub.topic_resource(t)) for t in found]
    return FhirResponse({"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries})


@router.get("/SubscriptionTopic/{code}")
async def topic(code: str, svc: ServicesDep, client: ClientDep) -> FhirResponse:
    found = sub.TOPIC_BY_CODE.get(code)
    if found is None or found.audience != svc.records.custodian.kind:
        raise HttpProblem(404, "not-found", f"SubscriptionTopic/{code[:64]} is not a topic of this server")
    return FhirResponse(sub.topic_resource(found))


# ----- the Subscription resource ------------------------------------------------------------------------------------


def _checked(records: Records, body: bytes, svc: ServicesDep) -> dict[str, Any]:
    resource = fv.parse_json(body, svc.config.limits)
    if not isinstance(resource, dict) or resource.get("resourceType") != "Subscription":
        raise HttpProblem(400, "structure", "the body is a Subscription resource", "Subscription")
    sub.validate(resource, records.custodian.kind, lambda v: sub.resolve_patient(records, v) is not None)
    return resource


def _written(stored: Stored | None, created: bool) -> FhirResponse:
    if stored is None:  # a write that wrote nothing can only come from a bug
        raise RuntimeError("a Subscription write returned nothing")
    response = resource_response(stored, 201 if created else 200)
    response.headers["Location"] = f"Subscription/{stored.id}/_history/{stored.version}"
    return response


@router.post("/Subscription")
async def create(svc: ServicesDep, body: BodyDep, grant: Creator) -> FhirResponse:
    """A new subscription: `requested` until its handshake was accepted (`off` if asked), its id chosen here."""
    resource = _checked(svc.records, body, svc)
    sid = str(uuid.uuid4())
    stored = await sub.save(svc.records, sid, lambda newest: sub.client_write(resource, None))
    return _written(stored, True)


@router.put("/Subscription/{rid}")
async def update(rid: str, request: Request, svc: ServicesDep, client: ClientDep, body: BodyDep) -> FhirResponse:
    """Change a subscription (its channel, filters, or status: `off` to stop, `requested`/`active` to resume), or
    create one with this id. The server keeps `status` and `error`: see `records.subscriptions.client_write`."""
    rid = fv.check_id(rid, "Subscription id")
    head = svc.records.store.head("Subscription", rid)
    _system(require(client, "Subscription", "u" if head else "c"))
    resource = _checked(svc.records, body, svc)
    if resource.get("id") not in (None, rid):
        raise HttpProblem(400, "value", f"the id differs from the URL's ({rid})", "Subscription.id")
    if_match = request.headers.get("if-match")
    if if_match is not None and if_match.strip() != (etag(head[0]) if head else None):
        raise PreconditionFailed(f"If-Match {if_match[:40]} is not the current version")

    def change(newest: Stored | None) -> dict[str, Any]:
        return sub.client_write(resource, json.loads(newest.content) if newest is not None else None)

    return _written(await sub.save(svc.records, rid, change), head is None)


@router.get("/Subscription/$status")
async def status_of_many(request: Request, svc: ServicesDep, grant: Reader) -> FhirResponse:
    """`$status` at the type level: every subscription here, or those named by `id`, with one of `status`."""
    ids = set(request.query_params.getlist("id"))
    statuses = {s for v in request.query_params.getlist("status") for s in v.split(",") if s}
    answers = [
        (s, sub.events_kept(svc.records, s.id))
        for s in sub.all_subscriptions(svc.records)
        if (not ids or s.id in ids) and (not statuses or s.status in statuses)
    ]
    return FhirResponse(sub.status_bundle(_base(request), answers))


@router.get("/Subscription")
async def search(request: Request, svc: ServicesDep, grant: Searcher) -> FhirResponse:
    """Subscriptions here, by `status` (token, comma for any of), `url` (the endpoint) or `criteria` (the topic)."""
    params = request.query_params
    unknown = set(params) - {"status", "url", "criteria", "_format"}
    if unknown:
        raise HttpProblem(
            400, "not-supported", f"Subscription is searched by status, url, criteria; not {sorted(unknown)}"
        )
    statuses = {s for v in params.getlist("status") for s in v.split(",") if s}
    found = [
        s
        for s in sub.all_subscriptions(svc.records)
        if (not statuses or s.status in statuses)
        and params.get("url") in (None, s.channel.endpoint)
        and params.get("criteria") in (None, s.topic.url)
    ]
    entries = [match(f"{_base(request)}/Subscription/{s.id}", s.resource) for s in found]
    return FhirResponse({"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries})


@router.get("/Subscription/{rid}")
async def read(rid: str, svc: ServicesDep, grant: Reader) -> FhirResponse:
    return resource_response(svc.records.read("Subscription", fv.check_id(rid, "Subscription id")))


@router.delete("/Subscription/{rid}")
async def delete(rid: str, svc: ServicesDep, grant: Deleter) -> FhirResponse:
    """Turn a subscription off for good: nothing more is numbered or sent for it. The resource and its kept
    notifications stay (status `off`) for `$events` and audit; a PUT with status `requested` can resume it."""
    rid = fv.check_id(rid, "Subscription id")
    if svc.records.store.head("Subscription", rid) is None:
        raise NotHeld(f"Subscription/{rid} is not held here")
    await sub.set_status(svc.records, rid, "off")
    outcome = operation_outcome([Issue("informational", "", f"Subscription/{rid} is off")], "information")
    return FhirResponse(outcome)


# ----- operations ---------------------------------------------------------------------------------------------------


@router.get("/Subscription/{rid}/$status")
async def status(rid: str, request: Request, svc: ServicesDep, grant: Reader) -> FhirResponse:
    """The subscription's status, its event count and its error (a searchset with one status Parameters)."""
    s = sub.read(svc.records, fv.check_id(rid, "Subscription id"))
    return FhirResponse(sub.status_bundle(_base(request), [(s, sub.events_kept(svc.records, s.id))]))


def _number(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 18 or int(value) < 1:
        raise HttpProblem(400, "value", f"{name} is an event number (1, 2, ...), not {value[:20]!r}", name)
    return int(value)


@router.get("/Subscription/{rid}/$events")
async def events(rid: str, request: Request, svc: ServicesDep, client: ClientDep, grant: Reader) -> FhirResponse:
    """The kept notifications of events `eventsSinceNumber` to `eventsUntilNumber` (inclusive; at most
    `records.subscriptions.EVENTS_PAGE` at a time, the newest ones when no start is given), as one history Bundle.
    `content` (empty | id-only | full-resource) can narrow what each carried, never widen it; resources the token
    may not read are given by reference only."""
    s = sub.read(svc.records, fv.check_id(rid, "Subscription id"))
    content = request.query_params.get("content") or s.channel.content
    if content not in sub.CONTENTS:
        raise HttpProblem(400, "code-invalid", f"content is one of {', '.join(sub.CONTENTS)}", "content")
    count = sub.events_kept(svc.records, s.id)
    since, until = _number(request, "eventsSinceNumber"), _number(request, "eventsUntilNumber")
    until = min(until or count, count)
    since = since or max(1, until - sub.EVENTS_PAGE + 1)
    until = min(until, since + sub.EVENTS_PAGE - 1)

    def may_read(rtype: str) -> bool:
        return client.grant(rtype, "r") is not None

    kept = []
    for n in range(since, until + 1):
        found = sub.kept_notification(svc.records, s.id, n)
        if found is not None:
            kept.append(sub.hydrated(svc.records, sub.narrowed(found, content), may_read))
    return FhirResponse(sub.events_bundle(s, _base(request), count, kept, content))
