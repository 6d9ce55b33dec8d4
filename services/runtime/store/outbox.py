"""The transactional outbox: records written with the change that caused them, published later."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.runtime.bus.base import Outgoing, Publisher
from herald.runtime.logs import request_id
from herald.runtime.store import direct
from herald.runtime.store.direct import Prepared
from herald.runtime.store.tables import outbox

# Key of the PostgreSQL advisory lock that makes one relay at a time publish, keeping per-key order.
RELAY_LOCK_KEY = 0x48_45_52_41_4C_44  # "HERALD"


@dataclass(frozen=True)
class OutboxRecord:
    """One record waiting to be published."""

    id: int
    topic: str
    key: str
    payload: bytes
    request_id: str | None = None


ADD_SQL = (
    "INSERT INTO outbox (topic, key, payload, request_id)"
    " VALUES (:topic, :key, :payload, :request_id)"
)
"""One record (see record_params): a part of a larger statement as well (store/resources.py)."""
_ADD = Prepared(text(ADD_SQL))
SQLITE_ADD = "INSERT INTO outbox (topic, key, payload, request_id) VALUES (?, ?, ?, ?)"
"""ADD_SQL for sqlite3 itself, with record_values (store/resources.py)."""


def record_params(record: Outgoing) -> dict[str, Any]:
    """The parameters of ADD_SQL for a record."""
    return {
        "topic": record.topic,
        "key": record.key,
        "payload": record.value,
        "request_id": record.request_id,
    }


def record_values(record: Outgoing) -> tuple[str, str, bytes, str | None]:
    """The parameters of SQLITE_ADD for a record."""
    return (record.topic, record.key, record.value, record.request_id)


async def add_record(connection: AsyncConnection, record: Outgoing) -> None:
    """Queue a record in the caller's transaction."""
    await direct.run(connection, _ADD, record_params(record))


async def add(connection: AsyncConnection, topic: str, key: str, payload: bytes) -> None:
    """Queue a record in the caller's transaction, with the request id of the work in hand."""
    await add_record(connection, Outgoing(topic, key, payload, request_id.get()))


class Outbox:
    """Where a write queues the records it causes, inside its own transaction.

    By default that is the outbox table, which the relay copies to the bus. A bus that writes
    in the caller's transaction (the embedded bus, a log in the same database) takes them
    directly instead: as durable and as ordered, without a relay round per batch.
    """

    def __init__(self, publisher: Publisher | None = None) -> None:
        self.publisher = publisher

    @property
    def relayed(self) -> bool:
        """Whether records wait in the outbox table for the relay."""
        return self.publisher is None

    async def add(self, connection: AsyncConnection, topic: str, key: str, payload: bytes) -> None:
        """Queue a record in the caller's transaction (see `add`)."""
        await self.add_record(connection, Outgoing(topic, key, payload, request_id.get()))

    async def add_record(self, connection: AsyncConnection, record: Outgoing) -> None:
        """Queue a record in the caller's transaction."""
        if self.publisher is None:
            await add_record(connection, record)
        else:
            await self.publisher.publish([record], transaction=connection)


_TRY_LOCK = Prepared(text("SELECT pg_try_advisory_xact_lock(:key)"))
_OLDEST = Prepared(
    select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.payload, outbox.c.request_id)
    .order_by(outbox.c.id)
    .limit(bindparam("limit"))
)
# One statement whatever the number of ids (`IN (...)` was a new text, so a new preparation on
# each connection, for every batch size).
_REMOVE = Prepared(text("DELETE FROM outbox WHERE id = ANY(:ids)"))


async def claim(connection: AsyncConnection, limit: int) -> list[OutboxRecord]:
    """The oldest records, or none when another relay holds the lock (PostgreSQL)."""
    # The lock in a statement of its own: the SELECT's snapshot must see what the last holder
    # committed.
    if connection.dialect.name == "postgresql" and not await direct.scalar(
        connection, _TRY_LOCK, {"key": RELAY_LOCK_KEY}
    ):
        return []
    rows = await direct.rows(connection, _OLDEST, {"limit": limit})
    return [
        OutboxRecord(i, topic, key, bytes(payload), rid) for i, topic, key, payload, rid in rows
    ]


async def remove(connection: AsyncConnection, ids: list[int]) -> None:
    """Forget published records (by id: ids may commit out of order on PostgreSQL)."""
    if connection.dialect.name == "postgresql":
        await direct.run(connection, _REMOVE, {"ids": ids})
    else:
        await connection.execute(delete(outbox).where(outbox.c.id.in_(ids)))
