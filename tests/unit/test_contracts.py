"""The records on the bus (herald.core.contracts) against their JSON Schemas in schemas/kafka/."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from herald.core.contracts import (
    NOTIFICATION_REQUEST_SCHEMA,
    RESOURCE_CHANGE_SCHEMA,
    NotificationRequest,
    ResourceChange,
    decode_change,
    decode_request,
    encode,
)
from herald.core.errors import ContractError

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas" / "kafka"

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def _date_time(value: object) -> bool:
    """RFC 3339 date-time. jsonschema checks this format only when the optional
    rfc3339-validator package is installed, which this project does not require."""
    if not isinstance(value, str):
        return True
    if not _RFC3339.fullmatch(value):
        return False
    datetime.fromisoformat(value.upper().replace("Z", "+00:00"))  # ValueError: out of range
    return True


FORMATS = FormatChecker()
FORMATS.checks("date-time", raises=ValueError)(_date_time)


def validator(name: str) -> Any:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FORMATS)


CHANGE_SCHEMA = validator("resource-change.v1.json")
REQUEST_SCHEMA = validator("notification-request.v1.json")


def task(status: str = "requested") -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "id": "task-1",
        "meta": {"versionId": "2", "lastUpdated": "2025-03-04T15:20:30.998Z"},
        "status": status,
        "intent": "order",
        "owner": {"reference": "Organization/123"},
    }


def resource_change(interaction: str = "update") -> ResourceChange:
    current = None if interaction == "delete" else task("completed")
    previous = None if interaction == "create" else task()
    return ResourceChange(
        event_id="0b6f3c8e-2d1a-4c7e-9f3b-8a5d6e4c2b10",
        resource_type="Task",
        resource_id="task-1",
        interaction=interaction,
        version_id="2",
        occurred_at="2025-03-04T15:20:30.998Z",
        current=current,
        previous=previous,
        registry_revision=17,
    )


EVENT = NotificationRequest(
    request_id="event:sub-123:0b6f3c8e",
    kind="event",
    subscription_id="sub-123",
    source_event_id="0b6f3c8e-2d1a-4c7e-9f3b-8a5d6e4c2b10",
    requested_at="2025-03-04T15:20:31.002Z",
    resource_type="Task",
    resource_id="task-1",
    version_id="2",
    interaction="update",
    occurred_at="2025-03-04T15:20:30.998Z",
)
HANDSHAKE = NotificationRequest(
    request_id="handshake:sub-123:1",
    kind="handshake",
    subscription_id="sub-123",
    source_event_id="write-1",
    requested_at="2025-03-04T15:00:02.104+01:00",
)


def as_json(record: ResourceChange | NotificationRequest) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(encode(record))
    return loaded


def errors(schema: Any, instance: object) -> list[str]:
    return [error.message for error in schema.iter_errors(instance)]


# --- encoding follows the schemas; decoding inverts encoding ------------------------------


@pytest.mark.parametrize("interaction", ["create", "update", "delete"])
def test_resource_changes_follow_their_schema_and_round_trip(interaction: str) -> None:
    change = resource_change(interaction)
    record = as_json(change)
    assert record["schema"] == RESOURCE_CHANGE_SCHEMA
    assert errors(CHANGE_SCHEMA, record) == []
    assert decode_change(encode(change)) == change


@pytest.mark.parametrize("request_", [EVENT, HANDSHAKE], ids=["event", "handshake"])
def test_notification_requests_follow_their_schema_and_round_trip(
    request_: NotificationRequest,
) -> None:
    record = as_json(request_)
    assert record["schema"] == NOTIFICATION_REQUEST_SCHEMA
    assert errors(REQUEST_SCHEMA, record) == []
    assert decode_request(encode(request_)) == request_


def test_a_handshake_encodes_its_absent_fields_as_null() -> None:
    record = as_json(HANDSHAKE)
    assert record["resource_type"] is None
    assert record["interaction"] is None


def test_a_record_without_optional_fields_decodes_to_the_defaults() -> None:
    record = {k: v for k, v in as_json(HANDSHAKE).items() if v is not None}
    assert errors(REQUEST_SCHEMA, record) == []
    assert decode_request(orjson.dumps(record)) == HANDSHAKE


def test_the_schemas_describe_the_dataclasses() -> None:
    change_fields = dataclasses.fields(ResourceChange)
    assert set(CHANGE_SCHEMA.schema["properties"]) == {f.name for f in change_fields}
    # `method` came later: records without it (older producers) stay valid.
    required = {f.name for f in change_fields if f.default is dataclasses.MISSING}
    assert set(CHANGE_SCHEMA.schema["required"]) == required | {"schema"}
    request_fields = dataclasses.fields(NotificationRequest)
    assert set(REQUEST_SCHEMA.schema["properties"]) == {f.name for f in request_fields}
    without_default = {f.name for f in request_fields if f.default is dataclasses.MISSING}
    assert set(REQUEST_SCHEMA.schema["required"]) == without_default | {"schema"}
    assert CHANGE_SCHEMA.schema["properties"]["schema"]["const"] == RESOURCE_CHANGE_SCHEMA
    assert REQUEST_SCHEMA.schema["properties"]["schema"]["const"] == NOTIFICATION_REQUEST_SCHEMA


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)


@given(
    body=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    revision=st.integers(0, 2**62),
)
def test_any_json_resource_round_trips(body: dict[str, Any], revision: int) -> None:
    current = {**body, "resourceType": "Task"}
    change = dataclasses.replace(
        resource_change("create"), current=current, registry_revision=revision
    )
    assert errors(CHANGE_SCHEMA, as_json(change)) == []
    assert decode_change(encode(change)) == change


# --- decoding rejects records that break the contract --------------------------------------


def test_decode_rejects_what_is_not_json() -> None:
    with pytest.raises(ContractError, match="not JSON"):
        decode_change(b"{not json")
    with pytest.raises(ContractError, match="not JSON"):
        decode_request(b"\xff\xfe")


@pytest.mark.parametrize("data", [b"[]", b"42", b'"text"', b"null"])
def test_decode_rejects_json_that_is_not_an_object(data: bytes) -> None:
    with pytest.raises(ContractError, match="expected schema"):
        decode_change(data)
    with pytest.raises(ContractError, match="expected schema"):
        decode_request(data)


def test_decode_rejects_a_wrong_schema_tag() -> None:
    with pytest.raises(ContractError, match=re.escape(RESOURCE_CHANGE_SCHEMA)):
        decode_change(encode(EVENT))
    with pytest.raises(ContractError, match=re.escape(NOTIFICATION_REQUEST_SCHEMA)):
        decode_request(encode(resource_change()))
    record = as_json(resource_change())
    record["schema"] = "herald.resource-change/2"
    with pytest.raises(ContractError, match="resource-change/2"):
        decode_change(orjson.dumps(record))
    del record["schema"]
    with pytest.raises(ContractError, match="expected schema"):
        decode_change(orjson.dumps(record))


@pytest.mark.parametrize(
    "field",
    sorted(f.name for f in dataclasses.fields(ResourceChange) if f.default is dataclasses.MISSING),
)
def test_decode_rejects_a_change_missing_a_field(field: str) -> None:
    record = as_json(resource_change())
    del record[field]
    with pytest.raises(ContractError, match="bad resource change"):
        decode_change(orjson.dumps(record))


@pytest.mark.parametrize("field", ["request_id", "kind", "subscription_id", "source_event_id"])
def test_decode_rejects_a_request_missing_a_field(field: str) -> None:
    record = as_json(EVENT)
    del record[field]
    with pytest.raises(ContractError, match="bad notification request"):
        decode_request(orjson.dumps(record))


def test_a_change_without_a_method_is_read_as_implied() -> None:
    record = as_json(resource_change())
    del record["method"]
    assert decode_change(orjson.dumps(record)).method is None
    with pytest.raises(ContractError, match="method"):
        decode_change(orjson.dumps({**record, "method": "GET"}))


def test_decode_rejects_unknown_fields() -> None:
    change = {**as_json(resource_change()), "surprise": 1}
    with pytest.raises(ContractError):
        decode_change(orjson.dumps(change))
    request = {**as_json(EVENT), "surprise": 1}
    with pytest.raises(ContractError):
        decode_request(orjson.dumps(request))


@pytest.mark.parametrize("interaction", ["patch", "read", "", None])
def test_decode_rejects_an_unknown_interaction(interaction: str | None) -> None:
    record = {**as_json(resource_change()), "interaction": interaction}
    with pytest.raises(ContractError, match="unknown interaction"):
        decode_change(orjson.dumps(record))


@pytest.mark.parametrize("kind", ["heartbeat", "Event", "", None])
def test_decode_rejects_an_unknown_kind(kind: str | None) -> None:
    record = {**as_json(EVENT), "kind": kind}
    with pytest.raises(ContractError, match="unknown kind"):
        decode_request(orjson.dumps(record))


# --- the schemas reject records consumers would not accept --------------------------------


@pytest.mark.parametrize("field", sorted(CHANGE_SCHEMA.schema["required"]))
def test_the_change_schema_requires_every_field(field: str) -> None:
    record = as_json(resource_change())
    del record[field]
    assert errors(CHANGE_SCHEMA, record)


@pytest.mark.parametrize("field", sorted(REQUEST_SCHEMA.schema["required"]))
def test_the_request_schema_requires_its_fields(field: str) -> None:
    record = as_json(EVENT)
    del record[field]
    assert errors(REQUEST_SCHEMA, record)


def test_the_schemas_reject_extra_fields() -> None:
    assert errors(CHANGE_SCHEMA, {**as_json(resource_change()), "surprise": 1})
    assert errors(REQUEST_SCHEMA, {**as_json(HANDSHAKE), "surprise": 1})


CHANGE_VIOLATIONS: dict[str, dict[str, Any]] = {
    "wrong schema tag": {"schema": "herald.resource-change/2"},
    "unknown interaction": {"interaction": "patch"},
    "empty event id": {"event_id": ""},
    "lower-case resource type": {"resource_type": "task"},
    "invalid resource id": {"resource_id": "no spaces"},
    "empty version": {"version_id": ""},
    "occurred_at not a date-time": {"occurred_at": "yesterday"},
    "occurred_at without a zone": {"occurred_at": "2025-03-04T15:20:30"},
    "occurred_at out of range": {"occurred_at": "2025-13-04T15:20:30Z"},
    "negative revision": {"registry_revision": -1},
    "revision as text": {"registry_revision": "17"},
    "current without resourceType": {"current": {"id": "task-1"}},
    "update without current": {"current": None},
    "current as a list": {"current": [task()]},
}


@pytest.mark.parametrize("case", sorted(CHANGE_VIOLATIONS))
def test_the_change_schema_rejects(case: str) -> None:
    record = {**as_json(resource_change("update")), **CHANGE_VIOLATIONS[case]}
    assert errors(CHANGE_SCHEMA, record)


def test_the_change_schema_ties_current_and_previous_to_the_interaction() -> None:
    create = as_json(resource_change("create"))
    assert errors(CHANGE_SCHEMA, {**create, "previous": task()})
    assert errors(CHANGE_SCHEMA, {**create, "current": None})
    delete = as_json(resource_change("delete"))
    assert errors(CHANGE_SCHEMA, {**delete, "current": task()})


REQUEST_VIOLATIONS: dict[str, dict[str, Any]] = {
    "wrong schema tag": {"schema": "herald.notification-request/2"},
    "unknown kind": {"kind": "heartbeat"},
    "empty request id": {"request_id": ""},
    "invalid subscription id": {"subscription_id": "sub/123"},
    "requested_at not a date-time": {"requested_at": "now"},
    "event without resource type": {"resource_type": None},
    "event without version": {"version_id": None},
    "event without interaction": {"interaction": None},
    "event with an unknown interaction": {"interaction": "patch"},
    "event without occurred_at": {"occurred_at": None},
}


@pytest.mark.parametrize("case", sorted(REQUEST_VIOLATIONS))
def test_the_request_schema_rejects(case: str) -> None:
    record = {**as_json(EVENT), **REQUEST_VIOLATIONS[case]}
    assert errors(REQUEST_SCHEMA, record)


def test_the_date_time_format_is_checked() -> None:
    # Guard: without a date-time checker the format keyword would silently pass anything.
    assert not FORMATS.conforms("yesterday", "date-time")
    assert FORMATS.conforms("2025-03-04T15:20:30.998Z", "date-time")
    assert FORMATS.conforms("2025-03-04T15:20:30-04:00", "date-time")


@pytest.mark.parametrize(
    ("name", "value"),
    [("registry_revision", "17"), ("registry_revision", True), ("current", []), ("event_id", 5)],
)
def test_decode_rejects_a_field_of_the_wrong_type(name: str, value: object) -> None:
    raw = as_json(resource_change())
    raw[name] = value
    with pytest.raises(ContractError, match=name):
        decode_change(orjson.dumps(raw))


def test_a_record_with_its_fields_in_another_order_decodes_to_the_same_record() -> None:
    raw = as_json(resource_change())
    shuffled = dict(reversed(list(raw.items())))
    decoded = decode_change(orjson.dumps(shuffled))
    assert decoded == resource_change()
    # re-encoded in the fields' order, as encoding the record itself does
    assert encode(decoded) == encode(resource_change())
    handshake = {k: v for k, v in reversed(list(as_json(HANDSHAKE).items())) if v is not None}
    assert encode(decode_request(orjson.dumps(handshake))) == encode(HANDSHAKE)


@pytest.mark.parametrize("request_", [EVENT, HANDSHAKE], ids=["event", "handshake"])
def test_decoded_records_behave_as_constructed_ones(request_: NotificationRequest) -> None:
    decoded = decode_request(encode(request_))
    assert type(decoded) is NotificationRequest
    assert hash(decoded) == hash(request_)
    assert repr(decoded) == repr(request_)
    assert dataclasses.replace(decoded, kind=request_.kind) == request_
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.kind = "handshake"  # type: ignore[misc]
