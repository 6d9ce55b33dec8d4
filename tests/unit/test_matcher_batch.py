"""The matcher's batch: the requests it puts on the bus are the encoded NotificationRequests."""

from __future__ import annotations

import dataclasses
from typing import Any

from herald.core.contracts import NotificationRequest, decode_request, encode
from herald.core.subscriptions import Subscription, parse_subscription
from herald.matcher.service import _match, notification_requests
from herald.runtime.bus.base import Record
from herald.runtime.metrics import Metrics
from herald.runtime.settings import Settings
from tests.support.fhir import backport_subscription
from tests.support.matching import OPEN, TOPICS, change, index_of


def subscription(sid: str, criteria: str) -> Subscription:
    resource = backport_subscription("http://127.0.0.1:9000/hook", criteria, status="active")
    return parse_subscription({**resource, "id": sid}, TOPICS, OPEN)


def task(owner: str, status: str = "requested") -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "id": "t1",
        "status": status,
        "intent": "order",
        "owner": {"reference": owner},
    }


async def test_the_batch_publishes_the_requests_notification_requests_builds() -> None:
    index = index_of(
        subscription("s1", "owner=Organization/1"),
        subscription("s2", "status=requested"),
    )
    changes = [
        change(task("Organization/1")),
        dataclasses.replace(change(task("Organization/2"), task("Organization/2")), method="PUT"),
        change(task("Organization/1", "draft")),
    ]
    records = [
        Record("task-changes", 0, n, "t1", encode(c), None, f"r{n}") for n, c in enumerate(changes)
    ]
    metrics = Metrics()
    outgoing = await _match(records, index, None, Settings(), metrics)  # type: ignore[arg-type]
    requested_at = decode_request(outgoing[0].value).requested_at
    expected = [
        (records[n].request_id, r)
        for n, c in enumerate(changes)
        for r in notification_requests(c, index, requested_at)
    ]
    assert [o.value for o in outgoing] == [encode(r) for _, r in expected]
    assert [(o.key, o.request_id) for o in outgoing] == [
        (r.subscription_id, request_id) for request_id, r in expected
    ]
    assert [decode_request(o.value) for o in outgoing] == [r for _, r in expected]
    assert [r.subscription_id for _, r in expected] == ["s1", "s2", "s2"]
    assert all(isinstance(r, NotificationRequest) for _, r in expected)
    assert metrics.changes_consumed._value.get() == 3
