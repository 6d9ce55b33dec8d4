"""The records that cross the bus, versioned; their JSON Schemas live in schemas/kafka/."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any, TypeVar

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

_Record = TypeVar("_Record", ResourceChange, NotificationRequest)


@dataclass(frozen=True)
class _Shape:
    """A record class's fields as decoding needs them, worked out once per class (fields()
    and the annotations' text were a sixth of the matcher's time per change)."""

    order: tuple[str, ...]
    names: frozenset[str]
    required: frozenset[str]
    defaults: dict[str, Any]
    checks: tuple[tuple[str, frozenset[type]], ...]


_SHAPES: dict[type, _Shape] = {}


def _shape(cls: type) -> _Shape:
    found = _SHAPES.get(cls)
    if found is None:
        items = fields(cls)
        found = _SHAPES[cls] = _Shape(
            order=tuple(item.name for item in items),
            names=frozenset(item.name for item in items),
            required=frozenset(item.name for item in items if item.default is MISSING),
            defaults={item.name: item.default for item in items if item.default is not MISSING},
            checks=tuple((item.name, _TYPES[str(item.type)]) for item in items),
        )
    return found


def _fields(cls: type, raw: dict[str, Any], what: str) -> dict[str, Any]:
    """A decoded JSON object's values of the class's fields, in their order, defaults filled in.

    The dataclass's own __init__ (a keyword call, and an object.__setattr__ per field of a
    frozen class) was half of decoding a change: once its keys are known to be the class's
    fields, the object itself becomes the instance's __dict__ (see `_record`).
    """
    shape = _shape(cls)
    keys = raw.keys()
    if not (shape.required <= keys and keys <= shape.names):
        try:
            cls(**raw)  # for its message
        except TypeError as exc:
            raise ContractError(f"bad {what}: {exc}") from exc
        raise ContractError(f"bad {what}: unexpected fields")  # pragma: no cover
    if tuple(raw) != shape.order:  # orjson encodes a dataclass from its __dict__, in order
        raw = {name: raw[name] if name in raw else shape.defaults[name] for name in shape.order}
    return raw


def _check_types(cls: type, values: dict[str, Any]) -> None:
    for name, allowed in _shape(cls).checks:
        value = values[name]
        if type(value) not in allowed:
            raise ContractError(f"{name} has the wrong type ({type(value).__name__})")


def _record(cls: type[_Record], values: dict[str, Any]) -> _Record:
    """The record whose fields are `values` (checked, in order): all that __init__ does for
    these classes, which have no __post_init__ and no __slots__."""
    record = object.__new__(cls)
    object.__setattr__(record, "__dict__", values)
    return record


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
    values = _fields(ResourceChange, _load(data, RESOURCE_CHANGE_SCHEMA), "resource change")
    if values["interaction"] not in ("create", "update", "delete"):
        raise ContractError(f"unknown interaction {values['interaction']!r}")
    if values["method"] not in (None, *METHODS):
        raise ContractError(f"unknown method {values['method']!r}")
    _check_types(ResourceChange, values)
    return _record(ResourceChange, values)


def decode_request(data: bytes) -> NotificationRequest:
    """Parse a NotificationRequest record."""
    raw = _load(data, NOTIFICATION_REQUEST_SCHEMA)
    values = _fields(NotificationRequest, raw, "notification request")
    if values["kind"] not in ("event", "handshake"):
        raise ContractError(f"unknown kind {values['kind']!r}")
    _check_types(NotificationRequest, values)
    return _record(NotificationRequest, values)
