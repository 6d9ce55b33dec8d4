"""Hypothesis against the JSON and XML readers: whatever arrives, the answer is a 4xx
(InvalidResource) or a Task that can be served back in both formats and sent to subscribers."""

from __future__ import annotations

import copy
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herald.core.errors import FhirError
from herald.core.notifications import encode_bundle
from herald.core.resources import validate_task
from herald.core.structure import check_depth, validate_structure
from herald.core.subscriptions import EndpointPolicy, parse_subscription
from herald.runtime.packaged import fhir_xml, load_topics
from herald.runtime.settings import Settings
from tests.support.fhir import backport_subscription

XML_CODEC = fhir_xml()
from_xml, to_xml = XML_CODEC.from_xml, XML_CODEC.to_xml

VALID: dict[str, Any] = {
    "resourceType": "Task",
    "id": "t1",
    "status": "requested",
    "intent": "order",
    "description": "a task",
    "owner": {"reference": "Organization/1"},
    "input": [{"type": {"text": "kind"}, "valueString": "v"}],
    "extension": [{"url": "http://example.org/x", "valueInteger": 1}],
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
element_names = st.sampled_from(
    ["status", "intent", "description", "owner", "input", "extension", "contained", "text",
     "meta", "authoredOn", "priority", "_description", "id", "foo", "resourceType"]
)  # fmt: skip


def _served_everywhere(task: dict[str, Any]) -> None:
    """What was accepted can be answered in JSON and XML and sent in both formats."""
    orjson.dumps(task)
    from_xml(to_xml(task))
    bundle = {"resourceType": "Bundle", "type": "history", "entry": [{"resource": task}]}
    encode_bundle(bundle, "application/fhir+json", XML_CODEC)
    encode_bundle(bundle, "application/fhir+xml", XML_CODEC)


def _read_json(body: bytes) -> None:
    try:
        resource = orjson.loads(body)
        if not isinstance(resource, dict):
            return
        check_depth(resource)
        task = validate_task(resource, definitions=XML_CODEC)
    except (FhirError, orjson.JSONDecodeError):
        return
    _served_everywhere(task)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(element_names, json_values), max_size=4))
def test_mutated_json_tasks_are_refused_or_servable(changes: list[tuple[str, Any]]) -> None:
    resource = copy.deepcopy(VALID)
    for name, value in changes:
        resource[name] = value
    _read_json(orjson.dumps(resource))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_refused_or_servable(body: bytes) -> None:
    _read_json(body)
    try:
        task = validate_task(from_xml(body), definitions=XML_CODEC)
    except FhirError:
        return
    _served_everywhere(task)


XML = to_xml(VALID).decode()


@settings(max_examples=150, deadline=None)
@given(st.integers(0, len(XML)), st.integers(0, 20), st.text(max_size=12))
def test_mutated_xml_tasks_are_refused_or_servable(at: int, cut: int, insert: str) -> None:
    body = (XML[:at] + insert + XML[at + cut :]).encode("utf-8", "surrogatepass")
    try:
        resource = from_xml(body)
        check_depth(resource)
        task = validate_task(resource, definitions=XML_CODEC)
    except FhirError:
        return
    _served_everywhere(task)


SUBSCRIPTION = backport_subscription(
    "https://example.org/hook", "Task?owner=Organization/1", headers=["Authorization: Bearer x"]
)
TOPICS = load_topics(Settings().topics_dir)
subscription_paths = st.sampled_from(
    ["status", "criteria", "_criteria", "channel", "end", "reason", "foo", "id", "meta"]
)
channel_paths = st.sampled_from(
    ["type", "endpoint", "payload", "_payload", "header", "extension", "_type", "bar"]
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(subscription_paths, json_values), max_size=3),
    st.lists(st.tuples(channel_paths, json_values), max_size=3),
)
def test_mutated_subscriptions_are_refused_or_accepted_whole(
    top: list[tuple[str, Any]], channel: list[tuple[str, Any]]
) -> None:
    resource = copy.deepcopy(SUBSCRIPTION)
    for name, value in top:
        resource[name] = value
    if isinstance(resource.get("channel"), dict):
        for name, value in channel:
            resource["channel"][name] = value
    try:
        parse_subscription(resource, TOPICS, EndpointPolicy())
        validate_structure(resource, XML_CODEC)
    except FhirError:
        return
    orjson.dumps(resource)
    to_xml(resource)
