"""The backport Subscription (herald.core.subscriptions): what Herald accepts and refuses."""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from herald.core.errors import FhirError, InvalidResource, InvalidSubscription
from herald.core.subscriptions import (
    FILTER_CRITERIA_URL,
    HEARTBEAT_PERIOD_URL,
    MAX_COUNT_URL,
    PAYLOAD_CONTENT_URL,
    TIMEOUT_URL,
    EndpointPolicy,
    Subscription,
    check_client_status,
    expired,
    parse_subscription,
)
from herald.runtime.packaged import load_topics

REPO = Path(__file__).resolve().parents[2]
TOPICS = load_topics(REPO / "schemas" / "topics")
HREX = "http://hl7.org/fhir/us/davinci-hrex/SubscriptionTopic/Task"
STRICT = EndpointPolicy()
R5_FILTER_CRITERIA_URL = (
    "http://hl7.org/fhir/5.0/subscriptions-backport/StructureDefinition/backport-filter-criteria"
)

# The §1 example of the design notes: HRex Task topic, Task?owner=Organization/123, id-only.
EXAMPLE: dict[str, Any] = {
    "resourceType": "Subscription",
    "id": "sub-123",
    "meta": {
        "profile": [
            "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"
        ]
    },
    "status": "requested",
    "end": "2030-12-31T23:59:59Z",
    "reason": "Notify payer of new/updated HRex Tasks owned by Organization/123",
    "criteria": HREX,
    "_criteria": {
        "extension": [{"url": FILTER_CRITERIA_URL, "valueString": "Task?owner=Organization/123"}]
    },
    "channel": {
        "extension": [
            {"url": HEARTBEAT_PERIOD_URL, "valueUnsignedInt": 3600},
            {"url": TIMEOUT_URL, "valueUnsignedInt": 30},
            {"url": MAX_COUNT_URL, "valuePositiveInt": 20},
        ],
        "type": "rest-hook",
        "endpoint": "https://payer.example.org/fhir-notifications/task",
        "payload": "application/fhir+json",
        "_payload": {"extension": [{"url": PAYLOAD_CONTENT_URL, "valueCode": "id-only"}]},
        "header": ["Authorization: Bearer 4f1c0d2e-example-shared-secret"],
    },
}


def example() -> dict[str, Any]:
    return copy.deepcopy(EXAMPLE)


def with_filters(*texts: str) -> dict[str, Any]:
    resource = example()
    resource["_criteria"] = {
        "extension": [{"url": FILTER_CRITERIA_URL, "valueString": text} for text in texts]
    }
    return resource


def with_channel(**changes: Any) -> dict[str, Any]:
    resource = example()
    for key, value in changes.items():
        if value is None:
            resource["channel"].pop(key, None)
        else:
            resource["channel"][key] = value
    return resource


def with_channel_extension(url: str, **value: Any) -> dict[str, Any]:
    resource = example()
    resource["channel"]["extension"] = [{"url": url, **value}]
    return resource


def parse(resource: object, policy: EndpointPolicy = STRICT) -> Subscription:
    return parse_subscription(resource, TOPICS, policy)


def task(owner: str | None = "Organization/123", status: str = "requested") -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Task", "id": "t1", "status": status}
    resource["intent"] = "order"
    if owner is not None:
        resource["owner"] = {"reference": owner}
    return resource


# --- a valid Subscription -----------------------------------------------------------------


def test_the_example_parses() -> None:
    resource = example()
    subscription = parse(resource)
    assert subscription.id == "sub-123"
    assert subscription.status == "requested"
    assert subscription.topic_url == HREX
    assert subscription.filters == ("Task?owner=Organization/123",)
    assert subscription.resource_type == "Task"
    assert subscription.endpoint == "https://payer.example.org/fhir-notifications/task"
    assert subscription.payload == "application/fhir+json"
    assert subscription.content == "id-only"
    assert subscription.headers == ("Authorization: Bearer 4f1c0d2e-example-shared-secret",)
    assert subscription.heartbeat_period == 3600
    assert subscription.timeout == 30
    assert subscription.max_count == 20
    assert subscription.end == "2030-12-31T23:59:59Z"
    assert subscription.resource is resource
    assert resource == EXAMPLE  # parsing does not change what the client sent


