"""Delivery can't be poisoned: a notification that cannot be built, encoded or sent is a failed
attempt with a reason; after the retry schedule its subscription goes to `error` and says why,
while other subscriptions keep receiving. Real store (SQLite and PostgreSQL), real loopback
subscriber."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from herald.core.fhir import FHIR_XML
from herald.core.resources import with_version
from herald.dispatcher.delivery import Deliverer
from herald.runtime.settings import Settings
from herald.runtime.store import events, resources, subscriptions
from herald.runtime.store.database import Database
from herald.runtime.store.events import LoggedEvent
from herald.runtime.store.subscriptions import StoredSubscription
from tests.support.delivery import open_deliverer
from tests.support.fhir import HREX_TOPIC, backport_subscription
from tests.support.receiver import Receiver

NOW = "2026-01-01T00:00:00.000Z"


def _nested_extensions(depth: int) -> dict[str, Any]:
    """An extension nested `depth` deep: storable, but past orjson's limit inside a Bundle."""
    node: dict[str, Any] = {"url": "http://example.org/x", "valueString": "leaf"}
    for _ in range(depth - 1):
        node = {"url": "http://example.org/x", "extension": [node]}
    return node


POISONS: dict[str, tuple[str, dict[str, Any]]] = {
    "nesting past the JSON encoder's depth": (
        "application/fhir+json",
        {"extension": [_nested_extensions(126)]},
    ),
    "a control character XML cannot hold": (FHIR_XML, {"description": "bad \u0001 byte"}),
}


@pytest.fixture
async def deliverer(database: Database) -> AsyncIterator[Deliverer]:
    """A dispatcher's delivery side with a short retry schedule (two retries, no waiting)."""
    settings = Settings(database_url="sqlite://", allow_http_endpoints=True, retry_delays="0,0")
    async with open_deliverer(settings, database) as deliverer:
        yield deliverer


async def _subscribe(
    database: Database,
    sub_id: str,
    endpoint: str,
    *,
    payload: str = "application/fhir+json",
    status: str = "active",
    headers: tuple[str, ...] = (),
) -> None:
    resource = backport_subscription(
        endpoint, status=status, content="full-resource", headers=headers
    )
    resource["channel"]["payload"] = payload
    async with database.transaction() as connection:
        await subscriptions.insert_new(
            connection, with_version(resource, sub_id, 1, NOW), status=status, topic=HREX_TOPIC
        )


async def _task_event(database: Database, sub_ids: list[str], task_id: str, extra: Any) -> None:
    task = with_version(
        {"resourceType": "Task", "status": "requested", "intent": "order", **extra},
        task_id,
        1,
        NOW,
    )
    async with database.transaction() as connection:
        await resources.save(connection, task, previous=None)
        for sub_id in sub_ids:
            request_id = f"{sub_id}:{task_id}"
            event = LoggedEvent(sub_id, 0, request_id, "Task", task_id, "1", "create", NOW)
            await events.record(connection, event, NOW)


async def _stored(database: Database, sub_id: str) -> StoredSubscription:
    async with database.read() as connection:
        stored = await subscriptions.get(connection, sub_id)
    assert stored is not None
    return stored


@pytest.mark.parametrize("poison", sorted(POISONS))
async def test_a_poisoned_event_ends_in_error_with_a_reason_and_harms_no_one_else(
    database: Database, deliverer: Deliverer, receiver: Receiver, poison: str
) -> None:
    payload, extra = POISONS[poison]
    await _subscribe(database, "victim", receiver.url, payload=payload)
    await _subscribe(database, "bystander", receiver.url)  # JSON, id-only-safe content
    await _task_event(database, ["victim"], "poisoned", extra)
    await _task_event(database, ["bystander"], "fine", {})

    stop = asyncio.Event()
    # Returns (does not raise, does not loop): three failed attempts, then error.
    await asyncio.wait_for(deliverer.deliver_pending("victim", stop), timeout=30)
    victim = await _stored(database, "victim")
    assert victim.status == "error"
    assert victim.error is not None
    assert "delivery failed after 3 attempts" in victim.error
    assert "could not be encoded" in victim.error
    attempts = deliverer.metrics.delivery_attempts.labels("event", "unsendable")
    assert attempts._value.get() == 3
    assert receiver.of_kind("event-notification") == []  # nothing half-written went out

    await deliverer.deliver_pending("bystander", stop)
    (delivered,) = receiver.of_kind("event-notification")
    assert delivered.event_numbers == [1]
    assert (await _stored(database, "bystander")).status == "active"


@pytest.mark.parametrize(
    "header",
    ["X-Token: caf\u00e9", "Content-Length: 5", "Transfer-Encoding: chunked", "X-A: a\r\nB: c"],
)
async def test_a_stored_subscription_with_a_header_no_longer_allowed_goes_to_error(
    database: Database, deliverer: Deliverer, receiver: Receiver, header: str
) -> None:
    # Written before headers were checked: the handshake must not loop in `requested`.
    await _subscribe(database, "old", receiver.url, status="requested", headers=(header,))
    await asyncio.wait_for(deliverer.handshake("old", asyncio.Event()), timeout=30)
    stored = await _stored(database, "old")
    assert stored.status == "error"
    assert stored.error is not None and "can no longer be served" in stored.error
    assert "caf\u00e9" not in stored.error  # header values are never echoed
    assert receiver.received == []


async def test_a_stored_endpoint_the_policy_now_refuses_goes_to_error(
    database: Database, receiver: Receiver
) -> None:
    # A strict server restarted over a database holding a plain-http loopback subscription.
    settings = Settings(
        database_url="sqlite://",
        allow_http_endpoints=False,
        allow_private_endpoints=False,
        retry_delays="0",
    )
    async with open_deliverer(settings, database) as deliverer:
        await _subscribe(database, "old", receiver.url)
        await _task_event(database, ["old"], "t", {})
        await asyncio.wait_for(deliverer.deliver_pending("old", asyncio.Event()), timeout=30)
    stored = await _stored(database, "old")
    assert stored.status == "error"
    assert stored.error is not None and "https" in stored.error
    assert receiver.received == []
