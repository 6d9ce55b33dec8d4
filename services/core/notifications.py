"""Notification Bundles (backport-subscription-notification-r4) and their status Parameters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from herald.core.fhir import FHIR_XML, new_id
from herald.core.fhirxml import FhirXml
from herald.core.states import SubscriptionStatus
from herald.core.types import JsonObject

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
NOTIFICATION_PROFILE = BACKPORT + "backport-subscription-notification-r4"
STATUS_PROFILE = BACKPORT + "backport-subscription-status-r4"

HANDSHAKE = "handshake"
HEARTBEAT = "heartbeat"
EVENT_NOTIFICATION = "event-notification"
QUERY_STATUS = "query-status"
QUERY_EVENT = "query-event"

_REQUEST_FOR = {"create": ("POST", "201"), "update": ("PUT", "200"), "delete": ("DELETE", "204")}

# NotificationEvent and SubscriptionState are built for every notification sent, so they are
# plain slotted dataclasses: a frozen dataclass's __init__ sets each field through
# object.__setattr__, at about five times the cost. Nothing changes them once built.


@dataclass(slots=True)
class NotificationEvent:
    """One numbered event, as a notification shows it."""

    number: int
    timestamp: str
    resource_type: str
    resource_id: str
    interaction: str
    resource: JsonObject | None = None
    """The resource version that triggered the event (used for full-resource)."""
    version_id: str = ""
    method: str | None = None
    """The HTTP method of the change when the interaction does not imply it (PUT for create)."""

    @property
    def focus(self) -> str:
        """The relative reference of the focus resource."""
        return f"{self.resource_type}/{self.resource_id}"

    def focus_reference(self, content: str) -> str:
        """The focus as a notification references it: version-specific with full resources, so
        that two versions of one resource in a Bundle are told apart (each entry's own)."""
        if content == "full-resource" and self.version_id:
            return f"{self.focus}/_history/{self.version_id}"
        return self.focus


@dataclass(slots=True)
class SubscriptionState:
    """What a status Parameters says about a subscription."""

    id: str
    topic_url: str
    status: str
    events_since_start: int
    content: str = "id-only"
    error: str | None = None


def status_parameters(
    base_url: str,
    state: SubscriptionState,
    kind: str,
    events: Sequence[NotificationEvent] = (),
) -> JsonObject:
    """The backport-subscription-status-r4 Parameters for a notification or operation."""
    parameters: list[JsonObject] = [
        {
            "name": "subscription",
            "valueReference": {"reference": f"{base_url}/Subscription/{state.id}"},
        },
    ]
    if state.content != "empty":
        parameters.append({"name": "topic", "valueCanonical": state.topic_url})
    parameters += [
        {"name": "status", "valueCode": state.status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(state.events_since_start)},
    ]
    for event in events:
        parts: list[JsonObject] = [
            {"name": "event-number", "valueString": str(event.number)},
            {"name": "timestamp", "valueInstant": event.timestamp},
        ]
        if state.content != "empty":
            parts.append(
                {
                    "name": "focus",
                    "valueReference": {
                        "reference": f"{base_url}/{event.focus_reference(state.content)}"
                    },
                }
            )
        parameters.append({"name": "notification-event", "part": parts})
    if state.status == SubscriptionStatus.ERROR and state.error:
        parameters.append(
            {
                "name": "error",
                "valueCodeableConcept": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/subscription-error",
                            "code": "no-response",
                        }
                    ],
                    "text": state.error,
                },
            }
        )
    status_id = new_id()
    return {
        "resourceType": "Parameters",
        "id": status_id,
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": parameters,
    }


def _status_entry(base_url: str, parameters: JsonObject, state: SubscriptionState) -> JsonObject:
    return {
        "fullUrl": f"urn:uuid:{parameters['id']}",
        "resource": parameters,
        "request": {"method": "GET", "url": f"{base_url}/Subscription/{state.id}/$status"},
        "response": {"status": "200"},
    }


def _event_entry(base_url: str, event: NotificationEvent, content: str) -> JsonObject:
    method, status = _REQUEST_FOR.get(event.interaction, ("GET", "200"))
    method = event.method or method
    url = event.resource_type if method == "POST" else event.focus
    entry: JsonObject = {"fullUrl": f"{base_url}/{event.focus}"}
    if content == "full-resource" and event.resource is not None:
        entry["resource"] = event.resource
    entry["request"] = {"method": method, "url": url}
    entry["response"] = {"status": status}
    return entry


def notification_bundle(
    base_url: str,
    state: SubscriptionState,
    kind: str,
    events: Sequence[NotificationEvent] = (),
    *,
    timestamp: str,
) -> JsonObject:
    """A history Bundle: the status Parameters first, then one entry per event unless empty."""
    parameters = status_parameters(base_url, state, kind, events)
    entries = [_status_entry(base_url, parameters, state)]
    if state.content != "empty":
        entries += [_event_entry(base_url, event, state.content) for event in events]
    return {
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"profile": [NOTIFICATION_PROFILE]},
        "type": "history",
        "timestamp": timestamp,
        "entry": entries,
    }


def encode_bundle(bundle: JsonObject, payload: str, xml: FhirXml) -> bytes:
    """A notification Bundle in the format of `channel.payload` (FHIR XML or FHIR JSON).

    Raises whatever the encoder raises on a resource it cannot write (nesting past orjson's
    limit, characters XML cannot hold); the caller counts that as a failed attempt.
    """
    if payload.split(";")[0].strip() == FHIR_XML:
        return xml.to_xml(bundle)
    return orjson.dumps(bundle)
