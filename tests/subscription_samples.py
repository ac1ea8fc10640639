"""Subscription resources of the Subscriptions R5 Backport IG's R4 profile, as a client's system would post them."""

from __future__ import annotations

from typing import Any

IG = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
TOPIC_BASE = "https://careledger.example/fhir/SubscriptionTopic"


def subscription(
    topic: str,
    endpoint: str,
    content: str = "id-only",
    filters: tuple[str, ...] = (),
    heartbeat: int | None = None,
    status: str = "requested",
    timeout: int | None = None,
    headers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A rest-hook Subscription to the topic with this code (claim-submitted, claim-adjudicated, ...)."""
    channel: dict[str, Any] = {
        "type": "rest-hook",
        "endpoint": endpoint,
        "payload": "application/fhir+json",
        "_payload": {"extension": [{"url": f"{IG}/backport-payload-content", "valueCode": content}]},
    }
    extensions = []
    if heartbeat is not None:
        extensions.append({"url": f"{IG}/backport-heartbeat-period", "valueUnsignedInt": heartbeat})
    if timeout is not None:
        extensions.append({"url": f"{IG}/backport-timeout", "valueUnsignedInt": timeout})
    if extensions:
        channel["extension"] = extensions
    if headers:
        channel["header"] = list(headers)
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {"profile": [f"{IG}/backport-subscription"]},
        "status": status,
        "reason": f"tell the back office about {topic}",
        "criteria": f"{TOPIC_BASE}/{topic}",
        "channel": channel,
    }
    if filters:
        resource["_criteria"] = {
            "extension": [{"url": f"{IG}/backport-filter-criteria", "valueString": f} for f in filters]
        }
    return resource


def parameters(bundle: dict[str, Any]) -> dict[str, Any]:
    """The status Parameters of a notification (its first entry), as name -> value (lists for repeated names)."""
    status = bundle["entry"][0]["resource"]
    assert status["resourceType"] == "Parameters"
    out: dict[str, Any] = {}
    for p in status["parameter"]:
        value = next((v for k, v in p.items() if k.startswith("value")), None)
        if p["name"] == "notification-event":
            parts = {q["name"]: next(v for k, v in q.items() if k.startswith("value")) for q in p["part"]}
            out.setdefault("notification-event", []).append(parts)
        else:
            out[p["name"]] = value
    return out


def event_numbers(bundle: dict[str, Any]) -> list[int]:
    return [int(e["event-number"]) for e in parameters(bundle).get("notification-event", [])]
