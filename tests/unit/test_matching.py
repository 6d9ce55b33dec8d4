"""Matching changes to subscriptions through the index (herald.core.matching)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.core.contracts import ResourceChange
from herald.core.matching import LIVE_STATUSES, SubscriptionIndex
from herald.core.subscriptions import (
    Subscription,
    parse_subscription,
)
from tests.support.fhir import backport_subscription
from tests.support.matching import HREX, OPEN, TOPICS, change, index_of

TOPIC = TOPICS[HREX]


def subscription(sid: str, *filters: str, status: str = "active") -> Subscription:
    resource = backport_subscription("http://127.0.0.1:9000/hook", *filters, status=status)
    return parse_subscription({**resource, "id": sid}, TOPICS, OPEN)


def task(
    owner: str | None = None,
    status: str = "requested",
    intent: str = "order",
    requester: str | None = None,
    tid: str = "t1",
) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Task", "id": tid, "status": status}
    resource["intent"] = intent
    if owner is not None:
        resource["owner"] = {"reference": owner}
    if requester is not None:
        resource["requester"] = {"reference": requester}
    return resource


def ids(index: SubscriptionIndex, event: ResourceChange) -> list[str]:
    return index.match(event)


# --- owner filters ------------------------------------------------------------------------


def test_owner_filters_select_by_relative_and_absolute_owner() -> None:
    index = index_of(
        subscription("a", "Task?owner=Organization/123"),
        subscription("b", "Task.owner=Organization/456"),
        subscription("c", "owner=Organization/123"),
    )
    assert ids(index, change(task("Organization/123"))) == ["a", "c"]
    assert ids(index, change(task("http://example.org/fhir/Organization/123"))) == ["a", "c"]
    assert ids(index, change(task("Organization/456"))) == ["b"]
    assert ids(index, change(task("Organization/789"))) == []
    assert ids(index, change(task(None))) == []


def test_an_absolute_owner_filter_matches_relative_and_same_base_owners() -> None:
    index = index_of(
        subscription("abs", "owner=http://example.org/fhir/Organization/123"),
        subscription("rel", "owner=Organization/123"),
    )
    assert ids(index, change(task("Organization/123"))) == ["abs", "rel"]
    assert ids(index, change(task("http://example.org/fhir/Organization/123"))) == ["abs", "rel"]
    assert ids(index, change(task("https://other.example.org/fhir/Organization/123"))) == ["rel"]


def test_a_plain_id_owner_filter_matches_an_owner_of_any_type_with_that_id() -> None:
    owner_id = subscription("id", "owner=123")
    assert owner_id.matches(task("Organization/123"))
    index = index_of(owner_id)
    assert ids(index, change(task("Organization/123"))) == ["id"]
    assert ids(index, change(task("http://example.org/fhir/Practitioner/123"))) == ["id"]
    assert ids(index, change(task("Organization/1234"))) == []


def test_comma_separated_owners_are_or() -> None:
    index = index_of(subscription("a", "owner=Organization/1,Organization/2"))
    assert ids(index, change(task("Organization/1"))) == ["a"]
    assert ids(index, change(task("Organization/2"))) == ["a"]
    assert ids(index, change(task("Organization/3"))) == []


def test_owner_and_status_must_both_hold() -> None:
    index = index_of(
        subscription("query", "Task?owner=Organization/1&status=completed"),
        subscription("two", "owner=Organization/1", "status=completed"),
    )
    assert ids(index, change(task("Organization/1", "completed"), task("Organization/1"))) == [
        "query",
        "two",
    ]
    assert ids(index, change(task("Organization/1", "in-progress"), task("Organization/1"))) == []
    assert ids(index, change(task("Organization/2", "completed"), task("Organization/2"))) == []


def test_requester_and_identifier_filters() -> None:
    index = index_of(
        subscription("req", "requester=Practitioner/7"),
        subscription("ident", "owner:identifier=http://example.org/npi|42"),
    )
    assert ids(index, change(task(requester="Practitioner/7"))) == ["req"]
    with_identifier = task()
    with_identifier["owner"] = {"identifier": {"system": "http://example.org/npi", "value": "42"}}
    assert ids(index, change(with_identifier)) == ["ident"]


def test_status_only_and_no_filter() -> None:
    index = index_of(
        subscription("all"),
        subscription("done", "status=completed"),
        subscription("org", "owner=Organization/1"),
    )
    assert ids(index, change(task(None, "completed"), task(None))) == ["all", "done"]
    assert ids(index, change(task("Organization/9"))) == ["all"]
    assert ids(index, change(task("Organization/1"))) == ["all", "org"]


# --- the topic decides first ------------------------------------------------------------


def test_nothing_matches_when_the_topic_does_not_fire() -> None:
    index = index_of(subscription("all"), subscription("org", "owner=Organization/1"))
    draft = task("Organization/1", "draft")
    assert ids(index, change(draft)) == []  # create of a draft
    assert ids(index, change(task("Organization/1"), draft)) == []  # draft -> requested
    assert ids(index, change(task("Organization/1", intent="plan"))) == []
    assert ids(index, change(None, task("Organization/1"), "delete")) == []


# --- lifecycle ------------------------------------------------------------------------------


def test_off_subscriptions_are_not_matched_but_those_in_error_keep_counting() -> None:
    # Events of a subscription in error are still numbered and logged, for $events.
    index = index_of(
        subscription("active"),
        subscription("requested", status="requested"),
        subscription("error", status="error"),
        subscription("off", status="off"),
    )
    assert len(index) == 3
    assert ids(index, change(task("Organization/1"))) == ["active", "error", "requested"]


def test_remove_forgets_a_subscription() -> None:
    index = index_of(subscription("a", "owner=Organization/1"), subscription("b"))
    index.remove("a")
    index.remove("never-added")
    assert len(index) == 1
    assert ids(index, change(task("Organization/1"))) == ["b"]
    index.remove("b")
    assert len(index) == 0
    assert ids(index, change(task("Organization/1"))) == []


def test_put_again_with_another_filter_moves_the_subscription() -> None:
    index = index_of(subscription("a", "owner=Organization/1"))
    index.put(subscription("a", "owner=Organization/2"))
    assert len(index) == 1
    assert ids(index, change(task("Organization/1"))) == []
    assert ids(index, change(task("Organization/2"))) == ["a"]
    index.put(subscription("a", "status=completed"))
    assert ids(index, change(task("Organization/2"))) == []
    assert ids(index, change(task("Organization/2", "completed"), task())) == ["a"]
    index.put(subscription("a", "owner=Organization/3"))
    assert ids(index, change(task("Organization/2", "completed"), task())) == []
    assert ids(index, change(task("Organization/3"))) == ["a"]


def test_put_with_a_status_that_is_not_live_removes() -> None:
    index = index_of(subscription("a", "owner=Organization/1"))
    index.put(subscription("a", "owner=Organization/1", status="off"))
    assert len(index) == 0
    assert ids(index, change(task("Organization/1"))) == []
    index.put(subscription("a", "owner=Organization/1", status="requested"))
    assert ids(index, change(task("Organization/1"))) == ["a"]


def test_load_applies_a_batch_and_keeps_the_newest_revision() -> None:
    index = SubscriptionIndex(TOPICS)
    index.load([subscription("a"), subscription("b", status="off")], revision=5)
    assert index.revision == 5
    index.load([], revision=3)
    assert index.revision == 5
    assert ids(index, change(task())) == ["a"]


def test_a_change_with_no_resource_matches_nothing() -> None:
    index = index_of(subscription("a"))
    empty = ResourceChange("e", "Task", "t1", "delete", "1", "2025-01-01T00:00:00Z", None, None, 0)
    assert index.match(empty) == []


# --- the index agrees with brute force ---------------------------------------------------

OWNERS = (
    "Organization/1",
    "Organization/2",
    "Practitioner/1",
    "http://example.org/fhir/Organization/1",
    "http://other.example.org/fhir/Organization/2",
    "Organization/1/_history/3",
    "urn:uuid:0b6f3c8e-2d1a-4c7e-9f3b-8a5d6e4c2b10",
)
FILTER_OWNERS = (*OWNERS, "1", "2")
STATUSES = ("draft", "requested", "in-progress", "completed")
SUBSCRIPTION_STATUSES = ("requested", "active", "error", "off")

owner_values = st.lists(st.sampled_from(FILTER_OWNERS), min_size=1, max_size=2, unique=True)
filters = st.one_of(
    st.just(()),
    owner_values.map(lambda owners: (f"owner={','.join(owners)}",)),
    st.tuples(owner_values, st.sampled_from(STATUSES)).map(
        lambda pair: (f"Task?owner={','.join(pair[0])}&status={pair[1]}",)
    ),
    st.tuples(owner_values, st.sampled_from(STATUSES)).map(
        lambda pair: (f"Task.owner={','.join(pair[0])}", f"status={pair[1]}")
    ),
    st.sampled_from(STATUSES).map(lambda status: (f"status:not={status}",)),
    st.sampled_from(OWNERS).map(lambda owner: (f"requester={owner}",)),
)
subscriptions = st.builds(
    lambda sid, chosen, status: subscription(sid, *chosen, status=status),
    st.sampled_from([f"s{n}" for n in range(8)]),
    filters,
    st.sampled_from(SUBSCRIPTION_STATUSES),
)
tasks = st.builds(
    task,
    owner=st.none() | st.sampled_from(OWNERS),
    status=st.sampled_from(STATUSES),
    intent=st.sampled_from(("order", "plan")),
    requester=st.none() | st.sampled_from(OWNERS),
)
changes = st.one_of(
    tasks.map(lambda current: change(current)),
    st.tuples(tasks, tasks).map(lambda pair: change(pair[1], pair[0])),
    tasks.map(lambda previous: change(None, previous, "delete")),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(subscriptions, max_size=12), st.lists(changes, min_size=1, max_size=4))
def test_the_index_agrees_with_brute_force(
    puts: list[Subscription], events: list[ResourceChange]
) -> None:
    index = index_of(*puts)
    latest = {item.id: item for item in puts}  # a later put replaces an earlier one
    live = [item for item in latest.values() if item.status in LIVE_STATUSES]
    assert len(index) == len(live)
    for event in events:
        resource = event.current if event.current is not None else event.previous
        assert resource is not None
        fires = TOPIC.fires("Task", event.interaction, event.previous, event.current)
        expected = sorted(item.id for item in live if fires and item.matches(resource))
        assert ids(index, event) == expected


@pytest.mark.parametrize("owner", OWNERS)
def test_every_pool_owner_is_found_by_its_own_filter(owner: str) -> None:
    index = index_of(subscription("a", f"owner={owner}"))
    assert ids(index, change(task(owner))) == ["a"]
