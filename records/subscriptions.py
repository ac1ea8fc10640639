"""Topic-based subscriptions, the Subscriptions R5 Backport IG's way on FHIR R4 (hl7.fhir.uv.subscriptions-backport).

- Topics: CareLedger's claim events as SubscriptionTopic canonical URLs (`TOPICS`), each for one kind of member, with
  the filters it allows.
- Subscriptions: an R4 `Subscription` of the backport profile (`criteria` = the topic's URL, filters, heartbeat,
  timeout, maxCount and payload content as the IG's extensions), posted by an org's own system to its own gateway
  and kept here as a held resource, never on chain (`records.routes`). `validate` checks one and names the element
  of every problem; `Subscription.status` and `Subscription.error` are the server's (`client_write`).
- Notifications: `history` Bundles whose first entry is the status `Parameters` (backport-subscription-status-r4),
  then the focus per the subscription's content (empty | id-only | full-resource). Each event notification is kept
  here (`keep_notification`) under an id made of the subscription and the event number, so `$events` can replay it.
  A resource held here is kept by reference (its version) and read again when the notification is sent or replayed,
  so a patient's erasure reaches the notifications about them too.

The workers (`workers.subscriptions`) decide which events reach which subscription, number them and deliver; the
gateway (`gateway.routers.subscriptions`) serves the resources and the `$status` and `$events` operations. Both read
the same store, so neither needs the other.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from records import validation as fv
from records.errors import FhirInvalid, Issue, NotHeld, PatientErased, VersionTaken
from records.routes import CLAIM_KEY_SYSTEM
from records.service import Records, now_instant
from records.store import Query, Stored

# ----- names the IG defines -----------------------------------------------------------------------------------------

IG = "http://hl7.org/fhir/uv/subscriptions-backport"
SUBSCRIPTION_PROFILE = f"{IG}/StructureDefinition/backport-subscription"
STATUS_PROFILE = f"{IG}/StructureDefinition/backport-subscription-status-r4"
NOTIFICATION_PROFILE = f"{IG}/StructureDefinition/backport-subscription-notification-r4"
FILTER_URL = f"{IG}/StructureDefinition/backport-filter-criteria"
HEARTBEAT_URL = f"{IG}/StructureDefinition/backport-heartbeat-period"
TIMEOUT_URL = f"{IG}/StructureDefinition/backport-timeout"
MAX_COUNT_URL = f"{IG}/StructureDefinition/backport-max-count"
CONTENT_URL = f"{IG}/StructureDefinition/backport-payload-content"
TOPIC_CANONICAL_URL = f"{IG}/StructureDefinition/capabilitystatement-subscriptiontopic-canonical"
SERVER_CAPABILITY = f"{IG}/CapabilityStatement/backport-subscription-server-r4"
STATUS_OPERATION = f"{IG}/OperationDefinition/backport-subscription-status"
EVENTS_OPERATION = f"{IG}/OperationDefinition/backport-subscription-events"

CONTENTS = ("empty", "id-only", "full-resource")  # least to most
PAYLOAD = "application/fhir+json"

# ----- this server's limits -----------------------------------------------------------------------------------------

TIMEOUT_DEFAULT_S = 10
TIMEOUT_MAX_S = 60
HEARTBEAT_MIN_S = 1
HEARTBEAT_MAX_S = 7 * 24 * 3600
EVENTS_PAGE = 100  # at most this many events in one `$events` answer
FORBIDDEN_HEADERS = frozenset({"content-type", "content-length", "host", "transfer-encoding", "connection"})
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")  # plain http is allowed to these only (development, tests)

# ----- topics ---------------------------------------------------------------------------------------------------------

TOPIC_BASE = "https://careledger.example/fhir/SubscriptionTopic"
PSEUDONYM_SYSTEM = "urn:careledger:patient-pseudonym"
MSP_SYSTEM = "urn:careledger:msp"


@dataclass(frozen=True)
class TopicFilter:
    name: str
    description: str


@dataclass(frozen=True)
class Topic:
    """One kind of chain event a member can subscribe to.

    `audience`: the kind of member it is for; `party`: the event's field that must name this org (`insurer` or
    `provider`); `events`: the chain events that trigger it; `focus`: the resource type a notification is about."""

    code: str
    title: str
    description: str
    audience: str
    party: str
    events: tuple[str, ...]
    focus: str
    filters: tuple[TopicFilter, ...]

    @property
    def url(self) -> str:
        return f"{TOPIC_BASE}/{self.code}"

    def allows(self, name: str) -> bool:
        return any(f.name == name for f in self.filters)


PATIENT_FILTER = TopicFilter(
    "patient",
    "The patient the claim is for: `Patient/<id>` of a Patient held here, the consortium identifier"
    f" `<system>|<value>`, or the pseudonym `{PSEUDONYM_SYSTEM}|<pseudonym>`.",
)
INSURER_FILTER = TopicFilter("insurer", "The insurer the claim is addressed to, by MSP id (e.g. InsurerMSP).")

TOPICS: tuple[Topic, ...] = (
    Topic(
        "claim-submitted",
        "Claim submitted to this insurer",
        "A provider submitted a claim addressed to this insurer (Claims.Submitted). The focus is the claim as the"
        " claims channel records it: its key, patient pseudonym, provider, service date and total; the lines stay"
        " in the provider-insurer private collection.",
        audience="insurer",
        party="insurer",
        events=("Claims.Submitted",),
        focus="Claim",
        filters=(PATIENT_FILTER, TopicFilter("provider", "The submitting provider, by MSP id (e.g. HospitalMSP).")),
    ),
    Topic(
        "claim-adjudicated",
        "This provider's claim adjudicated",
        "The insurer adjudicated one of this provider's claims (Claims.Adjudicated) and its ClaimResponse is kept"
        " here, under the provider's own Claim id. The focus is that ClaimResponse; the Claim is additional context.",
        audience="provider",
        party="provider",
        events=("Claims.Adjudicated",),
        focus="ClaimResponse",
        filters=(
            PATIENT_FILTER,
            INSURER_FILTER,
            TopicFilter("outcome", "The adjudication outcome: approved | partial | denied."),
        ),
    ),
    Topic(
        "payment-issued",
        "This provider's claim paid",
        "The insurer paid one of this provider's claims (Claims.Paid, or a claim of Claims.PaidBatch). The focus is"
        " a PaymentReconciliation kept here under the provider's own Claim id, made from what the chain recorded.",
        audience="provider",
        party="provider",
        events=("Claims.Paid", "Claims.PaidBatch"),
        focus="PaymentReconciliation",
        filters=(PATIENT_FILTER, INSURER_FILTER),
    ),
    Topic(
        "preauth-decided",
        "This provider's prior authorisation decided",
        "The insurer decided one of this provider's prior authorisation requests (Claims.PreauthDecided). The focus"
        " is a ClaimResponse (use preauthorization) kept here under the provider's own Claim id, made from the"
        " decision the chain recorded.",
        audience="provider",
        party="provider",
        events=("Claims.PreauthDecided",),
        focus="ClaimResponse",
        filters=(
            PATIENT_FILTER,
            INSURER_FILTER,
            TopicFilter("decision", "The latest decision: approved | denied | pended."),
        ),
    ),
)
TOPIC_BY_URL: Mapping[str, Topic] = {t.url: t for t in TOPICS}
TOPIC_BY_CODE: Mapping[str, Topic] = {t.code: t for t in TOPICS}


def topics_for(kind: str) -> list[Topic]:
    """The topics a member of this kind (provider | insurer | manufacturer) can subscribe to."""
    return [t for t in TOPICS if t.audience == kind]


def topics_of_event(event: str, payload: Mapping[str, Any], msp: str) -> list[Topic]:
    """The topics a chain event triggers for the org `msp`: the event is one of the topic's, and the org is the
    party the topic is for (the claim's insurer, or its provider)."""
    return [t for t in TOPICS if event in t.events and payload.get(t.party) == msp]


def topic_resource(topic: Topic) -> dict[str, Any]:
    """The topic as a SubscriptionTopic resource (the R4B shape, which this R4 server publishes as JSON for discovery;
    R4 itself has no SubscriptionTopic resource)."""
    return {
        "resourceType": "SubscriptionTopic",
        "id": topic.code,
        "url": topic.url,
        "title": topic.title,
        "status": "active",
        "description": topic.description,
        "useContext": [
            {
                "code": {"system": "http://terminology.hl7.org/CodeSystem/usage-context-type", "code": "user"},
                "valueCodeableConcept": {"text": f"members of kind {topic.audience}"},
            }
        ],
        "eventTrigger": [
            {
                "description": f"Chain event {e} naming this org as the claim's {topic.party}",
                "event": {"coding": [{"system": "urn:careledger:chain-event", "code": e}]},
                "resource": f"http://hl7.org/fhir/StructureDefinition/{topic.focus}",
            }
            for e in topic.events
        ],
        "canFilterBy": [
            {"description": f.description, "resource": topic.focus, "filterParameter": f.name} for f in topic.filters
        ],
        "notificationShape": [{"resource": topic.focus}],
    }


# ----- subscriptions as this server understands them ----------------------------------------------------------------

SUBSCRIPTION_FILE = "careledger:subscriptions"  # the store files every Subscription under this key, not a patient


def notification_file(subscription_id: str) -> str:
    """The store key a subscription's kept notifications are filed (and encrypted) under: never a patient's, so they
    are never part of a patient's record or `$everything`."""
    return f"careledger:subscription:{subscription_id}"


_NOTIFICATION_NS = uuid.UUID("3d8c3c1e-3a57-4f55-9a47-6b1d1f3f0c21")


def notification_id(subscription_id: str, number: int) -> str:
    """The id of the kept notification of event `number` of a subscription: the same on every run."""
    return str(uuid.uuid5(_NOTIFICATION_NS, f"{subscription_id}#{number}"))


@dataclass(frozen=True)
class Filter:
    name: str
    values: tuple[str, ...]  # any of them (a comma in the criteria); filters are ANDed
    at: str = ""  # the element it was given in


@dataclass(frozen=True)
class Channel:
    endpoint: str
    headers: tuple[tuple[str, str], ...]
    content: str
    heartbeat_s: int | None
    timeout_s: int
    max_count: int | None


@dataclass(frozen=True)
class Subscription:
    """A kept Subscription, read for what the workers and operations need."""

    id: str
    version: int
    topic: Topic
    filters: tuple[Filter, ...]
    channel: Channel
    status: str  # requested | active | error | off
    error: str
    end: str | None
    resource: dict[str, Any] = field(repr=False)

    def reference(self, base: str) -> str:
        return f"{base}/Subscription/{self.id}"

    def ended(self, now: str | None = None) -> bool:
        return self.end is not None and _instant_key(self.end) <= _instant_key(now or now_instant())

    @property
    def live(self) -> bool:
        """Events are numbered and kept for it (delivered only while active)."""
        return self.status != "off" and not self.ended()


def _instant_key(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _extensions(node: Mapping[str, Any] | None, url: str) -> list[tuple[int, dict[str, Any]]]:
    found = (node or {}).get("extension") or []
    return [(i, e) for i, e in enumerate(found) if isinstance(e, dict) and e.get("url") == url]


_FILTER_SYNTAX = re.compile(
    r"(?:(?P<type>[A-Z][A-Za-z]+)\.)?(?P<name>[a-z][a-z_-]*)(?::(?P<mod>[a-z-]+))?=(?P<value>.+)"
)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _filters(resource: Mapping[str, Any], topic: Topic | None, issues: list[Issue]) -> list[Filter]:
    out: list[Filter] = []
    for i, ext in _extensions(resource.get("_criteria"), FILTER_URL):
        where = f"Subscription.criteria.extension[{i}].valueString"
        text = ext.get("valueString")
        match = _FILTER_SYNTAX.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            issues.append(Issue("value", where, "a filter is a string [Type.]name=value (e.g. patient=Patient/123)"))
            continue
        if topic is None:
            continue
        name, rtype, modifier = match["name"], match["type"], match["mod"]
        allowed = ", ".join(f.name for f in topic.filters)
        if not topic.allows(name):
            issues.append(Issue("not-supported", where, f"{topic.code} filters by {allowed}, not {name!r}"))
        elif rtype is not None and rtype != topic.focus:
            issues.append(Issue("value", where, f"{topic.code} is about {topic.focus}, not {rtype}"))
        elif modifier is not None:
            issues.append(Issue("not-supported", where, f"filter modifiers (:{modifier}) are not supported"))
        else:
            values = tuple(v.strip() for v in match["value"].split(",") if v.strip())
            if not values:
                issues.append(Issue("value", where, "the filter has no value"))
            out.append(Filter(name, values, where))
    return out


def _unsigned(
    channel: Mapping[str, Any], url: str, key: str, lo: int, hi: int, what: str, issues: list[Issue]
) -> int | None:
    found = _extensions(channel, url)
    if not found:
        return None
    i, ext = found[0]
    where = f"Subscription.channel.extension[{i}].{key}"
    value = ext.get(key)
    if len(found) > 1:
        issues.append(Issue("structure", "Subscription.channel.extension", f"{what} is given more than once"))
    if not isinstance(value, int) or isinstance(value, bool):
        issues.append(Issue("value", where, f"{what} is an {key[5:]} ({url})"))
        return None
    if not lo <= value <= hi:
        issues.append(Issue("value", where, f"{what} is {value}; this server takes {lo} to {hi} seconds or counts"))
        return None
    return value


def _endpoint(value: Any, issues: list[Issue]) -> str:
    where = "Subscription.channel.endpoint"
    if not isinstance(value, str) or not value:
        issues.append(Issue("required", where, "a rest-hook subscription needs the endpoint to POST notifications to"))
        return ""
    parts = urlsplit(value)
    loopback = parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS
    if parts.scheme != "https" and not loopback:
        issues.append(
            Issue("value", where, "notifications go to https endpoints only (plain http to 127.0.0.1 for tests)")
        )
    elif not parts.hostname or parts.username or parts.password or parts.fragment:
        issues.append(Issue("value", where, f"{value[:100]!r} is not an endpoint URL (host, no credentials or #)"))
    return value


def _headers(channel: Mapping[str, Any], issues: list[Issue]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for i, header in enumerate(channel.get("header") or []):
        where = f"Subscription.channel.header[{i}]"
        name, colon, value = str(header).partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not _HEADER_NAME.fullmatch(name) or "\n" in value or "\r" in value:
            issues.append(Issue("value", where, "a header is 'Name: value'"))
        elif name.lower() in FORBIDDEN_HEADERS:
            issues.append(Issue("not-supported", where, f"{name} is set by the server"))
        else:
            out.append((name, value))
    return out


def _content(channel: Mapping[str, Any], issues: list[Issue]) -> str:
    payload = channel.get("payload")
    mime = str(payload or "").split(";")[0].strip().lower()
    if mime != PAYLOAD:
        shown = repr(payload) if payload else "none"
        issues.append(
            Issue("not-supported", "Subscription.channel.payload", f"notifications are {PAYLOAD}, not {shown}")
        )
    found = _extensions(channel.get("_payload"), CONTENT_URL)
    if not found:
        issues.append(
            Issue(
                "required",
                "Subscription.channel.payload.extension",
                f"say how much each notification carries ({CONTENT_URL}: {' | '.join(CONTENTS)})",
            )
        )
        return "empty"
    i, ext = found[0]
    code = ext.get("valueCode")
    if code not in CONTENTS:
        where = f"Subscription.channel.payload.extension[{i}].valueCode"
        issues.append(Issue("code-invalid", where, f"{code!r} is not one of {', '.join(CONTENTS)}"))
        return "empty"
    return str(code)


def validate(
    resource: Any, kind: str, patient_known: Callable[[str], bool] | None = None
) -> tuple[Topic, list[Filter], Channel]:
    """Check a Subscription a client sent against the backport profile and this server: a topic of this server for
    this kind of member, its filters, a rest-hook channel to an https endpoint, FHIR JSON payloads with a content
    level. Raises FhirInvalid listing every problem, each naming its element. `patient_known`: whether a `patient`
    filter value names a patient this org can recognise (a `Patient/<id>` must be held here)."""
    fv.validate_resource(resource, "Subscription", ("Subscription",))
    issues: list[Issue] = []
    criteria = str(resource.get("criteria") or "")
    topic = TOPIC_BY_URL.get(criteria)
    if topic is None:
        known = ", ".join(t.url for t in topics_for(kind)) or "none for this kind of member"
        issues.append(
            Issue("value", "Subscription.criteria", f"{criteria[:200]!r} is not a topic here; topics: {known}")
        )
    elif topic.audience != kind:
        issues.append(
            Issue(
                "not-supported", "Subscription.criteria", f"{topic.code} is for {topic.audience}s; this org is a {kind}"
            )
        )
    filters = _filters(resource, topic, issues)
    if patient_known is not None:
        for f in filters:
            for value in f.values if f.name == "patient" else ():
                if not patient_known(value):
                    issues.append(Issue("value", f.at, f"patient {value[:80]!r} names no patient known here"))
    status = resource.get("status")
    if status == "error":
        issues.append(
            Issue("value", "Subscription.status", "error is the server's to set: ask for requested (or active), or off")
        )
    channel: dict[str, Any] = resource.get("channel") or {}
    if channel.get("type") != "rest-hook" or _extensions(
        channel.get("_type"), f"{IG}/StructureDefinition/backport-channel-type"
    ):
        issues.append(Issue("not-supported", "Subscription.channel.type", "this server notifies over rest-hook only"))
    endpoint = _endpoint(channel.get("endpoint"), issues)
    headers = _headers(channel, issues)
    content = _content(channel, issues)
    heartbeat = _unsigned(
        channel, HEARTBEAT_URL, "valueUnsignedInt", HEARTBEAT_MIN_S, HEARTBEAT_MAX_S, "heartbeatPeriod", issues
    )
    timeout = _unsigned(channel, TIMEOUT_URL, "valueUnsignedInt", 1, TIMEOUT_MAX_S, "timeout", issues)
    max_count = _unsigned(channel, MAX_COUNT_URL, "valuePositiveInt", 1, 1000, "maxCount", issues)
    if issues:
        raise FhirInvalid(issues)
    assert topic is not None
    channel_of = Channel(endpoint, tuple(headers), content, heartbeat, timeout or TIMEOUT_DEFAULT_S, max_count)
    return topic, filters, channel_of


def parse(stored: Stored) -> Subscription:
    """A kept Subscription (validated when it was written)."""
    resource: dict[str, Any] = json.loads(stored.content)
    topic = TOPIC_BY_URL[resource["criteria"]]
    issues: list[Issue] = []
    filters = _filters(resource, topic, issues)
    channel = resource.get("channel") or {}
    content = _content(channel, issues)
    heartbeat = _unsigned(channel, HEARTBEAT_URL, "valueUnsignedInt", 0, HEARTBEAT_MAX_S, "", issues)
    timeout = _unsigned(channel, TIMEOUT_URL, "valueUnsignedInt", 1, TIMEOUT_MAX_S, "", issues)
    max_count = _unsigned(channel, MAX_COUNT_URL, "valuePositiveInt", 1, 1000, "", issues)
    return Subscription(
        id=stored.id,
        version=stored.version,
        topic=topic,
        filters=tuple(filters),
        channel=Channel(
            str(channel.get("endpoint") or ""),
            tuple(_headers(channel, issues)),
            content,
            heartbeat or None,
            timeout or TIMEOUT_DEFAULT_S,
            max_count,
        ),
        status=str(resource.get("status") or "off"),
        error=str(resource.get("error") or ""),
        end=resource.get("end"),
        resource=resource,
    )


def _channel_of(resource: Mapping[str, Any]) -> Any:
    return (resource.get("criteria"), resource.get("_criteria"), resource.get("channel"))


def client_write(resource: dict[str, Any], previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Subscription to keep when a client creates or updates one: the server decides `status` and `error`.

    Asked `off`: off. Asked `requested` or `active`: active again only if it is active and neither the topic, its
    filters nor the channel change; otherwise `requested`, and the workers send a handshake before anything else
    (a reactivation after an error is a `requested` one)."""
    kept = {k: v for k, v in resource.items() if k not in ("meta", "error")}
    kept["meta"] = {"profile": [SUBSCRIPTION_PROFILE]}
    if resource.get("status") == "off":
        kept["status"] = "off"
    elif previous is not None and previous.get("status") == "active" and _channel_of(previous) == _channel_of(kept):
        kept["status"] = "active"
    else:
        kept["status"] = "requested"
    return kept


def server_status(resource: Mapping[str, Any], status: str, error: str = "") -> dict[str, Any]:
    """The kept Subscription with a status (and error) the server decided."""
    out = {k: v for k, v in resource.items() if k not in ("meta", "error")}
    out["meta"] = {"profile": [SUBSCRIPTION_PROFILE]}
    out["status"] = status
    if error:
        out["error"] = error[:1000]
    return out


# ----- reading and writing them -------------------------------------------------------------------------------------


def read(records: Records, subscription_id: str) -> Subscription:
    stored = records.store.read("Subscription", subscription_id)
    if stored is None:
        raise NotHeld(f"Subscription/{subscription_id} is not held here")
    return parse(stored)


def all_subscriptions(records: Records) -> Iterator[Subscription]:
    """Every Subscription kept here, newest versions, in the order they were last written."""
    after = None
    while True:
        page = records.store.search_page(Query("Subscription", count=200, after=after))
        yield from (parse(s) for s in page.items)
        if page.next is None:
            return
        after = page.next


def _without_meta(resource: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}


async def save(
    records: Records, subscription_id: str, change: Callable[[Stored | None], dict[str, Any] | None]
) -> Stored | None:
    """Write the next version of a Subscription as `change` makes it from the newest one (None: there is none yet),
    and return it; `change` returning None writes nothing and returns the newest (or None). Writers race (the
    client's system through the gateway, the workers setting the status): a write that loses is made again from
    the version that won."""
    for _ in range(20):
        newest = records.store.read("Subscription", subscription_id)
        wanted = change(newest)
        if wanted is None:
            return newest
        current = json.loads(newest.content) if newest is not None else None
        wanted = {**wanted, "resourceType": "Subscription", "id": subscription_id}
        if current is not None and _without_meta(current) == _without_meta(wanted):
            return newest
        await records.keep(wanted, SUBSCRIPTION_FILE)
        written = records.store.read("Subscription", subscription_id)
        if written is not None and _without_meta(json.loads(written.content)) == _without_meta(wanted):
            return written
    raise VersionTaken(f"Subscription/{subscription_id} kept changing while it was written; try again")


async def set_status(
    records: Records, subscription_id: str, status: str, error: str = "", only_if: Callable[[Subscription], bool] = bool
) -> Subscription | None:
    """Set the server's status of a Subscription if `only_if` still holds for its newest version (a handshake's
    result applies only to the channel it was sent on, say). Returns the Subscription as it is now."""

    def change(newest: Stored | None) -> dict[str, Any] | None:
        if newest is None or not only_if(parse(newest)):
            return None
        return server_status(json.loads(newest.content), status, error)

    stored = await save(records, subscription_id, change)
    return parse(stored) if stored is not None else None


async def keep_notification(records: Records, subscription_id: str, number: int, bundle: dict[str, Any]) -> bool:
    """Keep the notification of event `number` once: False when it was kept before (a rerun sends that one)."""
    nid = notification_id(subscription_id, number)
    if records.store.head("Bundle", nid) is not None:
        return False
    try:
        return await records.keep({**bundle, "id": nid}, notification_file(subscription_id))
    except VersionTaken:
        return False


def kept_notification(records: Records, subscription_id: str, number: int) -> dict[str, Any] | None:
    """The kept notification of event `number` as kept (held resources by reference), or None."""
    stored = records.store.read("Bundle", notification_id(subscription_id, number))
    return json.loads(stored.content) if stored is not None else None


def events_kept(records: Records, subscription_id: str) -> int:
    """How many events of the subscription have a kept notification: the highest event number kept (numbers start
    at 1 and each is kept before it is sent). An erased notification still counts."""

    def kept(n: int) -> bool:
        return records.store.head("Bundle", notification_id(subscription_id, n)) is not None

    if not kept(1):
        return 0
    low, high = 1, 2
    while kept(high):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if kept(middle) else (low, middle)
    return low


# ----- notifications ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Focus:
    """A resource a notification is about. `version`: the version held here (kept by reference, read again when the
    notification is sent); None: not held here (`resource` is what the chain recorded, kept in the notification)."""

    type: str
    full_url: str
    resource: dict[str, Any]
    version: int | None = None
    identifier: dict[str, str] | None = None

    @classmethod
    def held(cls, base: str, stored: Stored) -> Focus:
        return cls(stored.type, f"{base}/{stored.type}/{stored.id}", json.loads(stored.content), stored.version)

    def reference(self) -> dict[str, Any]:
        ref: dict[str, Any] = {"reference": self.full_url, "type": self.type}
        if self.identifier:
            ref["identifier"] = self.identifier
        return ref

    def entry(self, content: str) -> dict[str, Any]:
        """Its Bundle entry in a history bundle: the URL and the write that made it; the resource for full-resource."""
        rid = str(self.resource.get("id") or "")
        entry: dict[str, Any] = {"fullUrl": self.full_url}
        if content == "full-resource":
            entry["resource"] = self.resource
        if self.version is None:
            entry["request"] = {"method": "POST", "url": self.type}
            entry["response"] = {"status": "201"}
        else:
            first = self.version == 1
            entry["request"] = {
                "method": "POST" if first else "PUT",
                "url": self.type if first else f"{self.type}/{rid}",
            }
            entry["response"] = {
                "status": "201" if first else "200",
                "location": f"{self.type}/{rid}/_history/{self.version}",
                "etag": f'W/"{self.version}"',
            }
        return entry


@dataclass(frozen=True)
class Event:
    number: int
    timestamp: str
    focus: Focus | None
    context: tuple[Focus, ...] = ()


def _param(name: str, **value: Any) -> dict[str, Any]:
    return {"name": name, **value}


def status_parameters(
    subscription: Subscription,
    base: str,
    kind: str,
    events_since: int | None,
    events: Iterable[Event] = (),
    content: str | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    """The backport-subscription-status-r4 Parameters of a notification or operation answer. `kind`: handshake |
    heartbeat | event-notification | query-status | query-event."""
    content = content or subscription.channel.content
    pid = str(uuid.uuid4())
    params: list[dict[str, Any]] = [
        _param("subscription", valueReference={"reference": subscription.reference(base)}),
    ]
    if content != "empty":
        params.append(_param("topic", valueCanonical=subscription.topic.url))
    params += [
        _param("status", valueCode=status or subscription.status),
        _param("type", valueCode=kind),
    ]
    if events_since is not None:
        params.append(_param("events-since-subscription-start", valueString=str(events_since)))
    for event in events:
        parts = [
            _param("event-number", valueString=str(event.number)),
            _param("timestamp", valueInstant=event.timestamp),
        ]
        if content != "empty" and event.focus is not None:
            parts.append(_param("focus", valueReference=event.focus.reference()))
            parts += [_param("additional-context", valueReference=c.reference()) for c in event.context]
        params.append(_param("notification-event", part=parts))
    if (status or subscription.status) == "error" and subscription.error:
        params.append(_param("error", valueCodeableConcept={"text": subscription.error}))
    return {"resourceType": "Parameters", "id": pid, "meta": {"profile": [STATUS_PROFILE]}, "parameter": params}


def _status_entry(parameters: dict[str, Any], url: str) -> dict[str, Any]:
    return {
        "fullUrl": f"urn:uuid:{parameters['id']}",
        "resource": parameters,
        "request": {"method": "GET", "url": url},
        "response": {"status": "200"},
    }


CONTENT_TAG = "urn:careledger:subscription-content"


def notification(
    subscription: Subscription, base: str, kind: str, events_since: int, events: list[Event] | None = None
) -> dict[str, Any]:
    """A notification Bundle: `history`, the status Parameters first, then each event's focus and context resources
    as the subscription's content says (id-only: their URLs; full-resource: the resources too)."""
    events = events or []
    content = subscription.channel.content
    parameters = status_parameters(subscription, base, kind, events_since, events)
    entries = [_status_entry(parameters, f"{subscription.reference(base)}/$status")]
    if content != "empty":
        for event in events:
            entries += [f.entry(content) for f in (event.focus, *event.context) if f is not None]
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [NOTIFICATION_PROFILE], "tag": [{"system": CONTENT_TAG, "code": content}]},
        "type": "history",
        "timestamp": now_instant(),
        "entry": entries,
    }


def content_of(bundle: Mapping[str, Any]) -> str:
    tags = (bundle.get("meta") or {}).get("tag") or []
    return next((str(t["code"]) for t in tags if t.get("system") == CONTENT_TAG), "empty")


def for_keeping(bundle: dict[str, Any]) -> dict[str, Any]:
    """The notification as it is kept: a resource held here is kept by its version (`response.location`) only."""
    entries = []
    for e in bundle["entry"]:
        held = "location" in (e.get("response") or {})
        entries.append({k: v for k, v in e.items() if not (held and k == "resource")})
    return {**bundle, "entry": entries}


def narrowed(bundle: dict[str, Any], content: str) -> dict[str, Any]:
    """The notification carrying no more than `content`: id-only drops the resources, empty the focus too."""
    kept = content_of(bundle)
    content = min(kept, content, key=CONTENTS.index)
    if content == kept:
        return bundle
    status, *rest = bundle["entry"]
    if content == "empty":
        parameters = status["resource"]
        params = []
        for p in parameters["parameter"]:
            if p["name"] == "topic":
                continue
            if p["name"] == "notification-event":
                p = {**p, "part": [q for q in p["part"] if q["name"] in ("event-number", "timestamp")]}
            params.append(p)
        status = {**status, "resource": {**parameters, "parameter": params}}
        rest = []
    else:
        rest = [{k: v for k, v in e.items() if k != "resource"} for e in rest]
    meta = {**bundle["meta"], "tag": [{"system": CONTENT_TAG, "code": content}]}
    return {**bundle, "meta": meta, "entry": [status, *rest]}


def hydrated(
    records: Records, bundle: dict[str, Any], may_read: Callable[[str], bool] = lambda rtype: True
) -> dict[str, Any]:
    """A kept full-resource notification with its held resources read again (the version it was sent with). One that
    cannot be read any more (the patient's data was erased) or that the reader may not read stays a reference: its
    entry keeps `request` and `response`, as the IG asks when a resource cannot be included."""
    if content_of(bundle) != "full-resource":
        return bundle
    status, *rest = bundle["entry"]
    entries = [status]
    for e in rest:
        location = (e.get("response") or {}).get("location")
        if "resource" in e:  # kept in the notification itself (what the chain recorded)
            if not may_read(str(e["resource"].get("resourceType"))):
                e = {k: v for k, v in e.items() if k != "resource"}
        elif location:
            rtype, rid, _, version = str(location).split("/")
            if may_read(rtype):
                with contextlib.suppress(NotHeld, PatientErased):
                    e = {**e, "resource": json.loads(records.read(rtype, rid, int(version)).content)}
        entries.append(e)
    return {**bundle, "entry": entries}


def with_status(bundle: dict[str, Any], status: str) -> dict[str, Any]:
    """The notification with the subscription's status as it is when the notification is sent."""
    first = bundle["entry"][0]
    params = [{**p, "valueCode": status} if p["name"] == "status" else p for p in first["resource"]["parameter"]]
    return {
        **bundle,
        "entry": [{**first, "resource": {**first["resource"], "parameter": params}}, *bundle["entry"][1:]],
    }


def events_bundle(
    subscription: Subscription, base: str, events_since: int, kept: list[dict[str, Any]], content: str
) -> dict[str, Any]:
    """The `$events` answer: one history Bundle, status Parameters of type query-event listing every event returned,
    then the events' resources as `content` allows (never more than each notification carried)."""
    events: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    for bundle in kept:
        bundle = narrowed(bundle, content)
        status, *rest = bundle["entry"]
        events += [p for p in status["resource"]["parameter"] if p["name"] == "notification-event"]
        entries += rest
    parameters = status_parameters(subscription, base, "query-event", events_since, content=content)
    parameters["parameter"] += events
    url = f"{subscription.reference(base)}/$events"
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [NOTIFICATION_PROFILE]},
        "type": "history",
        "timestamp": now_instant(),
        "entry": [_status_entry(parameters, url), *entries],
    }


