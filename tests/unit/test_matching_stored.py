"""Plans of stored subscriptions (the matcher's registry load) agree with the full parser, and
the index files many subscriptions under one key and forgets them again."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.core.errors import InvalidSubscription
from herald.core.matching import SubscriptionIndex, plan_of
from herald.core.matching_stored import PlanCompiler
from herald.core.subscriptions import FILTER_CRITERIA_URL, filter_texts, parse_subscription
from tests.support.fhir import backport_subscription
from tests.support.matching import HREX, OPEN, TOPICS, change

# Forms the fast path takes, and neighbours it must leave to the parser (an error included).
FILTERS = [
    "owner=Organization/1",
    "Task?owner=Organization/1",
    "Task.owner=Organization/1",
    "Task?requester=Practitioner/7",
    "Task?owner=Organization/a.b-c",
    "Task?owner=Patient/1",
    "Task?owner=Organization/1/_history/2",
    "Task?owner=Organization/1,Organization/2",
    "Task?owner=Organization/a\\,b",
    "Task?owner=http://x.example/fhir/Organization/1",
    "Task?owner=1",
    "Task?owner:Organization=1",
    "Task?owner=Organization/1&status=completed",
    "Task.owner=Organization/1&Task.status=completed,cancelled",
    "owner=Organization/1&status:not=draft&code=a",
    "Task?owner=Organization/1&status=completed&",
    "Task?owner=Organization/1&&status=completed",
    "Task?owner=Organization/1&requester=Practitioner/7",
    "Task?owner=Organization/1&owner=Organization/2",
    "Task?owner=Organization/1&status=completed ",
    "Task?owner=Organization/1&status=a?b",
    "Task?owner=Organization/1&status",
    "Task?owner=Organization/1&status:text=x",
    "Task?owner=Organization/1&unknown=x",
    "Task?owner=Organization/1&_lastUpdated=gt2024-01-01",
    "Task?owner=Organization/1&code=http://example.org/codes|a",
    "Task?status=completed",
    "Task?code=http://example.org/codes|a",
    "Task?focus=Task/1",
    "Task?for=Patient/1",
    "Task?unknown=Organization/1",
    "Subscription?owner=Organization/1",
    "Task?owner=Organization/" + "x" * 65,
    "Task?owner=organization/1",
    " Task?owner=Organization/1",
    "Task?owner=Organization/",
    "Task?owner=Organization/1/2",
    "Task?owner=Organization/1& status=completed",
    "Task?owner=Organization/1&status=completed\n",
    "Task?owner=Organization/1?status=completed",
    "Task?owner=Organization%2F1",
    "Task?owner=Organization/1%26status=completed",
    "Task:owner=Organization/1",
    "Task?owner:Organization=Organization/1",
    "Patient?owner=Organization/1",
    "Task?code=a",
    "code=|a",
    "Task.code=http://example.org/codes|a",
    "Task?code=http://example.org/codes|",
    "Task?code=a|b|c",
    "Task?code=a,b",
    "Task?code=a%7Cb",
    "Task?code=a\\|b",
    "Task?code= a",
    "Task?code=a b",
    "Task?code:not=a",
    "Task?code=a&status=completed",
    "Task?code=http://x.example/a?b|c",
    "Task?status=completed,cancelled",
    "Task?business-status=x",
    "Task?intent=order",
    "Task.status=draft",
    "Patient?status=completed",
]


def resource(*filters: str, **changes: Any) -> dict[str, Any]:
    stored = backport_subscription("http://127.0.0.1:9/hook", *filters, status="active")
    return {**stored, "id": "s1", **changes}


def parsed_plan(stored: dict[str, Any]) -> Any:
    subscription = parse_subscription(stored, TOPICS, OPEN)
    return plan_of(subscription.topic_url, subscription.criteria)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FILTERS), max_size=2))
def test_the_stored_plan_is_the_plan_of_the_parsed_subscription(filters: list[str]) -> None:
    stored = resource(*filters)
    try:
        expected = parsed_plan(stored)
    except InvalidSubscription as exc:
        with pytest.raises(InvalidSubscription) as raised:
            PlanCompiler(TOPICS).plan(stored)
        assert raised.value.diagnostics == exc.diagnostics
        return
    assert PlanCompiler(TOPICS).plan(stored) == expected
    # The same plan from the registry's columns (topic, filters), without the resource.
    assert PlanCompiler(TOPICS).plan_of_filters(HREX, list(filter_texts(stored))) == expected


@pytest.mark.parametrize(
    "texts",
    [[], ["Task?status=completed"] * 21, ["Task?code=" + "x" * 2048], [""], [" "], [1], [None]],
)
def test_filters_read_back_are_checked_as_the_resource_is(texts: list[object]) -> None:
    stored = resource()
    stored["_criteria"] = {
        "extension": [{"url": FILTER_CRITERIA_URL, "valueString": t} for t in texts]
    }
    compiler = PlanCompiler(TOPICS)
    try:
        expected = compiler.plan(stored)
    except InvalidSubscription as exc:
        with pytest.raises(InvalidSubscription) as raised:
            compiler.plan_of_filters(HREX, texts)
        assert raised.value.diagnostics == exc.diagnostics
        return
    assert compiler.plan_of_filters(HREX, texts) == expected


def test_a_topic_no_longer_served_is_refused_from_the_columns_too() -> None:
    with pytest.raises(InvalidSubscription, match="unsupported topic"):
        PlanCompiler(TOPICS).plan_of_filters("http://example.org/unknown-topic", [])


@pytest.mark.parametrize(
    "changes",
    [
        {"criteria": "http://example.org/unknown-topic"},
        {"criteria": ["not", "a", "string"]},
        {"resourceType": "Task"},
        {"_criteria": {"extension": "not a list"}},
    ],
)
def test_what_the_parser_refuses_is_refused_with_its_reason(changes: dict[str, Any]) -> None:
    stored = resource("owner=Organization/1", **changes)
    with pytest.raises(InvalidSubscription) as expected:
        parse_subscription(stored, TOPICS, OPEN)
    with pytest.raises(InvalidSubscription) as raised:
        PlanCompiler(TOPICS).plan(stored)
    assert raised.value.diagnostics == expected.value.diagnostics


def test_a_topic_named_with_its_version_is_the_topic() -> None:
    stored = resource("Task?status=completed", criteria=f"{HREX}|1.0.0")
    assert PlanCompiler(TOPICS).plan(stored) == parsed_plan(stored)


def test_the_channel_is_not_read() -> None:
    stored = resource("owner=Organization/1")
    stored["channel"] = {**stored["channel"], "header": ["Host: elsewhere"]}
    with pytest.raises(InvalidSubscription):
        parse_subscription(stored, TOPICS, OPEN)
    plan = PlanCompiler(TOPICS).plan(stored)
    assert plan.keys == ("Organization/1",)


def test_subscriptions_with_the_same_filters_share_one_plan() -> None:
    compiler = PlanCompiler(TOPICS)
    first = compiler.plan(resource("Task?status=completed", id="a"))
    second = compiler.plan(resource("Task?status=completed", id="b"))
    assert first is second


def task(owner: str) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "id": "t1",
        "status": "requested",
        "intent": "order",
        "owner": {"reference": owner},
    }


def test_one_key_holds_one_then_many_then_one_subscription_again() -> None:
    compiler = PlanCompiler(TOPICS)
    index = SubscriptionIndex(TOPICS)
    event = change(task("Organization/1"))
    names = ["a", "b", "c"]
    for name in names:
        index.put_plan(name, "active", compiler.plan(resource("owner=Organization/1", id=name)))
    # The same key twice in one filter files the subscription once.
    twice = compiler.plan(resource("owner=Organization/1,Organization/1"))
    index.put_plan("d", "active", twice)
    assert index.match(event) == ["a", "b", "c", "d"]
    index.remove("b")
    index.remove("d")
    assert index.match(event) == ["a", "c"]
    index.remove("a")
    assert index.match(event) == ["c"]
    index.put_plan("c", "active", compiler.plan(resource("owner=Organization/2")))
    assert index.match(event) == []
    assert index.match(change(task("Organization/2"))) == ["c"]
    index.put_plan("c", "off", compiler.plan(resource("owner=Organization/2")))
    assert index.match(change(task("Organization/2"))) == []
    assert len(index) == 0


@pytest.mark.parametrize(
    ("text", "recognised"),
    [
        ("owner=Organization/1", True),
        ("Task.owner=Organization/1&Task.status=completed", True),
        ("Task?owner=Organization/1&status=completed&", True),
        ("Task?owner=Organization/1&requester=Practitioner/7", False),  # the parser decides
        ("Task?owner=Organization/1&status=a?b", False),
        ("Task?owner=Organization/1&unknown=x", False),
        ("Task?status=completed", False),
    ],
)
def test_the_reference_first_forms_skip_the_general_parser(text: str, recognised: bool) -> None:
    compiler = PlanCompiler(TOPICS)
    found = compiler._reference_first(TOPICS[HREX], text)
    assert (found is not None) == recognised
    if found is not None:
        assert found == parsed_plan(resource(text))


@pytest.mark.parametrize(
    ("text", "recognised"),
    [
        ("Task?code=http://example.org/codes|a", True),
        ("code=a", True),
        ("Task.status=completed", True),
        ("Task?code=|a", True),
        ("Task?code=http://example.org/codes|", False),  # any code of the system: unindexed
        ("Task?code=a,b", False),
        ("Task?code:not=a", False),
        ("Task?owner=Organization/1", False),
    ],
)
def test_one_plain_code_skips_the_general_parser(text: str, recognised: bool) -> None:
    found = PlanCompiler(TOPICS)._one_code(HREX, text)
    assert (found is not None) == recognised
    if found is not None:
        assert found == parsed_plan(resource(text))
