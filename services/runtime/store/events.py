"""The event log: each matched event gets the next number of its subscription, once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.core.notifications import NotificationEvent
from herald.core.types import JsonObject
from herald.runtime.store import direct, resources
from herald.runtime.store.direct import Prepared
from herald.runtime.store.tables import event_log, subscriptions


@dataclass(frozen=True)
class LoggedEvent:
    """One numbered event."""

    subscription_id: str
    number: int
    request_id: str
    resource_type: str
    resource_id: str
    version_id: str
    interaction: str
    occurred_at: str
    origin_request_id: str | None = None
    """The id of the FHIR request that wrote the change, sent with the notification."""
    method: str | None = None
    """The HTTP method when the interaction does not imply it (a create by PUT)."""


def _logged(row: Row[Any]) -> LoggedEvent:
    return LoggedEvent(
        row.subscription_id,
        row.number,
        row.request_id,
        row.resource_type,
        row.resource_id,
        row.version_id,
        row.interaction,
        row.occurred_at,
        row.origin_request_id,
        row.method,
    )


# Built once (see store/direct.py).
_LOCK_LIVE = (
    select(subscriptions.c.id)
    .where(subscriptions.c.id == bindparam("id"), subscriptions.c.deleted.is_(False))
    .with_for_update()
)
_SEEN = Prepared(
    select(event_log.c.number).where(event_log.c.request_id == bindparam("request_id"))
)
_NEXT_NUMBER = Prepared(
    update(subscriptions)
    .where(subscriptions.c.id == bindparam("subscription"), subscriptions.c.deleted.is_(False))
    .values(events_count=subscriptions.c.events_count + 1)
    .returning(subscriptions.c.events_count)
)
_INSERT = Prepared(insert(event_log))
_MARK_DELIVERED = Prepared(
    update(subscriptions)
    .where(
        subscriptions.c.id == bindparam("subscription"),
        subscriptions.c.delivered_through < bindparam("through"),
    )
    .values(delivered_through=bindparam("through"))
)


async def record(connection: AsyncConnection, event: LoggedEvent, recorded_at: str) -> int | None:
    """Number and store an event; None when it was recorded before or the subscription is gone.

    `event.number` is ignored: the number is taken from the subscription's counter in the same
    transaction, so numbers have no gaps and are never reused.
    """
    if connection.dialect.name == "postgresql":
        # Lock the subscription row first: concurrent records of one subscription (redeliveries,
        # a rebalance between dispatchers) then see each other's committed events. SQLite
        # writers are serialised by the database lock already; the update below checks that
        # the subscription is live.
        live = await connection.scalar(_LOCK_LIVE, {"id": event.subscription_id})
        if live is None:
            return None
    seen = await direct.scalar(connection, _SEEN, {"request_id": event.request_id})
    if seen is not None:
        return None
    number = await direct.scalar(connection, _NEXT_NUMBER, {"subscription": event.subscription_id})
    if number is None:
        return None
    await direct.run(
        connection,
        _INSERT,
        {
            "subscription_id": event.subscription_id,
            "number": number,
            "request_id": event.request_id,
            "resource_type": event.resource_type,
            "resource_id": event.resource_id,
            "version_id": event.version_id,
            "interaction": event.interaction,
            "occurred_at": event.occurred_at,
            "recorded_at": recorded_at,
            "origin_request_id": event.origin_request_id,
            "method": event.method,
        },
    )
    return int(number)


async def after(
    connection: AsyncConnection, subscription_id: str, number: int, limit: int
) -> list[LoggedEvent]:
    """Events of a subscription numbered above `number`, oldest first."""
    return await between(connection, subscription_id, number + 1, None, limit)


async def mark_delivered_many(connection: AsyncConnection, positions: dict[str, int]) -> None:
    """Record, per subscription, that its events up to a number were delivered (never backwards)."""
    if not positions:
        return
    # Rows are locked in id order, as `record` does, so concurrent writers cannot deadlock.
    await direct.run_many(
        connection,
        _MARK_DELIVERED,
        [{"subscription": s, "through": positions[s]} for s in sorted(positions)],
    )


async def between(
    connection: AsyncConnection, subscription_id: str, since: int, until: int | None, limit: int
) -> list[LoggedEvent]:
    """Events numbered from `since` to `until` (inclusive), oldest first, at most `limit`."""
    query = select(event_log).where(
        event_log.c.subscription_id == subscription_id, event_log.c.number >= since
    )
    if until is not None:
        query = query.where(event_log.c.number <= until)
    rows = await connection.execute(query.order_by(event_log.c.number).limit(limit))
    return [_logged(r) for r in rows]


async def prune(connection: AsyncConnection, recorded_before: str) -> int:
    """Drop delivered events recorded before an instant; undelivered events are always kept."""
    delivered = (
        select(subscriptions.c.delivered_through)
        .where(subscriptions.c.id == event_log.c.subscription_id)
        .scalar_subquery()
    )
    result = await connection.execute(
        delete(event_log).where(
            event_log.c.recorded_at < recorded_before, event_log.c.number <= delivered
        )
    )
    return int(result.rowcount or 0)


def as_notification_event(
    logged: LoggedEvent, resource: JsonObject | None = None
) -> NotificationEvent:
    """A logged event as a notification shows it."""
    return NotificationEvent(
        number=logged.number,
        timestamp=logged.occurred_at,
        resource_type=logged.resource_type,
        resource_id=logged.resource_id,
        interaction=logged.interaction,
        resource=resource,
        version_id=logged.version_id,
        method=logged.method,
    )


async def as_notification_events(
    connection: AsyncConnection, logged: list[LoggedEvent], *, with_resources: bool
) -> list[NotificationEvent]:
    """Logged events as a notification shows them, with their resource versions if asked."""
    if not with_resources:
        return [as_notification_event(e) for e in logged]
    keys = [(e.resource_type, e.resource_id, int(e.version_id)) for e in logged]
    found = await resources.versions(connection, keys)
    return [as_notification_event(e, found.get(key)) for e, key in zip(logged, keys, strict=True)]