def status_bundle(base: str, answers: list[tuple[Subscription, int]]) -> dict[str, Any]:
    """The `$status` answer: a searchset Bundle with the status Parameters (query-status) of each subscription."""
    entries = []
    for subscription, count in answers:
        parameters = status_parameters(subscription, base, "query-status", count, content="id-only")
        entries.append({"fullUrl": f"urn:uuid:{parameters['id']}", "resource": parameters, "search": {"mode": "match"}})
    return {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}


# ----- filters against events ---------------------------------------------------------------------------------------


def resolve_patient(records: Records, value: str) -> str | None:
    """The pseudonym a `patient` filter value names: `Patient/<id>` (or an id) of a Patient held here, the consortium
    identifier `system|value`, or `urn:careledger:patient-pseudonym|<pseudonym>`."""
    if "|" in value:
        system, _, ident = value.partition("|")
        if system == PSEUDONYM_SYSTEM:
            return ident or None
        if system == records.mpi_system and ident:
            return records.pseudonym_of_identifier(system, ident)
        return None
    pid = value.removeprefix("Patient/")
    return records.pseudonym_of_local_patient(pid) if fv.ID_PATTERN.fullmatch(pid) else None


def matches(records: Records, subscription: Subscription, facts: Mapping[str, str]) -> bool:
    """Whether an event passes every filter of the subscription (`facts`: the event's patient pseudonym, insurer,
    provider, outcome, decision)."""
    for f in subscription.filters:
        fact = facts.get(f.name)
        if fact is None:
            return False
        wanted = {resolve_patient(records, v) for v in f.values} if f.name == "patient" else set(f.values)
        if fact not in wanted:
            return False
    return True


def msp_reference(msp: str) -> dict[str, Any]:
    return {"identifier": {"system": MSP_SYSTEM, "value": msp}}


def claim_identifier(claim_key: str) -> dict[str, str]:
    return {"system": CLAIM_KEY_SYSTEM, "value": claim_key}
