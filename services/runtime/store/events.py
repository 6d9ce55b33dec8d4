"""The event log: each matched event gets the next number of its subscription, once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.core.notifications import NotificationEvent
from herald.runtime.store import resources
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
    )


async def record(connection: AsyncConnection, event: LoggedEvent, recorded_at: str) -> int | None:
    """Number and store an event; None when it was recorded before or the subscription is gone.

    `event.number` is ignored: the number is taken from the subscription's counter in the same
    transaction, so numbers have no gaps and are never reused.
    """
    # Lock the subscription row first: concurrent records of one subscription (redeliveries,
    # a rebalance between dispatchers) then see each other's committed events.
    live = await connection.scalar(
        select(subscriptions.c.id)
        .where(subscriptions.c.id == event.subscription_id, subscriptions.c.deleted.is_(False))
        .with_for_update()
    )
    if live is None:
        return None
    seen = await connection.scalar(
        select(event_log.c.number).where(event_log.c.request_id == event.request_id)
    )
    if seen is not None:
        return None
    number = await connection.scalar(
        update(subscriptions)
        .where(subscriptions.c.id == event.subscription_id, subscriptions.c.deleted.is_(False))
        .values(events_count=subscriptions.c.events_count + 1)
        .returning(subscriptions.c.events_count)
    )
    if number is None:
        return None
    await connection.execute(
        insert(event_log).values(
            subscription_id=event.subscription_id,
            number=number,
            request_id=event.request_id,
            resource_type=event.resource_type,
            resource_id=event.resource_id,
            version_id=event.version_id,
            interaction=event.interaction,
            occurred_at=event.occurred_at,
            recorded_at=recorded_at,
        )
    )
    return int(number)


async def after(
    connection: AsyncConnection, subscription_id: str, number: int, limit: int
) -> list[LoggedEvent]:
    """Events of a subscription numbered above `number`, oldest first."""
    return await between(connection, subscription_id, number + 1, None, limit)


async def mark_delivered(connection: AsyncConnection, subscription_id: str, through: int) -> None:
    """Record that events up to `through` were delivered."""
    await connection.execute(
        update(subscriptions)
        .where(subscriptions.c.id == subscription_id, subscriptions.c.delivered_through < through)
        .values(delivered_through=through)
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


async def as_notification_events(
    connection: AsyncConnection, logged: list[LoggedEvent], *, with_resources: bool
) -> list[NotificationEvent]:
    """Logged events as a notification shows them, with their resource versions if asked."""
    events = []
    for e in logged:
        resource = None
        if with_resources:
            resource = await resources.version(
                connection, e.resource_type, e.resource_id, int(e.version_id)
            )
        events.append(
            NotificationEvent(
                number=e.number,
                timestamp=e.occurred_at,
                resource_type=e.resource_type,
                resource_id=e.resource_id,
                interaction=e.interaction,
                resource=resource,
            )
        )
    return events
