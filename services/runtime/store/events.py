"""The event log: each matched event gets the next number of its subscription, once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Row, bindparam, delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.core.notifications import NotificationEvent
from herald.core.types import JsonObject
from herald.runtime.store import attempts as attempt_log
from herald.runtime.store import direct, resources
from herald.runtime.store.attempts import Attempt
from herald.runtime.store.database import Database
from herald.runtime.store.direct import Prepared
from herald.runtime.store.tables import event_log, subscriptions


# Slotted, not frozen: the dispatcher builds one per event and numbers it in place once the
# store has numbered it (a frozen dataclass's __init__, and dataclasses.replace for the number,
# cost several times as much). Nothing changes an event after that.
@dataclass(slots=True)
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
_INSERT = Prepared(insert(event_log))
_MARK_DELIVERED = Prepared(
    update(subscriptions)
    .where(
        subscriptions.c.id == bindparam("subscription"),
        subscriptions.c.delivered_through < bindparam("through"),
    )
    .values(delivered_through=bindparam("through"))
)


# Columns an event's row takes from the event itself (the number and recorded_at are added).
_COLUMNS = (
    "subscription_id",
    "request_id",
    "resource_type",
    "resource_id",
    "version_id",
    "interaction",
    "occurred_at",
    "origin_request_id",
    "method",
)

# PostgreSQL: a whole batch in one call of herald_record_events (migration 0011 says how it
# keeps numbers gap-free under concurrent records).
_STORE_PROGRESS = Prepared(
    text(
        "SELECT herald_store_progress(CAST(:ids AS text[]), CAST(:throughs AS bigint[]), "
        + ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in attempt_log.COLUMN_TYPES)
        + ", CAST(:keep AS integer))"
    )
)
_RECORD_MANY = Prepared(
    text(
        "SELECT request_id, number FROM herald_record_events("
        + ", ".join(f"CAST(:{c} AS text[])" for c in _COLUMNS)
        + ", CAST(:recorded_at AS text))"
    )
)
# SQLite (writers serialised by the database lock): the request ids recorded before in one
# statement, one counter update per subscription, the rows in one executemany.
_SEEN_MANY = Prepared(
    text(
        "SELECT request_id FROM event_log"
        " WHERE request_id IN (SELECT value FROM json_each(:request_ids))"
    )
)
# Every subscription's counter advanced in one statement: {subscription id: count} as JSON.
_ADVANCE_MANY = Prepared(
    text(
        "UPDATE subscriptions SET events_count = events_count + counts.value"
        " FROM json_each(:counts) AS counts"
        " WHERE subscriptions.id = counts.key AND subscriptions.deleted = 0"
        " RETURNING subscriptions.id, subscriptions.events_count"
    )
)


async def record_many(
    connection: AsyncConnection, events: Sequence[LoggedEvent], recorded_at: str
) -> list[int | None]:
    """Number and store events, in order; for each its number, or None when it was recorded
    before (or earlier in `events`) or its subscription is gone.

    `event.number` is ignored: numbers are taken from each subscription's counter in the same
    transaction, so they have no gaps and are never reused, and a subscription's events are
    numbered in the order given.
    """
    if not events:
        return []
    if connection.dialect.name == "postgresql":
        numbers = await _record_many_postgres(connection, events, recorded_at)
    else:
        numbers = await _record_many_sqlite(connection, events, recorded_at)
    taken: set[str] = set()
    out: list[int | None] = []
    for event in events:  # a request id repeated in the batch is a duplicate after its first
        number = None if event.request_id in taken else numbers.get(event.request_id)
        taken.add(event.request_id)
        out.append(number)
    return out


async def record_alone(
    database: Database, events: Sequence[LoggedEvent], recorded_at: str
) -> list[int | None]:
    """`record_many` in a transaction of its own; on PostgreSQL the function's call alone, in
    autocommit mode, so that BEGIN and COMMIT cost no round trips."""
    if database.is_sqlite:
        async with database.transaction() as connection:
            return await record_many(connection, events, recorded_at)
    async with _autocommit(database) as connection:
        return await record_many(connection, events, recorded_at)


async def record(connection: AsyncConnection, event: LoggedEvent, recorded_at: str) -> int | None:
    """Number and store one event (see `record_many`)."""
    return (await record_many(connection, [event], recorded_at))[0]


async def _record_many_postgres(
    connection: AsyncConnection, events: Sequence[LoggedEvent], recorded_at: str
) -> dict[str, int]:
    params: dict[str, Any] = {c: [getattr(e, c) for e in events] for c in _COLUMNS}
    params["recorded_at"] = recorded_at
    found = await direct.rows(connection, _RECORD_MANY, params)
    return {request_id: int(number) for request_id, number in found}


async def _record_many_sqlite(
    connection: AsyncConnection, events: Sequence[LoggedEvent], recorded_at: str
) -> dict[str, int]:
    request_ids = orjson.dumps([e.request_id for e in events]).decode()
    seen = {r[0] for r in await direct.rows(connection, _SEEN_MANY, {"request_ids": request_ids})}
    fresh: dict[str, LoggedEvent] = {}
    for event in events:
        if event.request_id not in seen:
            fresh.setdefault(event.request_id, event)
    counts: dict[str, int] = {}
    for event in fresh.values():
        counts[event.subscription_id] = counts.get(event.subscription_id, 0) + 1
    next_number: dict[str, int] = {}
    if counts:
        advanced = await direct.rows(
            connection, _ADVANCE_MANY, {"counts": orjson.dumps(counts).decode()}
        )
        for subscription_id, last in advanced:
            next_number[subscription_id] = int(last) - counts[subscription_id] + 1
    numbers: dict[str, int] = {}
    rows = []
    for event in fresh.values():
        if (number := next_number.get(event.subscription_id)) is None:
            continue  # the subscription is gone
        next_number[event.subscription_id] = number + 1
        numbers[event.request_id] = number
        rows.append(
            {c: getattr(event, c) for c in _COLUMNS}
            | {"number": number, "recorded_at": recorded_at}
        )
    await direct.run_many(connection, _INSERT, rows)
    return numbers


async def after(
    connection: AsyncConnection, subscription_id: str, number: int, limit: int
) -> list[LoggedEvent]:
    """Events of a subscription numbered above `number`, oldest first."""
    return await between(connection, subscription_id, number + 1, None, limit)


# The columns in LoggedEvent's order.
_AFTER = Prepared(
    select(
        event_log.c.subscription_id,
        event_log.c.number,
        event_log.c.request_id,
        event_log.c.resource_type,
        event_log.c.resource_id,
        event_log.c.version_id,
        event_log.c.interaction,
        event_log.c.occurred_at,
        event_log.c.origin_request_id,
        event_log.c.method,
    )
    .where(
        event_log.c.subscription_id == bindparam("subscription"),
        event_log.c.number > bindparam("after"),
    )
    .order_by(event_log.c.number)
    .limit(bindparam("limit"))
)


async def read_after(
    database: Database, subscription_id: str, number: int, limit: int
) -> list[LoggedEvent]:
    """`after`, as a read of its own (Database.read_rows: on SQLite without a pooled
    connection; a worker reads its subscription's next events after most deliveries)."""
    params = {"subscription": subscription_id, "after": number, "limit": limit}
    return [LoggedEvent(*row) for row in await database.read_rows(_AFTER, params)]


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


async def store_progress(
    database: Database,
    positions: dict[str, int],
    attempts: Sequence[Attempt],
    prune: Collection[str] | None = None,
) -> None:
    """Store delivery positions (`mark_delivered_many`) and attempts (`attempts.record_many`,
    `prune` passed on) in a transaction of their own; on PostgreSQL one call of
    herald_store_progress (migration 0011) in autocommit mode, so that the whole costs one round
    trip (it prunes every subscription concerned)."""
    if database.is_sqlite:
        async with database.transaction() as connection:
            await mark_delivered_many(connection, positions)
            await attempt_log.record_many(connection, attempts, prune)
        return
    params: dict[str, Any] = {
        name: [getattr(a, name) for a in attempts] for name, _ in attempt_log.COLUMN_TYPES
    }
    ids = sorted(positions)
    params |= {"ids": ids, "throughs": [positions[s] for s in ids], "keep": attempt_log.KEEP}
    async with _autocommit(database) as connection:
        await direct.run(connection, _STORE_PROGRESS, params)


@asynccontextmanager
async def _autocommit(database: Database) -> AsyncIterator[AsyncConnection]:
    """A PostgreSQL connection in autocommit mode: each statement a transaction of its own."""
    async with database.engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        yield connection


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