def test_the_example_matches_tasks_by_owner() -> None:
    subscription = parse(example())
    assert subscription.matches(task("Organization/123"))
    assert subscription.matches(task("https://ehr.example.org/fhir/Organization/123"))
    assert not subscription.matches(task("Organization/456"))
    assert not subscription.matches(task(None))


def test_defaults_when_the_optional_extensions_are_absent() -> None:
    resource = example()
    del resource["_criteria"]
    del resource["channel"]["extension"]
    del resource["channel"]["_payload"]
    del resource["channel"]["header"]
    del resource["status"]
    del resource["id"]
    subscription = parse(resource)
    assert subscription.id == ""
    assert subscription.status == "requested"
    assert subscription.filters == ()
    assert subscription.criteria == ()
    assert subscription.resource_type == ""
    assert subscription.matches(task("Organization/999"))  # no filter: every Task
    assert subscription.heartbeat_period is None  # absent: no heartbeats
    assert subscription.timeout == 10
    assert subscription.max_count == 100
    assert subscription.content == "id-only"
    assert subscription.headers == ()


def test_the_server_decides_the_status() -> None:
    resource = example()
    resource["status"] = "off"
    assert parse_subscription(resource, TOPICS, STRICT, status="requested").status == "requested"
    assert parse(resource).status == "off"


def test_a_versioned_topic_canonical_is_accepted() -> None:
    resource = example()
    resource["criteria"] = f"{HREX}|1.1.0"
    assert parse(resource).topic_url == HREX


@pytest.mark.parametrize(
    "text",
    [
        "Task?owner=Organization/123",
        "Task.owner=Organization/123",
        "owner=Organization/123",
    ],
)
def test_the_three_filter_syntaxes_are_equivalent(text: str) -> None:
    reference = parse(with_filters("Task?owner=Organization/123"))
    subscription = parse(with_filters(text))
    assert subscription.filters == (text,)  # kept as the client wrote it
    assert subscription.criteria == reference.criteria
    assert str(subscription.criteria[0]) == "Task?owner=Organization/123"
    for owner in (
        "Organization/123",
        "http://example.org/fhir/Organization/123",
        "Organization/124",
        None,
    ):
        sample = task(owner)
        assert subscription.matches(sample) == reference.matches(sample)
    assert subscription.matches(task("Organization/123"))
    assert not subscription.matches(task("Organization/124"))


def test_several_filters_are_anded_and_commas_are_or() -> None:
    subscription = parse(
        with_filters("Task?owner=Organization/1,Organization/2", "status=completed,failed")
    )
    assert subscription.matches(task("Organization/1", "completed"))
    assert subscription.matches(task("Organization/2", "failed"))
    assert not subscription.matches(task("Organization/3", "completed"))
    assert not subscription.matches(task("Organization/1", "in-progress"))
    same = parse(with_filters("Task?owner=Organization/1,Organization/2&status=completed,failed"))
    for sample in (task("Organization/1", "completed"), task("Organization/3", "failed")):
        assert same.matches(sample) == subscription.matches(sample)


@pytest.mark.parametrize(
    "text",
    [
        "Task?owner:identifier=http://example.org/npi|123",
        "requester=Practitioner/7",
        "code=http://hl7.org/fhir/CodeSystem/task-code|fulfill",
        "status:not=completed",
        "_lastUpdated=gt2024-01-01",
        "_lastupdated=gt2024-01-01",
    ],
)
def test_every_can_filter_by_parameter_is_accepted(text: str) -> None:
    assert parse(with_filters(text)).filters == (text,)


@pytest.mark.parametrize(
    "payload", ["application/fhir+json; fhirVersion=4.0", "application/fhir+json;fhirVersion=4.0.1"]
)
def test_an_r4_fhir_version_parameter_is_accepted(payload: str) -> None:
    assert parse(with_channel(payload=payload)).payload == payload


