"""The subscription index on token filters, its pre-selection, and topics beyond HRex."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.core.contracts import ResourceChange
from herald.core.errors import TopicDefinitionError
from herald.core.matching import LIVE_STATUSES, SubscriptionIndex, index_key
from herald.core.subscriptions import (
    Subscription,
    parse_subscription,
)
from herald.core.topics import TopicCatalog, parse_topic
from herald.runtime.packaged import load_topics
from tests.support.fhir import backport_subscription
from tests.support.matching import HREX, OPEN, REPO, TOPICS, change, index_of

CLOSED = "http://example.org/fhir/SubscriptionTopic/task-closed"
CODES = "http://example.org/codes"


def subscription(
    sid: str, *filters: str, topic: str = HREX, topics: TopicCatalog = TOPICS
) -> Subscription:
    resource = backport_subscription(
        "http://127.0.0.1:9000/hook", *filters, topic=topic, status="active"
    )
    return parse_subscription({**resource, "id": sid}, topics, OPEN)


def task(
    owner: str | None = None, status: str = "requested", code: str | None = None, **more: Any
) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Task", "id": "t1", "status": status}
    resource["intent"] = "order"
    if owner is not None:
        resource["owner"] = {"reference": owner}
    if code is not None:
        system, _, value = code.rpartition("|")
        coding = {"code": value, **({"system": system} if system else {})}
        resource["code"] = {"coding": [coding]}
    resource.update(more)
    return resource


def ids(index: SubscriptionIndex, event: ResourceChange) -> list[str]:
    return index.match(event)


# --- what a subscription is filed under -----------------------------------------------------


@pytest.mark.parametrize(
    ("filters", "parameter", "keys"),
    [
        (("owner=Organization/1",), "owner", ("Organization/1",)),
        (("owner=http://x.example/fhir/Organization/1/_history/2",), "owner", ("Organization/1",)),
        (("owner:Organization=1",), "owner", ("Organization/1",)),
        (("owner=urn:uuid:abc",), "owner", ("urn:uuid:abc",)),
        (("status=completed&owner=Organization/1",), "owner", ("Organization/1",)),
        (("status=completed", "owner=Organization/1"), "owner", ("Organization/1",)),
        (("status=completed,cancelled",), "status", ("completed", "cancelled")),
        ((f"code={CODES}|a",), "code", ("a",)),
        (("code=|a",), "code", ("a",)),
        (("owner=1", "status=completed"), "status", ("completed",)),
    ],
)
def test_subscriptions_are_filed_under_a_reference_then_a_code(
    filters: tuple[str, ...], parameter: str, keys: tuple[str, ...]
) -> None:
    key = index_key(subscription("s", *filters))
    assert key is not None
    assert (key.parameter.name, key.keys) == (parameter, keys)


@pytest.mark.parametrize(
    "filters",
    [
        (),
        ("owner=1",),
        ("status:not=completed",),
        ("owner:missing=true",),
        ("owner:identifier=http://npi|1",),
        (f"code={CODES}|",),
        ("_lastUpdated=gt2024-01-01",),
    ],
)
def test_forms_without_an_equality_key_are_unindexed(filters: tuple[str, ...]) -> None:
    assert index_key(subscription("s", *filters)) is None


# --- token filters through the index ---------------------------------------------------------


def test_status_and_code_filters_are_found_through_the_index() -> None:
    index = index_of(
        subscription("done", "status=completed"),
        subscription("either", "status=completed,cancelled"),
        subscription("code-a", f"code={CODES}|a"),
        subscription("any-a", "code=a"),
        subscription("no-system-a", "code=|a"),
        subscription("status-system", "status=http://hl7.org/fhir/task-status|completed"),
    )
    assert ids(index, change(task(status="completed"), task())) == [
        "done",
        "either",
        "status-system",
    ]
    assert ids(index, change(task(status="cancelled"), task())) == ["either"]
    assert ids(index, change(task(status="in-progress"), task())) == []
    assert ids(index, change(task(code=f"{CODES}|a"))) == ["any-a", "code-a"]
    assert ids(index, change(task(code="a"))) == ["any-a", "no-system-a"]
    assert ids(index, change(task(code="http://other|a"))) == ["any-a"]
    assert ids(index, change(task(code="b"))) == []


def test_an_event_only_considers_the_subscriptions_its_keys_select() -> None:
    many = [subscription(f"o{n}", f"owner=Organization/{n}") for n in range(200)]
    many += [subscription(f"c{n}", f"code=c{n}") for n in range(50)]
    many += [subscription(f"s{n}", f"owner=Organization/{n}&status=completed") for n in range(50)]
    many += [subscription("all")]
    index = index_of(*many)
    event = change(task("Organization/7", "completed", code="c3"), task())
    assert index.candidates(event) == ["all", "c3", "o7", "s7"]
    assert ids(index, event) == ["all", "c3", "o7", "s7"]
    in_progress = change(task("Organization/7", "in-progress", code="c3"), task())
    assert index.candidates(in_progress) == ["all", "c3", "o7", "s7"]
    assert ids(index, in_progress) == ["all", "c3", "o7"]


def test_absolute_and_system_values_are_still_tested_after_the_lookup() -> None:
    index = index_of(
        subscription("abs", "owner=http://a.example/fhir/Organization/1"),
        subscription("sys", "code=http://example.org/codes|a"),
    )
    other_base = change(task("https://b.example/fhir/Organization/1"))
    assert index.candidates(other_base) == ["abs"]
    assert ids(index, other_base) == []
    other_system = change(task(code="http://other|a"))
    assert index.candidates(other_system) == ["sys"]
    assert ids(index, other_system) == []


def test_replacing_and_removing_token_filed_subscriptions() -> None:
    index = index_of(subscription("a", "status=completed"))
    index.put(subscription("a", "code=x"))
    assert ids(index, change(task(status="completed"), task())) == []
    assert ids(index, change(task(code="x"))) == ["a"]
    index.remove("a")
    assert ids(index, change(task(code="x"))) == []
    assert len(index) == 0


# --- the index agrees with brute force, token filters included ------------------------------

OWNERS = ("Organization/1", "Organization/2", "http://a.example/fhir/Organization/1", "urn:x")
STATUSES = ("requested", "in-progress", "completed", "draft")
TASK_CODES = (f"{CODES}|a", "a", "b", "http://other|a")
FILTERS = [
    "owner=Organization/1",
    "owner=Organization/1,urn:x",
    "owner:Organization=2",
    "owner=1",
    "status=completed",
    "status=completed,in-progress",
    "status:not=completed",
    "code=a",
    f"code={CODES}|a",
    "code=|a",
    f"code={CODES}|",
    "code=a,b",
    "owner=Organization/1&status=completed",
    "owner=Organization/2&code=a",
]

filters = st.lists(st.sampled_from(FILTERS), max_size=2).map(tuple)
subscriptions = st.builds(
    lambda sid, chosen, status: subscription(sid, *chosen).__class__(
        **{**subscription(sid, *chosen).__dict__, "status": status}
    ),
    st.sampled_from([f"s{n}" for n in range(10)]),
    filters,
    st.sampled_from(("requested", "active", "error", "off")),
)
tasks = st.builds(
    task,
    owner=st.none() | st.sampled_from(OWNERS),
    status=st.sampled_from(STATUSES),
    code=st.none() | st.sampled_from(TASK_CODES),
)
changes = st.one_of(
    tasks.map(lambda current: change(current)),
    st.tuples(tasks, tasks).map(lambda pair: change(pair[1], pair[0])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(subscriptions, max_size=15), st.lists(changes, min_size=1, max_size=4))
def test_the_token_index_agrees_with_brute_force(
    puts: list[Subscription], events: list[ResourceChange]
) -> None:
    index = index_of(*puts)
    latest = {item.id: item for item in puts}
    live = [item for item in latest.values() if item.status in LIVE_STATUSES]
    topic = TOPICS[HREX]
    for event in events:
        resource = event.current if event.current is not None else event.previous
        assert resource is not None
        fires = topic.fires("Task", event.interaction, event.previous, event.current)
        expected = sorted(item.id for item in live if fires and item.matches(resource))
        assert ids(index, event) == expected


# --- topics as data ----------------------------------------------------------------------------


def closed_topic() -> dict[str, Any]:
    """Another Task topic: a Task is closed (completed, or deleted), no code needed."""
    return {
        "resourceType": "SubscriptionTopic",
        "url": CLOSED,
        "status": "active",
        "resourceTrigger": [
            {
                "resource": "Task",
                "supportedInteraction": ["update", "delete"],
                "queryCriteria": {
                    "previous": "status:not=completed",
                    "current": "status=completed",
                    "resultForDelete": "test-passes",
                    "requireBoth": True,
                },
            }
        ],
        "canFilterBy": [{"resource": "Task", "filterParameter": "owner"}],
    }


def test_a_second_topic_file_works_through_the_index_without_code(tmp_path: Path) -> None:
    directory = tmp_path / "topics"
    directory.mkdir()
    for path in (REPO / "schemas" / "topics").glob("*.json"):
        (directory / path.name).write_text(path.read_text())
    (directory / "closed.json").write_text(json.dumps(closed_topic()))
    topics = load_topics(directory)
    closed = subscription("closed", "owner=Organization/1", topic=CLOSED, topics=topics)
    hrex = subscription("hrex", "owner=Organization/1", topics=topics)
    index = index_of(closed, hrex, topics=topics)
    done = task("Organization/1", "completed")
    assert ids(index, change(done, task("Organization/1"))) == ["closed", "hrex"]
    assert ids(index, change(done, done)) == ["hrex"]  # already completed before
    assert ids(index, change(None, task("Organization/1"), "delete")) == ["closed"]
    assert ids(index, change(None, task("Organization/2"), "delete")) == []
    assert ids(index, change(task("Organization/1"))) == ["hrex"]  # create: not a closing trigger
    with pytest.raises(Exception, match="status"):
        subscription("bad", "status=completed", topic=CLOSED, topics=topics)


def test_a_topic_with_fhirpath_criteria_is_rejected_with_the_reason() -> None:
    resource = closed_topic()
    resource["resourceTrigger"][0]["fhirPathCriteria"] = "%current.status = 'completed'"
    with pytest.raises(TopicDefinitionError, match="fhirPathCriteria is not supported"):
        parse_topic(resource)


def test_a_topic_filtering_by_an_unknown_parameter_is_rejected() -> None:
    resource = closed_topic()
    resource["canFilterBy"] = [{"resource": "Task", "filterParameter": "colour"}]
    with pytest.raises(TopicDefinitionError, match="'colour', which is not a search parameter"):
        parse_topic(resource)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("status:in=http://example.org/vs", "ValueSet membership (':in') is not supported"),
        ("code:below=http://loinc.org|1", "subsumption (':below') is not supported"),
        ("owner.name=Acme", "Chained search parameters are not supported"),
        ("Task?patient=Patient/1", "Filtering on 'patient' is not allowed here"),
        ("_lastUpdated=xx2024", "Unknown prefix 'xx'"),
        ("_lastUpdated=gt2024-13", "Malformed date"),
        ("owner:Encounter=1", "':Encounter' is not a target"),
        ("owner=Organization/1&status:missing=maybe", "takes one value, true or false"),
        ("Patient?owner=Organization/1", "resource type 'Patient'"),
        ("status=a|b|c", "more than one '|'"),
    ],
)
def test_unsupported_filter_forms_are_rejected_at_create_with_the_reason(
    text: str, reason: str
) -> None:
    with pytest.raises(Exception, match="is not supported") as raised:
        subscription("s", text)
    assert reason in str(raised.value)
