"""Notification Bundles and the CapabilityStatement, checked against independent FHIR models.

`fhir.resources` 8.x ships R4B (and STU3) models; Bundle, Parameters, Task and
CapabilityStatement have the same structure in R4 and R4B, so the R4B models validate them.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.parameters import Parameters
from fhir.resources.R4B.task import Task

from herald.core.capability import TOPIC_CANONICAL, capability_statement
from herald.core.fhir import format_instant, now_instant, utc_now
from herald.core.notifications import (
    EVENT_NOTIFICATION,
    HANDSHAKE,
    HEARTBEAT,
    NOTIFICATION_PROFILE,
    QUERY_STATUS,
    STATUS_PROFILE,
    NotificationEvent,
    SubscriptionState,
    notification_bundle,
    status_parameters,
)
from herald.runtime.packaged import load_topics

REPO = Path(__file__).resolve().parents[2]
TOPICS_DIR = REPO / "schemas" / "topics"
HREX = "http://hl7.org/fhir/us/davinci-hrex/SubscriptionTopic/Task"
BASE = "https://broker.example.org/fhir"
NOW = "2025-03-04T15:20:31.512Z"


def state(
    status: str = "active", count: int = 2, content: str = "id-only", error: str | None = None
) -> SubscriptionState:
    return SubscriptionState("sub-123", HREX, status, count, content=content, error=error)


def task(tid: str, status: str = "requested") -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "id": tid,
        "meta": {"versionId": "1", "lastUpdated": "2025-03-04T15:20:30.998Z"},
        "status": status,
        "intent": "order",
        "owner": {"reference": "Organization/123"},
    }


EVENTS = (
    NotificationEvent(1, "2025-03-04T15:20:30.998Z", "Task", "task-1", "create", task("task-1")),
    NotificationEvent(
        2, "2025-03-04T15:20:31.100Z", "Task", "task-2", "update", task("task-2", "completed")
    ),
)


def validated(bundle: dict[str, Any]) -> dict[str, Any]:
    """Check a notification Bundle with the fhir.resources models and the R4 history rules."""
    json.dumps(bundle)  # plain JSON
    model = Bundle.model_validate(bundle)
    assert model.type == "history"
    assert bundle["meta"]["profile"] == [NOTIFICATION_PROFILE]
    assert bundle["timestamp"] == NOW
    status = bundle["entry"][0]["resource"]
    assert status["resourceType"] == "Parameters"
    assert model.entry is not None
    assert isinstance(model.entry[0].resource, Parameters)
    Parameters.model_validate(status)
    for entry in bundle["entry"]:  # bdl-3 and bdl-4: history entries need request and response
        assert entry["request"]["method"] in ("GET", "POST", "PUT", "DELETE")
        assert entry["request"]["url"]
        assert entry["response"]["status"]
        assert entry["fullUrl"]
    return bundle


def parameters(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = bundle["entry"][0]["resource"]["parameter"]
    return result


def values(bundle: dict[str, Any], name: str) -> list[Any]:
    found = []
    for parameter in parameters(bundle):
        if parameter["name"] == name:
            value = [v for k, v in parameter.items() if k.startswith("value") or k == "part"]
            found.append(value[0])
    return found


def parts(event: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        part["name"]: next(v for k, v in part.items() if k.startswith("value")) for part in event
    }


def check_status_entry(bundle: dict[str, Any], sid: str = "sub-123") -> None:
    entry = bundle["entry"][0]
    status = entry["resource"]
    assert status["meta"]["profile"] == [STATUS_PROFILE]
    assert entry["fullUrl"] == f"urn:uuid:{status['id']}"
    assert entry["request"] == {"method": "GET", "url": f"{BASE}/Subscription/{sid}/$status"}
    assert entry["request"]["url"].endswith(f"Subscription/{sid}/$status")
    assert entry["response"] == {"status": "200"}
    assert values(bundle, "subscription") == [{"reference": f"{BASE}/Subscription/{sid}"}]


# --- handshake and heartbeat ----------------------------------------------------------------


def test_handshake() -> None:
    bundle = validated(notification_bundle(BASE, state("requested", 0), HANDSHAKE, timestamp=NOW))
    assert len(bundle["entry"]) == 1
    check_status_entry(bundle)
    assert values(bundle, "status") == ["requested"]
    assert values(bundle, "type") == ["handshake"]
    assert values(bundle, "events-since-subscription-start") == ["0"]
    assert values(bundle, "notification-event") == []
    assert values(bundle, "topic") == [HREX]


def test_heartbeat_carries_the_current_count_and_no_event() -> None:
    bundle = validated(notification_bundle(BASE, state("active", 7), HEARTBEAT, timestamp=NOW))
    assert len(bundle["entry"]) == 1
    assert values(bundle, "type") == ["heartbeat"]
    assert values(bundle, "events-since-subscription-start") == ["7"]
    assert values(bundle, "notification-event") == []


# --- event notifications -------------------------------------------------------------------


def test_id_only_event_notification_with_two_events() -> None:
    bundle = validated(
        notification_bundle(BASE, state(), EVENT_NOTIFICATION, EVENTS, timestamp=NOW)
    )
    check_status_entry(bundle)
    assert values(bundle, "type") == ["event-notification"]
    assert values(bundle, "status") == ["active"]
    assert values(bundle, "topic") == [HREX]
    assert values(bundle, "events-since-subscription-start") == ["2"]
    events = [parts(event) for event in values(bundle, "notification-event")]
    assert events == [
        {
            "event-number": "1",
            "timestamp": "2025-03-04T15:20:30.998Z",
            "focus": {"reference": f"{BASE}/Task/task-1"},
        },
        {
            "event-number": "2",
            "timestamp": "2025-03-04T15:20:31.100Z",
            "focus": {"reference": f"{BASE}/Task/task-2"},
        },
    ]
    assert len(bundle["entry"]) == 3
    created, updated = bundle["entry"][1:]
    assert created == {
        "fullUrl": f"{BASE}/Task/task-1",
        "request": {"method": "POST", "url": "Task"},
        "response": {"status": "201"},
    }
    assert updated == {
        "fullUrl": f"{BASE}/Task/task-2",
        "request": {"method": "PUT", "url": "Task/task-2"},
        "response": {"status": "200"},
    }
    assert all("resource" not in entry for entry in bundle["entry"][1:])


def test_a_delete_event_is_shown_as_a_delete() -> None:
    event = NotificationEvent(3, "2025-03-04T15:20:32.000Z", "Task", "task-1", "delete")
    bundle = validated(
        notification_bundle(BASE, state(count=3), EVENT_NOTIFICATION, [event], timestamp=NOW)
    )
    assert bundle["entry"][1] == {
        "fullUrl": f"{BASE}/Task/task-1",
        "request": {"method": "DELETE", "url": "Task/task-1"},
        "response": {"status": "204"},
    }


def test_empty_content_has_no_focus_no_topic_and_only_the_status_entry() -> None:
    bundle = validated(
        notification_bundle(BASE, state(content="empty"), EVENT_NOTIFICATION, EVENTS, timestamp=NOW)
    )
    assert len(bundle["entry"]) == 1
    check_status_entry(bundle)
    assert values(bundle, "topic") == []
    events = [parts(event) for event in values(bundle, "notification-event")]
    assert [event["event-number"] for event in events] == ["1", "2"]
    assert all("focus" not in event for event in events)
    assert "Task/" not in json.dumps(bundle)


def test_full_resource_entries_carry_the_resource() -> None:
    bundle = validated(
        notification_bundle(
            BASE, state(content="full-resource"), EVENT_NOTIFICATION, EVENTS, timestamp=NOW
        )
    )
    assert values(bundle, "topic") == [HREX]
    assert len(bundle["entry"]) == 3
    for entry, event in zip(bundle["entry"][1:], EVENTS, strict=True):
        assert entry["fullUrl"] == f"{BASE}/Task/{event.resource_id}"
        assert entry["resource"] == event.resource
        Task.model_validate(entry["resource"])
        assert entry["request"] and entry["response"]
    events = [parts(event) for event in values(bundle, "notification-event")]
    assert [event["focus"] for event in events] == [
        {"reference": f"{BASE}/Task/task-1"},
        {"reference": f"{BASE}/Task/task-2"},
    ]


def test_full_resource_without_the_resource_falls_back_to_request_and_response() -> None:
    event = NotificationEvent(1, "2025-03-04T15:20:30.998Z", "Task", "task-1", "update")
    bundle = validated(
        notification_bundle(
            BASE, state(content="full-resource"), EVENT_NOTIFICATION, [event], timestamp=NOW
        )
    )
    assert "resource" not in bundle["entry"][1]
    assert bundle["entry"][1]["request"] == {"method": "PUT", "url": "Task/task-1"}


def test_an_errored_subscription_reports_its_error() -> None:
    bundle = validated(
        notification_bundle(
            BASE,
            state("error", 4, error="endpoint answered 503"),
            HEARTBEAT,
            timestamp=NOW,
        )
    )
    (error,) = values(bundle, "error")
    assert error["text"] == "endpoint answered 503"
    assert error["coding"][0]["system"] == (
        "http://terminology.hl7.org/CodeSystem/subscription-error"
    )


def test_every_bundle_and_status_gets_a_fresh_id() -> None:
    first = notification_bundle(BASE, state(), HEARTBEAT, timestamp=NOW)
    second = notification_bundle(BASE, state(), HEARTBEAT, timestamp=NOW)
    assert first["id"] != second["id"]
    assert first["entry"][0]["resource"]["id"] != second["entry"][0]["resource"]["id"]


@pytest.mark.parametrize("content", ["empty", "id-only", "full-resource"])
def test_status_parameters_for_the_status_operation(content: str) -> None:
    resource = status_parameters(BASE, state(content=content, count=9), QUERY_STATUS)
    model = Parameters.model_validate(resource)
    assert resource["meta"]["profile"] == [STATUS_PROFILE]
    assert model.parameter is not None
    names = [p.name for p in model.parameter]
    assert names[:1] == ["subscription"]
    assert ("topic" in names) == (content != "empty")
    assert {"status", "type", "events-since-subscription-start"} <= set(names)
    assert "notification-event" not in names


# --- the CapabilityStatement -----------------------------------------------------------------


def _subscription_resource(statement: dict[str, Any]) -> dict[str, Any]:
    resources = statement["rest"][0]["resource"]
    found: dict[str, Any] = next(r for r in resources if r["type"] == "Subscription")
    return found


def test_capability_statement() -> None:
    topics = load_topics(TOPICS_DIR)
    statement = capability_statement(BASE, topics, date="2025-03-04T15:20:31Z")
    model = CapabilityStatement.model_validate(statement)
    assert model.fhirVersion == "4.0.1"
    # The canonicals spelled out: the statement must name the IG's, not whatever a constant says.
    backport = "http://hl7.org/fhir/uv/subscriptions-backport"
    assert statement["instantiates"] == [
        f"{backport}/CapabilityStatement/backport-subscription-server-r4"
    ]
    subscription = _subscription_resource(statement)
    assert subscription["supportedProfile"] == [
        f"{backport}/StructureDefinition/backport-subscription"
    ]
    assert subscription["extension"] == [{"url": TOPIC_CANONICAL, "valueCanonical": HREX}]
    assert {r["type"] for r in statement["rest"][0]["resource"]} == {
        "Subscription",
        "Task",
        "Basic",
        "CodeSystem",
    }


def test_capability_statement_lists_one_canonical_per_topic(tmp_path: Path) -> None:
    (tmp_path / "hrex-task.json").write_text((TOPICS_DIR / "hrex-task.json").read_text())
    other: dict[str, Any] = {
        "resourceType": "SubscriptionTopic",
        "url": "http://example.org/fhir/SubscriptionTopic/other",
        "resourceTrigger": [{"resource": "Task", "supportedInteraction": ["delete"]}],
    }
    (tmp_path / "other.json").write_text(json.dumps(other))
    topics = load_topics(tmp_path)
    statement = capability_statement(BASE, topics, date="2025-03-04")
    CapabilityStatement.model_validate(statement)
    canonicals = [
        e["valueCanonical"]
        for e in _subscription_resource(statement)["extension"]
        if e["url"] == TOPIC_CANONICAL
    ]
    assert sorted(canonicals) == sorted(topics) == sorted([HREX, other["url"]])


def _version(tid: str, version: int) -> dict[str, Any]:
    resource = task(tid)
    resource["meta"] = {**resource["meta"], "versionId": str(version)}
    return resource


def test_full_resource_focus_names_the_version_so_each_resolves_to_one_entry() -> None:
    two_versions = [
        NotificationEvent(n, NOW, "Task", "x", "update", _version("x", n), version_id=str(n))
        for n in (1, 2)
    ]
    bundle = validated(
        notification_bundle(
            BASE, state(content="full-resource"), EVENT_NOTIFICATION, two_versions, timestamp=NOW
        )
    )
    focus = [parts(event)["focus"]["reference"] for event in values(bundle, "notification-event")]
    assert focus == [f"{BASE}/Task/x/_history/1", f"{BASE}/Task/x/_history/2"]
    for reference in focus:
        url, _, version = reference.partition("/_history/")
        matching = [
            e
            for e in bundle["entry"][1:]
            if e["fullUrl"] == url and e["resource"]["meta"]["versionId"] == version
        ]
        assert len(matching) == 1
    id_only = notification_bundle(BASE, state(), EVENT_NOTIFICATION, two_versions, timestamp=NOW)
    assert {parts(e)["focus"]["reference"] for e in values(id_only, "notification-event")} == {
        f"{BASE}/Task/x"
    }


def test_a_create_by_put_is_notified_as_the_put_that_happened() -> None:
    created = NotificationEvent(1, NOW, "Task", "x", "create", version_id="1", method="PUT")
    bundle = validated(
        notification_bundle(BASE, state(), EVENT_NOTIFICATION, [created], timestamp=NOW)
    )
    assert bundle["entry"][1]["request"] == {"method": "PUT", "url": "Task/x"}
    assert bundle["entry"][1]["response"] == {"status": "201"}
    posted = NotificationEvent(1, NOW, "Task", "x", "create", version_id="1", method="POST")
    entry = notification_bundle(BASE, state(), EVENT_NOTIFICATION, [posted], timestamp=NOW)
    assert entry["entry"][1]["request"] == {"method": "POST", "url": "Task"}


def test_bundle_and_status_ids_are_random_version_4_uuids() -> None:
    state = SubscriptionState("s1", "http://example.org/topic", "active", 0)
    seen = set()
    for _ in range(200):
        bundle = notification_bundle("http://h/fhir", state, "heartbeat", timestamp="t")
        for text in (bundle["id"], bundle["entry"][0]["resource"]["id"]):
            parsed = uuid.UUID(text)
            assert (str(parsed), parsed.version, parsed.variant) == (
                text,
                4,
                uuid.RFC_4122,
            )
            seen.add(text)
    assert len(seen) == 400


def test_now_instant_is_the_current_time_as_format_instant_writes_it() -> None:
    for _ in range(3):  # the first call formats its second, the next ones reuse it
        before = utc_now()
        stamped = now_instant()
        after = utc_now()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamped)
        assert format_instant(before) <= stamped <= format_instant(after)
        assert datetime.fromisoformat(stamped).tzinfo == UTC