@pytest.mark.parametrize("content", ["empty", "id-only", "full-resource"])
def test_every_content_level_is_accepted(content: str) -> None:
    resource = example()
    resource["channel"]["_payload"]["extension"][0]["valueCode"] = content
    assert parse(resource).content == content


def test_channel_extension_bounds_are_inclusive() -> None:
    low = parse(with_channel_extension(HEARTBEAT_PERIOD_URL, valueUnsignedInt=10))
    high = parse(with_channel_extension(HEARTBEAT_PERIOD_URL, valueUnsignedInt=86_400))
    assert (low.heartbeat_period, high.heartbeat_period) == (10, 86_400)
    assert parse(with_channel_extension(TIMEOUT_URL, valueUnsignedInt=120)).timeout == 120
    assert parse(with_channel_extension(MAX_COUNT_URL, valuePositiveInt=1)).max_count == 1


# --- headers ------------------------------------------------------------------------------


def test_header_pairs_split_on_the_first_colon_and_keep_the_value() -> None:
    resource = with_channel(
        header=[
            "Authorization: Bearer abc",
            "X-Signature: sha256=a:b:c ",
            "X-Compact:value",
            "X-Empty:",
        ]
    )
    subscription = parse(resource)
    assert subscription.headers == tuple(resource["channel"]["header"])
    assert subscription.header_pairs() == [
        ("Authorization", "Bearer abc"),
        ("X-Signature", "sha256=a:b:c"),
        ("X-Compact", "value"),
        ("X-Empty", ""),
    ]


# --- rejections ---------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def change(resource: dict[str, Any]) -> None:
        target = resource
        for key in parents:
            target = target[key]
        if value is None:
            target.pop(last, None)
        else:
            target[last] = value

    return change


def _filter(text: str) -> Callable[[dict[str, Any]], None]:
    return _set("_criteria", {"extension": [{"url": FILTER_CRITERIA_URL, "valueString": text}]})


def _channel_extension(url: str, **value: Any) -> Callable[[dict[str, Any]], None]:
    return _set("channel.extension", [{"url": url, **value}])


def _content(code: str) -> Callable[[dict[str, Any]], None]:
    return _set(
        "channel._payload", {"extension": [{"url": PAYLOAD_CONTENT_URL, "valueCode": code}]}
    )


