"""Builders of the FHIR resources that tests and benchmarks send to Herald."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

HREX_TOPIC = "http://hl7.org/fhir/us/davinci-hrex/SubscriptionTopic/Task"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
FHIR_JSON = "application/fhir+json"


def backport_subscription(
    endpoint: str,
    *filters: str,
    topic: str = HREX_TOPIC,
    status: str = "requested",
    reason: str = "test",
    content: str = "id-only",
    headers: Sequence[str] = (),
    channel_extensions: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A backport Subscription (R4): rest-hook, FHIR JSON, one filter extension per filter."""
    channel: dict[str, Any] = {
        "type": "rest-hook",
        "endpoint": endpoint,
        "payload": FHIR_JSON,
        "_payload": {
            "extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": content}]
        },
    }
    if headers:
        channel["header"] = list(headers)
    if channel_extensions:
        channel["extension"] = list(channel_extensions)
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": status,
        "reason": reason,
        "criteria": topic,
        "channel": channel,
    }
    if filters:
        resource["_criteria"] = {
            "extension": [
                {"url": BACKPORT + "backport-filter-criteria", "valueString": text}
                for text in filters
            ]
        }
    return resource
