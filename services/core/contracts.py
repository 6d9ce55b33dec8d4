"""The records that cross the bus, versioned; their JSON Schemas live in schemas/kafka/."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import orjson

from herald.core.errors import ContractError
from herald.core.types import JsonObject

TASK_CHANGES = "task-changes"
"""Logical topic of ResourceChange records (the Kafka topic is HERALD_TOPIC_PREFIX + this)."""
NOTIFICATIONS = "notifications"
"""Logical topic of NotificationRequest records."""

RESOURCE_CHANGE_SCHEMA = "herald.resource-change/1"
NOTIFICATION_REQUEST_SCHEMA = "herald.notification-request/1"
METHODS = ("POST", "PUT", "DELETE", "PATCH")


@dataclass(frozen=True)
class ResourceChange:
    """A committed change of a resource (topic herald.task-changes, key: resource id)."""

    event_id: str
    """Unique id of this change; consumers deduplicate on it."""
    resource_type: str
    resource_id: str
    interaction: str
    """create | update | delete."""
    version_id: str
    """The version the change produced (for delete, the version that was deleted)."""
    occurred_at: str
    """FHIR instant of the commit."""
    current: JsonObject | None
    """The resource after the change; null for delete."""
    previous: JsonObject | None
    """The resource before the change; null for create."""
    registry_revision: int
    """The subscription registry revision the writer saw; a matcher must be at least that fresh."""
    method: str | None = None
    """The HTTP method of the interaction (a create by PUT is notified as PUT); null: implied."""
    schema: str = RESOURCE_CHANGE_SCHEMA


@dataclass(frozen=True)
class NotificationRequest:
    """Work for the dispatcher (topic herald.notifications, key: subscription id)."""

    request_id: str
    """Unique per (kind, subscription, source event); the dispatcher deduplicates on it."""
    kind: str
    """event | handshake."""
    subscription_id: str
    source_event_id: str
    """The ResourceChange event id (event) or subscription write id (handshake)."""
    requested_at: str
    resource_type: str | None = None
    resource_id: str | None = None
    version_id: str | None = None
    interaction: str | None = None
    occurred_at: str | None = None
    method: str | None = None
    """The HTTP method of the change (see ResourceChange.method)."""
    schema: str = NOTIFICATION_REQUEST_SCHEMA


def encode(record: ResourceChange | NotificationRequest) -> bytes:
    """Serialise a record as JSON bytes."""
    # orjson writes a dataclass as the object of its fields; dataclasses.asdict would first
    # deep-copy both versions of the resource (a tenth of a Task write's CPU).
    return orjson.dumps(record)


# The exact types a decoded field may have: JSON as orjson decodes it never has subclasses (a
# bool is not an int here).
_TYPES: dict[str, frozenset[type]] = {
    "str": frozenset({str}),
    "int": frozenset({int}),
    "str | None": frozenset({str, type(None)}),
    "JsonObject | None": frozenset({dict, type(None)}),
}

# Per record class, its fields and their allowed types: looked up once, not per record (fields()
# and the annotations' text were a sixth of the matcher's time per change).
_CHECKS: dict[type, tuple[tuple[str, frozenset[type]], ...]] = {}


def _check_types(record: ResourceChange | NotificationRequest) -> None:
    checks = _CHECKS.get(type(record))
    if checks is None:
        checks = _CHECKS[type(record)] = tuple(
            (item.name, _TYPES[str(item.type)]) for item in fields(record)
        )
    for name, allowed in checks:
        value = getattr(record, name)
        if type(value) not in allowed:
            raise ContractError(f"{name} has the wrong type ({type(value).__name__})")


def _load(data: bytes, schema: str) -> dict[str, Any]:
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ContractError(f"not JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("schema") != schema:
        found = raw.get("schema") if isinstance(raw, dict) else type(raw).__name__
        raise ContractError(f"expected schema {schema}, got {found!r}")
    return raw


def decode_change(data: bytes) -> ResourceChange:
    """Parse a ResourceChange record."""
    raw = _load(data, RESOURCE_CHANGE_SCHEMA)
    try:
        change = ResourceChange(**raw)
    except TypeError as exc:
        raise ContractError(f"bad resource change: {exc}") from exc
    if change.interaction not in ("create", "update", "delete"):
        raise ContractError(f"unknown interaction {change.interaction!r}")
    if change.method not in (None, *METHODS):
        raise ContractError(f"unknown method {change.method!r}")
    _check_types(change)
    return change


def decode_request(data: bytes) -> NotificationRequest:
    """Parse a NotificationRequest record."""
    raw = _load(data, NOTIFICATION_REQUEST_SCHEMA)
    try:
        request = NotificationRequest(**raw)
    except TypeError as exc:
        raise ContractError(f"bad notification request: {exc}") from exc
    if request.kind not in ("event", "handshake"):
        raise ContractError(f"unknown kind {request.kind!r}")
    _check_types(request)
    return request