REJECTIONS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "wrong resourceType": (_set("resourceType", "Task"), "resourceType"),
    "invalid id": (_set("id", "no spaces allowed"), "invalid id"),
    "unknown status": (_set("status", "paused"), "status"),
    "no criteria": (_set("criteria", None), "criteria"),
    "unknown topic": (
        _set("criteria", "http://example.org/fhir/SubscriptionTopic/Nope"),
        "unsupported topic",
    ),
    "filter on intent": (_filter("Task?intent=order"), "intent"),
    "filter on focus": (_filter("Task?focus=Task/1"), "focus"),
    "filter on an unknown parameter": (_filter("colour=red"), "colour"),
    "filter without a value": (_filter("Task?owner"), "owner"),
    "filter with an empty value": (_filter("owner="), "empty"),
    "filter with a bad modifier": (_filter("Task?owner:below=Organization/1"), "below"),
    "filter with a bad reference": (_filter("Task?owner=Organization/"), "reference"),
    "filter for another resource type": (_filter("Patient?owner=Organization/1"), "Patient"),
    "filter with a chained parameter": (_filter("owner.name=Acme"), "not supported"),
    "empty filter": (_filter("  "), "non-empty"),
    "filter that is not a string": (
        _set("_criteria", {"extension": [{"url": FILTER_CRITERIA_URL, "valueInteger": 3}]}),
        "valueString",
    ),
    "R5 cross-version filter extension": (
        _set(
            "_criteria",
            {"extension": [{"url": R5_FILTER_CRITERIA_URL, "valueString": "owner=Organization/1"}]},
        ),
        "unsupported extension",
    ),
    "unknown _criteria extension": (
        _set("_criteria", {"extension": [{"url": "http://example.org/x", "valueString": "a"}]}),
        "unsupported extension",
    ),
    "_criteria not an object": (_set("_criteria", ["owner=Organization/1"]), "_criteria"),
    "_criteria extensions not a list": (_set("_criteria", {"extension": "x"}), "extension"),
    "no channel": (_set("channel", None), "channel"),
    "websocket channel": (_set("channel.type", "websocket"), "rest-hook"),
    "email channel": (_set("channel.type", "email"), "rest-hook"),
    "custom channel type": (
        _set(
            "channel._type",
            {
                "extension": [
                    {"url": "http://example.org/channel", "valueCoding": {"code": "zulip"}}
                ]
            },
        ),
        "custom channel",
    ),
    "missing endpoint": (_set("channel.endpoint", None), "endpoint"),
    "relative endpoint": (_set("channel.endpoint", "/notify"), "absolute"),
    "ftp endpoint": (_set("channel.endpoint", "ftp://payer.example.org/x"), "absolute"),
    "http endpoint": (_set("channel.endpoint", "http://payer.example.org/x"), "https"),
    "loopback endpoint": (_set("channel.endpoint", "https://127.0.0.1:9000/hook"), "loopback"),
    "missing payload": (_set("channel.payload", None), "payload"),
    "xml payload": (_set("channel.payload", "application/xml"), "payload"),
    "text payload": (_set("channel.payload", "text/plain"), "payload"),
    "R5 payload": (
        _set("channel.payload", "application/fhir+json; fhirVersion=5.0"),
        "fhirVersion",
    ),
    "content code full": (_content("full"), "content"),
    "unknown _payload extension": (
        _set(
            "channel._payload", {"extension": [{"url": "http://example.org/x", "valueCode": "a"}]}
        ),
        "unsupported extension",
    ),
    "heartbeat 0": (_channel_extension(HEARTBEAT_PERIOD_URL, valueUnsignedInt=0), "heartbeat"),
    "heartbeat as text": (
        _channel_extension(HEARTBEAT_PERIOD_URL, valueUnsignedInt="60"),
        "heartbeat",
    ),
    "heartbeat as a boolean": (
        _channel_extension(HEARTBEAT_PERIOD_URL, valueUnsignedInt=True),
        "heartbeat",
    ),
    "timeout 1000": (_channel_extension(TIMEOUT_URL, valueUnsignedInt=1000), "timeout"),
    "timeout 0": (_channel_extension(TIMEOUT_URL, valueUnsignedInt=0), "timeout"),
    "max-count 0": (_channel_extension(MAX_COUNT_URL, valuePositiveInt=0), "max-count"),
    "max-count 1001": (_channel_extension(MAX_COUNT_URL, valuePositiveInt=1001), "max-count"),
    "max-count under the wrong value key": (
        _channel_extension(MAX_COUNT_URL, valueUnsignedInt=5),
        "valuePositiveInt",
    ),
    "unknown channel extension": (
        _channel_extension("http://example.org/fhir/StructureDefinition/x", valueString="a"),
        "unsupported extension",
    ),
    "header without a colon": (_set("channel.header", ["Authorization Bearer abc"]), "Name: value"),
    "header with an empty name": (_set("channel.header", [": abc"]), "Name: value"),
    "header name with a space": (_set("channel.header", ["X Token: abc"]), "Name: value"),
    "header that is not a string": (_set("channel.header", [42]), "Name: value"),
    "headers not a list": (_set("channel.header", "Authorization: Bearer abc"), "header"),
    "7000 filters": (
        _set(
            "_criteria",
            {
                "extension": [{"url": FILTER_CRITERIA_URL, "valueString": "Task?status=ready"}]
                * 7000
            },
        ),
        "at most 20 filters",
    ),
    "a filter with 150 values": (
        _set(
            "_criteria",
            {
                "extension": [
                    {"url": FILTER_CRITERIA_URL, "valueString": "Task?status=" + ",ready" * 150}
                ]
            },
        ),
        "values per parameter",
    ),
    "header value with CR LF": (
        _set("channel.header", ["X-A: a\r\nX-Injected: 1"]),
        "visible ASCII",
    ),
    "header value with NUL": (_set("channel.header", ["X-A: a\x00b"]), "visible ASCII"),
    "header value not ASCII": (_set("channel.header", ["X-A: caf\u00e9"]), "visible ASCII"),
    "header name not a token": (_set("channel.header", ["X(A): 1"]), "RFC 9110 token"),
    "Host header": (_set("channel.header", ["Host: internal.example"]), "may not set"),
    "Content-Length header": (_set("channel.header", ["Content-Length: 5"]), "may not set"),
    "Transfer-Encoding header": (
        _set("channel.header", ["transfer-encoding: chunked"]),
        "may not set",
    ),
    "Content-Type header": (_set("channel.header", ["Content-Type: text/plain"]), "may not set"),
    "Connection header": (_set("channel.header", ["Connection: close"]), "may not set"),
    "2000 headers": (_set("channel.header", [f"X-{n}: v" for n in range(2000)]), "at most"),
    "a 900 KB header": (_set("channel.header", ["X-Big: " + "a" * 900_000]), "longer than"),
    "headers over the total size": (
        _set("channel.header", [f"X-{n}: " + "a" * 4000 for n in range(5)]),
        "more than",
    ),
    "end not an instant": (_set("end", 20301231), "end"),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_invalid_subscriptions_are_rejected_with_a_message(case: str) -> None:
    change, word = REJECTIONS[case]
    resource = example()
    change(resource)
    with pytest.raises(InvalidSubscription) as caught:
        parse(resource)
    assert word in caught.value.diagnostics
    assert caught.value.status_code == 400


