"""Validation of the Tasks clients write (herald.core.resources)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from herald.core.errors import InvalidResource
from herald.core.fhir import TASK_INTENT_CODES, TASK_STATUS_CODES
from herald.core.resources import validate_task, with_version
from herald.runtime.packaged import fhir_xml

TASK: dict[str, Any] = {
    "resourceType": "Task",
    "id": "task-1",
    "meta": {
        "versionId": "99",
        "lastUpdated": "1999-01-01T00:00:00Z",
        "profile": [
            "http://hl7.org/fhir/us/davinci-hrex/StructureDefinition/hrex-task-data-request"
        ],
    },
    "status": "requested",
    "intent": "order",
    "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
    "owner": {"reference": "Organization/123"},
    "requester": {"reference": "Organization/456"},
    "for": {"reference": "Patient/p1"},
}


def check(resource: object, **kwargs: Any) -> Any:
    """validate_task with the shipped R4 definitions."""
    return validate_task(resource, definitions=fhir_xml(), **kwargs)


def task(**changes: Any) -> dict[str, Any]:
    resource = copy.deepcopy(TASK)
    for key, value in changes.items():
        key = key.rstrip("_")
        if value is None:
            resource.pop(key, None)
        else:
            resource[key] = value
    return resource


def test_a_valid_task_is_returned_without_server_meta() -> None:
    sent = task()
    cleaned = check(sent)
    assert cleaned["meta"] == {"profile": TASK["meta"]["profile"]}
    assert {k: v for k, v in cleaned.items() if k != "meta"} == {
        k: v for k, v in TASK.items() if k != "meta"
    }
    assert sent == TASK  # the client's body is not changed


def test_meta_with_only_server_elements_is_emptied() -> None:
    cleaned = check(task(meta={"versionId": "3", "lastUpdated": "2020-01-01T00:00:00Z"}))
    assert "versionId" not in cleaned.get("meta", {})
    assert "lastUpdated" not in cleaned.get("meta", {})


def test_a_task_without_meta_or_id_is_fine_on_create() -> None:
    cleaned = check(task(id=None, meta=None))
    assert "id" not in cleaned
    assert "meta" not in cleaned


def test_an_update_needs_the_same_id_in_body_and_url() -> None:
    assert check(task(), url_id="task-1")["id"] == "task-1"
    with pytest.raises(InvalidResource, match="differs") as caught:
        check(task(), url_id="task-2")
    assert caught.value.expression == "Task.id"
    with pytest.raises(InvalidResource, match="must carry its id"):
        check(task(id=None), url_id="task-1")


@pytest.mark.parametrize("bad_id", ["has space", "a" * 65, "", "task_1", "ünïcode", 42])
def test_an_invalid_id_is_rejected(bad_id: object) -> None:
    with pytest.raises(InvalidResource, match="invalid id"):
        check(task(id=bad_id))


@pytest.mark.parametrize("body", [None, [], "Task", 7, [TASK]])
def test_a_body_that_is_not_an_object_is_rejected(body: object) -> None:
    with pytest.raises(InvalidResource, match="JSON object"):
        check(body)


@pytest.mark.parametrize("resource_type", ["Patient", "task", None])
def test_a_wrong_resource_type_is_rejected(resource_type: str | None) -> None:
    with pytest.raises(InvalidResource, match="expected resourceType Task"):
        check(task(resourceType=resource_type))


@pytest.mark.parametrize("status", ["done", "Requested", None, 1])
def test_an_unknown_status_is_rejected(status: object) -> None:
    with pytest.raises(InvalidResource, match="task-status") as caught:
        check(task(status=status))
    assert caught.value.expression == "Task.status"


@pytest.mark.parametrize("intent", ["command", "ORDER", None])
def test_an_unknown_intent_is_rejected(intent: object) -> None:
    with pytest.raises(InvalidResource, match="task-intent") as caught:
        check(task(intent=intent))
    assert caught.value.expression == "Task.intent"


@pytest.mark.parametrize("status", sorted(TASK_STATUS_CODES))
def test_every_r4_status_is_accepted(status: str) -> None:
    assert check(task(status=status))["status"] == status


@pytest.mark.parametrize("intent", sorted(TASK_INTENT_CODES))
def test_every_r4_intent_is_accepted(intent: str) -> None:
    assert check(task(intent=intent))["intent"] == intent


@pytest.mark.parametrize("element", ["owner", "requester", "for", "focus"])
@pytest.mark.parametrize("value", ["Organization/123", ["Organization/123"], 5])
def test_references_must_be_objects(element: str, value: object) -> None:
    resource = task()
    resource[element] = value
    with pytest.raises(InvalidResource, match="must be a Reference") as caught:
        check(resource)
    assert caught.value.expression == f"Task.{element}"


def test_meta_must_be_an_object() -> None:
    with pytest.raises(InvalidResource, match="meta"):
        check(task(meta=["versionId"]))


def test_invalid_resource_is_a_400() -> None:
    with pytest.raises(InvalidResource) as caught:
        check(task(status="done"))
    assert caught.value.status_code == 400
    assert caught.value.issue_code == "invalid"


# --- with_version -------------------------------------------------------------------------


def test_with_version_stamps_id_and_meta_and_keeps_resource_type_first() -> None:
    cleaned = check(task(id=None))
    stamped = with_version(cleaned, "srv-1", 3, "2025-03-04T15:20:30.998Z")
    assert list(stamped)[:2] == ["resourceType", "id"]
    assert stamped["resourceType"] == "Task"
    assert stamped["id"] == "srv-1"
    assert stamped["meta"] == {
        "profile": TASK["meta"]["profile"],
        "versionId": "3",
        "lastUpdated": "2025-03-04T15:20:30.998Z",
    }
    assert stamped["owner"] == TASK["owner"]
    assert "id" not in cleaned  # the input is not changed
    assert "versionId" not in cleaned["meta"]


def test_with_version_replaces_an_existing_id_and_version() -> None:
    body = {"status": "requested", "id": "old", "resourceType": "Task", "meta": {"versionId": "1"}}
    stamped = with_version(body, "task-1", 2, "2025-01-01T00:00:00.000Z")
    assert list(stamped) == ["resourceType", "id", "status", "meta"]
    assert stamped["id"] == "task-1"
    assert stamped["meta"] == {"versionId": "2", "lastUpdated": "2025-01-01T00:00:00.000Z"}
    assert body["id"] == "old"
    assert body["meta"] == {"versionId": "1"}
