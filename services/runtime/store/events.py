"""The event log: each matched event gets the next number of its subscription, once."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

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
    rows = await connection.execute(
        select(event_log)
        .where(event_log.c.subscription_id == subscription_id, event_log.c.number > number)
        .order_by(event_log.c.number)
        .limit(limit)
    )
    return [
        LoggedEvent(
            r.subscription_id,
            r.number,
            r.request_id,
            r.resource_type,
            r.resource_id,
            r.version_id,
            r.interaction,
            r.occurred_at,
        )
        for r in rows
    ]


async def mark_delivered(connection: AsyncConnection, subscription_id: str, through: int) -> None:
    """Record that events up to `through` were delivered."""
    await connection.execute(
        update(subscriptions)
        .where(subscriptions.c.id == subscription_id, subscriptions.c.delivered_through < through)
        .values(delivered_through=through)
    )