@pytest.mark.parametrize("body", [None, "Subscription", [EXAMPLE], 42])
def test_a_body_that_is_not_an_object_is_rejected(body: object) -> None:
    with pytest.raises(InvalidSubscription, match="JSON object"):
        parse(body)


def test_rejections_are_invalid_resources_and_point_at_the_element() -> None:
    assert issubclass(InvalidSubscription, InvalidResource)
    with pytest.raises(InvalidSubscription) as caught:
        parse(with_channel(type="websocket"))
    assert caught.value.expression == "Subscription.channel.type"
    with pytest.raises(InvalidSubscription) as caught:
        parse(with_filters("Task?focus=Task/1"))
    assert caught.value.expression == "Subscription._criteria"
    assert "not allowed" in caught.value.diagnostics


def test_unknown_topic_lists_the_supported_topics() -> None:
    resource = example()
    resource["criteria"] = "http://example.org/fhir/SubscriptionTopic/Nope"
    with pytest.raises(InvalidSubscription, match="SubscriptionTopic/Task"):
        parse(resource)


# --- the endpoint policy ------------------------------------------------------------------


def test_http_endpoints_are_accepted_when_allowed() -> None:
    resource = with_channel(endpoint="http://payer.example.org/hook")
    with pytest.raises(InvalidSubscription, match="https"):
        parse(resource)
    assert parse(resource, EndpointPolicy(allow_http=True)).endpoint == (
        "http://payer.example.org/hook"
    )


PRIVATE_ENDPOINTS = [
    "https://localhost/hook",
    "https://LOCALHOST:8443/hook",
    "https://api.localhost/hook",
    "https://127.0.0.1/hook",
    "https://127.0.0.2:9000/hook",
    "https://[::1]/hook",
    "https://10.1.2.3/hook",
    "https://172.16.0.1/hook",
    "https://192.168.1.20/hook",
    "https://169.254.169.254/latest/meta-data",
    "https://[fe80::1]/hook",
    "https://[fd00::1]/hook",
    "https://0.0.0.0/hook",
    # IPv4 shorthands that resolvers (getaddrinfo, hence httpx) read as 127.0.0.1
    "https://127.1/hook",
    "https://2130706433/hook",
    "https://0x7f000001/hook",
    "https://0177.0.0.1/hook",
    # trailing dots, IPv6 forms that carry a local IPv4 address, ranges Python counts as global
    "https://localhost./hook",
    "https://127.0.0.1./hook",
    "https://[::127.0.0.1]/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://[64:ff9b::7f00:1]/hook",
    "https://[2002:7f00:1::]/hook",
    "https://100.64.0.1/hook",
    "https://192.0.0.8/hook",
    "https://224.0.0.1/hook",
]


