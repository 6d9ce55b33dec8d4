"""The matcher loop: consume changes, match them, produce requests, then commit."""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any

import orjson

from herald.core.contracts import (
    NOTIFICATION_REQUEST_SCHEMA,
    NOTIFICATIONS,
    TASK_CHANGES,
    NotificationRequest,
    ResourceChange,
    decode_change,
)
from herald.core.errors import ContractError
from herald.core.fhir import format_instant, utc_now
from herald.core.matching import SubscriptionIndex
from herald.core.topics import TopicCatalog
from herald.matcher.refresh import refresh
from herald.runtime.bus.base import Consumer, Outgoing, Publisher, Record
from herald.runtime.bus.connect import Bus
from herald.runtime.lifecycle import retry_until_done
from herald.runtime.logs import request_id as logged_request_id
from herald.runtime.metrics import Metrics
from herald.runtime.settings import Settings
from herald.runtime.store.database import Database

log = logging.getLogger(__name__)


def notification_requests(
    change: ResourceChange, index: SubscriptionIndex, now: str | None = None
) -> list[NotificationRequest]:
    """One request per subscription the change notifies, requested at `now` (default: now)."""
    if now is None:
        now = format_instant(utc_now())
    return [
        NotificationRequest(**_request_fields(change, subscription_id, now))
        for subscription_id in index.match(change)
    ]


def _request_fields(change: ResourceChange, subscription_id: str, now: str) -> dict[str, Any]:
    """The fields of the request for a subscription the change notifies, in NotificationRequest's
    order: orjson writes this dict as the same bytes as `encode` writes the request, without
    the frozen dataclass built for every request in between."""
    return {
        "request_id": f"{change.event_id}:{subscription_id}",
        "kind": "event",
        "subscription_id": subscription_id,
        "source_event_id": change.event_id,
        "requested_at": now,
        "resource_type": change.resource_type,
        "resource_id": change.resource_id,
        "version_id": change.version_id,
        "interaction": change.interaction,
        "occurred_at": change.occurred_at,
        "method": change.method,
        "schema": NOTIFICATION_REQUEST_SCHEMA,
    }


async def run_matcher(
    settings: Settings,
    database: Database,
    bus: Bus,
    topics: TopicCatalog,
    metrics: Metrics,
    stop: asyncio.Event,
) -> None:
    """Match until stopped; offsets are committed only after the requests are on the bus."""
    index = SubscriptionIndex(topics)
    await refresh(index, database)
    refreshed = time.monotonic()
    group = settings.topic("matcher")
    async with bus.consumer(group, TASK_CHANGES) as consumer, bus.publisher() as publisher:
        while not stop.is_set():
            records = await consumer.fetch(timeout=0.5, max_records=500)
            if time.monotonic() - refreshed > settings.registry_refresh:
                await retry_until_done(lambda: refresh(index, database), stop)
                refreshed = time.monotonic()
                metrics.consumer_lag.labels("matcher").set(await consumer.lag() or 0)
            if not records:
                continue
            outgoing = await retry_until_done(
                partial(_match, records, index, database, settings, metrics), stop
            )
            if bus.in_store:  # the requests and the changes' position commit together
                hand_on = partial(_publish_and_commit, database, bus, publisher, consumer)
                await retry_until_done(partial(hand_on, outgoing, records), stop)
            else:
                await retry_until_done(partial(publisher.publish, outgoing), stop)
                await consumer.commit(records)
            metrics.notification_requests.labels("event").inc(len(outgoing))


async def _publish_and_commit(
    database: Database,
    bus: Bus,
    publisher: Publisher,
    consumer: Consumer,
    outgoing: list[Outgoing],
    records: list[Record],
) -> None:
    async with database.transaction() as connection:
        await publisher.publish(outgoing, transaction=connection)
        await bus.commit_in(consumer, records, connection)


async def _match(
    records: list[Record],
    index: SubscriptionIndex,
    database: Database,
    settings: Settings,
    metrics: Metrics,
) -> list[Outgoing]:
    notifications = settings.topic(NOTIFICATIONS)
    outgoing = []
    now = format_instant(utc_now())  # one instant for the batch, matched at once
    consumed = 0
    observe = metrics.match_duration.observe
    for record in records:
        # The request id logged with whatever is logged meanwhile (logging_request's work,
        # without a generator-based context manager per change).
        token = logged_request_id.set(record.request_id)
        try:
            try:
                change = decode_change(record.value)
            except ContractError as exc:
                metrics.malformed.labels("matcher").inc()
                log.error("skipping malformed change record", extra={"reason": str(exc)})
                continue
            if change.registry_revision > index.revision:
                await refresh(index, database)
            started = time.perf_counter()
            matched = index.match(change)
            observe(time.perf_counter() - started)
            consumed += 1
            for subscription_id in matched:
                fields = _request_fields(change, subscription_id, now)
                outgoing.append(
                    Outgoing(
                        notifications, subscription_id, orjson.dumps(fields), record.request_id
                    )
                )
        finally:
            logged_request_id.reset(token)
    metrics.changes_consumed.inc(consumed)
    return outgoing
