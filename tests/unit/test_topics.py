"""SubscriptionTopics as data (herald.core.topics): the shipped HRex topic and topics from files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from herald.core.errors import TopicDefinitionError
from herald.core.topics import Topic
from herald.runtime.packaged import load_topics

REPO = Path(__file__).resolve().parents[2]
TOPICS_DIR = REPO / "schemas" / "topics"
HREX = "http://hl7.org/fhir/us/davinci-hrex/SubscriptionTopic/Task"
CANCELLED = "http://example.org/fhir/SubscriptionTopic/task-cancelled"
PATIENT = "http://example.org/fhir/SubscriptionTopic/patient-any"


def task(status: str = "requested", intent: str = "order", **fields: Any) -> dict[str, Any]:
    return {"resourceType": "Task", "id": "t1", "status": status, "intent": intent, **fields}


@pytest.fixture(scope="module")
def hrex() -> Topic:
    return load_topics(TOPICS_DIR)[HREX]


def write_topic(directory: Path, name: str, resource: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(resource), encoding="utf-8")
    return path


def cancelled_topic() -> dict[str, Any]:
    """A second Task topic: cancellations and deletions, requireBoth false."""
    return {
        "resourceType": "SubscriptionTopic",
        "url": CANCELLED,
        "status": "active",
        "resourceTrigger": [
            {
                "resource": "http://hl7.org/fhir/StructureDefinition/Task",
                "supportedInteraction": ["create", "delete"],
                "queryCriteria": {
                    "previous": "status=cancelled",
                    "resultForCreate": "test-fails",
                    "current": "status=cancelled",
                    "resultForDelete": "test-passes",
                    "requireBoth": False,
                },
            }
        ],
        "canFilterBy": [{"resource": "Task", "filterParameter": "requester"}],
    }


def minimal_topic(**changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "SubscriptionTopic",
        "url": "http://example.org/fhir/SubscriptionTopic/minimal",
        "resourceTrigger": [{"resource": "Task"}],
    }
    resource.update(changes)
    return resource


# --- the shipped HRex topic ---------------------------------------------------------------------


def test_the_shipped_directory_holds_the_hrex_topic() -> None:
    registry = load_topics(TOPICS_DIR)
    assert list(registry) == [HREX]
    assert len(registry) == 1
    assert HREX in registry
    assert f"{HREX}|1.1.0" in registry  # a versioned canonical names the same topic
    assert registry[f"{HREX}|1.1.0"].url == HREX
    assert "http://example.org/other" not in registry
    not_a_url: object = 42
    assert not_a_url not in registry
    with pytest.raises(KeyError):
        registry["http://example.org/other"]


def test_hrex_topic_shape(hrex: Topic) -> None:
    assert hrex.resource_types == frozenset({"Task"})
    assert hrex.resource["name"] == "HRexTaskTopic"
    (trigger,) = hrex.triggers
    assert trigger.interactions == frozenset({"create", "update"})
    assert trigger.require_both is True
    assert trigger.result_for_create is True
    assert trigger.result_for_delete is False


def test_hrex_filter_parameters(hrex: Topic) -> None:
    assert hrex.filter_parameters("Task") == frozenset(
        {"code", "owner", "requester", "status", "_lastUpdated"}
    )
    assert "_lastUpdated" in hrex.filter_parameters("Task")
    assert hrex.filter_parameters("Patient") == frozenset()
    owner = next(f for f in hrex.can_filter_by if f.parameter == "owner")
    assert owner.modifiers == ("identifier",)


@pytest.mark.parametrize("status", ["requested", "received", "in-progress", "completed"])
def test_create_of_a_non_draft_order_fires(hrex: Topic, status: str) -> None:
    assert hrex.fires("Task", "create", None, task(status))


def test_create_of_a_draft_does_not_fire(hrex: Topic) -> None:
    assert not hrex.fires("Task", "create", None, task("draft"))


@pytest.mark.parametrize("intent", ["plan", "proposal", "filler-order", "unknown"])
def test_create_with_another_intent_does_not_fire(hrex: Topic, intent: str) -> None:
    assert not hrex.fires("Task", "create", None, task(intent=intent))


@pytest.mark.parametrize(
    ("before", "after"),
    [("requested", "in-progress"), ("in-progress", "completed"), ("completed", "completed")],
)
def test_update_where_both_versions_pass_fires(hrex: Topic, before: str, after: str) -> None:
    assert hrex.fires("Task", "update", task(before), task(after))


def test_update_from_draft_to_requested_does_not_fire(hrex: Topic) -> None:
    # requireBoth: the previous version (a draft) fails, so the update does not fire.
    assert not hrex.fires("Task", "update", task("draft"), task("requested"))


def test_update_from_requested_to_draft_does_not_fire(hrex: Topic) -> None:
    assert not hrex.fires("Task", "update", task("requested"), task("draft"))


def test_update_that_leaves_the_order_intent_does_not_fire(hrex: Topic) -> None:
    assert not hrex.fires("Task", "update", task(), task(intent="plan"))


@pytest.mark.parametrize("status", ["draft", "requested", "completed"])
def test_delete_never_fires(hrex: Topic, status: str) -> None:
    assert not hrex.fires("Task", "delete", task(status), None)


def test_other_resource_types_never_fire(hrex: Topic) -> None:
    patient = {"resourceType": "Patient", "id": "p1"}
    assert not hrex.fires("Patient", "create", None, patient)
    assert not hrex.fires("Patient", "update", patient, patient)


def test_unknown_interaction_does_not_fire(hrex: Topic) -> None:
    assert not hrex.fires("Task", "patch", task(), task())


# --- topics as data: a new topic needs no code ----------------------------------------------


def test_a_new_topic_file_is_served_without_code(tmp_path: Path) -> None:
    write_topic(tmp_path, "hrex-task.json", json.loads((TOPICS_DIR / "hrex-task.json").read_text()))
    write_topic(tmp_path, "task-cancelled.json", cancelled_topic())
    registry = load_topics(tmp_path)
    assert set(registry) == {HREX, CANCELLED}
    topic = registry[CANCELLED]
    assert topic.filter_parameters("Task") == frozenset({"requester"})

    # delete fires here (resultForDelete test-passes), while the HRex topic ignores it
    assert topic.fires("Task", "delete", task("requested"), None)
    assert topic.fires("Task", "delete", task("draft"), None)
    assert not registry[HREX].fires("Task", "delete", task("requested"), None)
    # create: previous counts as failed (resultForCreate test-fails); requireBoth false -> OR
    assert topic.fires("Task", "create", None, task("cancelled"))
    assert not topic.fires("Task", "create", None, task("requested"))
    # update is not a supported interaction of this topic
    assert not topic.fires("Task", "update", task("cancelled"), task("cancelled"))


def test_a_topic_without_query_criteria_fires_on_every_supported_interaction(
    tmp_path: Path,
) -> None:
    write_topic(
        tmp_path,
        "patient.json",
        {
            "resourceType": "SubscriptionTopic",
            "url": PATIENT,
            "resourceTrigger": [{"resource": "http://hl7.org/fhir/StructureDefinition/Patient"}],
            "canFilterBy": [{"filterParameter": "identifier"}],
        },
    )
    topic = load_topics(tmp_path)[PATIENT]
    patient = {"resourceType": "Patient", "id": "p1"}
    assert topic.resource_types == frozenset({"Patient"})
    # canFilterBy.resource defaults to the first trigger's resource type
    assert topic.filter_parameters("Patient") == frozenset({"identifier"})
    assert topic.fires("Patient", "create", None, patient)
    assert topic.fires("Patient", "update", patient, patient)
    assert topic.fires("Patient", "delete", patient, None)
    assert not topic.fires("Task", "create", None, task())


# --- bad topic files ------------------------------------------------------------------------


BAD_TOPICS: dict[str, object] = {
    "not-a-topic": {**minimal_topic(), "resourceType": "Subscription"},
    "no-url": minimal_topic(url=""),
    "no-trigger": minimal_topic(resourceTrigger=[]),
    "unknown-interaction": minimal_topic(
        resourceTrigger=[{"resource": "Task", "supportedInteraction": ["create", "patch"]}]
    ),
    "bad-result-for-create": minimal_topic(
        resourceTrigger=[{"resource": "Task", "queryCriteria": {"resultForCreate": "maybe"}}]
    ),
    "bad-result-for-delete": minimal_topic(
        resourceTrigger=[{"resource": "Task", "queryCriteria": {"resultForDelete": True}}]
    ),
    "criteria-not-a-string": minimal_topic(
        resourceTrigger=[{"resource": "Task", "queryCriteria": {"current": 42}}]
    ),
    "criteria-unknown-parameter": minimal_topic(
        resourceTrigger=[{"resource": "Task", "queryCriteria": {"current": "colour=red"}}]
    ),
    "criteria-malformed": minimal_topic(
        resourceTrigger=[{"resource": "Task", "queryCriteria": {"previous": "status"}}]
    ),
    "criteria-unsearchable-type": minimal_topic(
        resourceTrigger=[{"resource": "Patient", "queryCriteria": {"current": "gender=male"}}]
    ),
    "filter-without-parameter": minimal_topic(canFilterBy=[{"resource": "Task"}]),
    "trigger-not-an-object": minimal_topic(resourceTrigger=["Task"]),
    "interactions-not-a-list": minimal_topic(
        resourceTrigger=[{"resource": "Task", "supportedInteraction": 5}]
    ),
    "not-an-object": [minimal_topic()],
}


@pytest.mark.parametrize("name", sorted(BAD_TOPICS))
def test_a_bad_topic_file_raises_topic_definition_error(tmp_path: Path, name: str) -> None:
    write_topic(tmp_path, f"{name}.json", BAD_TOPICS[name])
    with pytest.raises(TopicDefinitionError):
        load_topics(tmp_path)


def test_a_file_that_is_not_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{ not json", encoding="utf-8")
    with pytest.raises(TopicDefinitionError, match=r"broken\.json"):
        load_topics(tmp_path)


def test_criteria_errors_name_the_trigger(tmp_path: Path) -> None:
    write_topic(tmp_path, "t.json", BAD_TOPICS["criteria-unknown-parameter"])
    with pytest.raises(TopicDefinitionError, match=r"resourceTrigger\[0\]\.current"):
        load_topics(tmp_path)


def test_an_empty_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("not a topic", encoding="utf-8")
    with pytest.raises(TopicDefinitionError, match="no topic files"):
        load_topics(tmp_path)


# --- remembered trigger results ---------------------------------------------------------------


@pytest.mark.parametrize(
    "current",
    [
        task("requested"),
        task("draft"),
        task("requested", "plan"),
        task(None, "order"),  # type: ignore[arg-type]
        {"resourceType": "Task", "id": "t1", "intent": "order"},
        task(["requested"]),  # type: ignore[arg-type]
        task(7),  # type: ignore[arg-type]
        task(True),  # type: ignore[arg-type]
        task({"value": "requested"}),  # type: ignore[arg-type]
        {**task("requested"), "resourceType": "Patient"},
        {**task("requested"), "resourceType": 5},
    ],
)
def test_remembered_results_are_those_of_the_criteria(hrex: Topic, current: Any) -> None:
    (trigger,) = hrex.triggers
    assert trigger.current is not None
    expected = trigger.current.matches(current)
    for _ in range(2):  # tested, then remembered
        assert trigger.fires("create", None, current) is expected
        assert trigger.fires("update", task("requested"), current) is expected
    assert trigger.fires("update", current, task("requested")) is expected


def test_a_trigger_remembers_a_bounded_number_of_results(hrex: Topic) -> None:
    (trigger,) = hrex.triggers
    for number in range(3000):
        assert not trigger.fires("create", None, task("requested", f"i{number}"))
        assert trigger.fires("create", None, task("requested"))
    assert len(trigger._current.results) <= 1024  # type: ignore[attr-defined]


def test_either_version_passing_is_decided_without_the_other(tmp_path: Path) -> None:
    topic = cancelled_topic()
    topic["resourceTrigger"][0]["supportedInteraction"] = ["create", "update", "delete"]
    write_topic(tmp_path, "cancelled.json", topic)
    loaded = load_topics(tmp_path)[CANCELLED]
    assert loaded.fires("Task", "update", task("cancelled"), task("requested"))
    assert loaded.fires("Task", "update", task("requested"), task("cancelled"))
    assert not loaded.fires("Task", "update", task("requested"), task("requested"))
    assert loaded.fires("Task", "update", task("cancelled"), None)