@pytest.mark.parametrize("endpoint", PRIVATE_ENDPOINTS)
def test_loopback_and_private_endpoints_are_refused_unless_allowed(endpoint: str) -> None:
    with pytest.raises(InvalidSubscription, match="loopback or private"):
        STRICT.check(endpoint)
    EndpointPolicy(allow_private=True).check(endpoint)
    assert parse(with_channel(endpoint=endpoint), EndpointPolicy(allow_private=True))


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://payer.example.org/hook",
        "https://8.8.8.8/hook",
        "https://[2001:4860:4860::8888]/hook",
        "https://10.example.org/hook",
        "https://payer.example.org:8443/fhir/notify?tenant=1",
    ],
)
def test_public_https_endpoints_pass(endpoint: str) -> None:
    STRICT.check(endpoint)


@pytest.mark.parametrize(
    "endpoint",
    ["https://%31%32%37.0.0.1/hook", "https://pay er.example.org/hook", "https://a..b/hook"],
)
def test_endpoints_with_invalid_hosts_are_refused(endpoint: str) -> None:
    with pytest.raises(InvalidSubscription, match="invalid host"):
        EndpointPolicy(allow_http=True, allow_private=True).check(endpoint)


def test_the_allowlist_admits_named_hosts_and_networks() -> None:
    policy = EndpointPolicy(
        allow_hosts=frozenset({"partner.internal"}),
        allow_networks=(ipaddress.ip_network("10.20.0.0/16"),),
    )
    policy.check("https://10.20.3.4/hook")
    policy.check("https://partner.internal/hook")
    assert policy.address_refusal("partner.internal.", ipaddress.ip_address("10.9.9.9")) is None
    assert policy.address_refusal("a.example", ipaddress.ip_address("10.20.0.1")) is None
    assert "private" in str(policy.address_refusal("a.example", ipaddress.ip_address("10.9.9.9")))
    with pytest.raises(InvalidSubscription, match="loopback or private"):
        policy.check("https://10.21.0.1/hook")


@pytest.mark.parametrize(
    "endpoint",
    ["https://user:pw@payer.example.org/hook", "https://token@payer.example.org/hook"],
)
def test_endpoints_with_credentials_are_refused(endpoint: str) -> None:
    policy = EndpointPolicy(allow_http=True, allow_private=True)
    with pytest.raises(InvalidSubscription, match="credentials"):
        policy.check(endpoint)


@pytest.mark.parametrize(
    "endpoint", ["", "payer.example.org/hook", "https:///hook", "mailto:a@example.org"]
)
def test_endpoints_that_are_not_absolute_http_urls_are_refused(endpoint: str) -> None:
    with pytest.raises(InvalidSubscription, match="absolute"):
        EndpointPolicy(allow_http=True, allow_private=True).check(endpoint)


# --- client status ------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["requested", "off"])
def test_clients_may_request_or_turn_off(status: str) -> None:
    check_client_status(status)


@pytest.mark.parametrize("status", ["active", "error", None, "bogus"])
def test_clients_may_not_set_server_statuses(status: object) -> None:
    with pytest.raises(FhirError, match="set by the server"):
        check_client_status(status)


def _written(end: object, last_updated: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {"end": end, "meta": {"lastUpdated": last_updated}}


@pytest.mark.parametrize(
    ("resource", "now", "result"),
    [
        (_written("2026-01-02T00:00:00Z"), "2026-01-01T12:00:00Z", False),
        (_written("2026-01-02T00:00:00Z"), "2026-01-02T00:00:00Z", True),
        (_written("2026-01-02"), "2026-01-03T00:00:00Z", True),
        # already past when written: sample dates of test suites are not acted on
        (_written("2020-12-31T23:59:59Z"), "2026-01-03T00:00:00Z", False),
        (_written(None), "2030-01-01T00:00:00Z", False),
        (_written("not a date"), "2030-01-01T00:00:00Z", False),
    ],
)
def test_expired_when_end_passes_after_the_write(
    resource: dict[str, Any], now: str, result: bool
) -> None:
    assert expired(resource, datetime.fromisoformat(now)) is result
