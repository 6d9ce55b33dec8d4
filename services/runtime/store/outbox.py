"""The transactional outbox: records written with the change that caused them, published later."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, insert, select, text
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


_ADD = Prepared(insert(outbox))


async def add(connection: AsyncConnection, topic: str, key: str, payload: bytes) -> None:
    """Queue a record in the caller's transaction, with the request id of the work in hand."""
    await direct.run(
        connection,
        _ADD,
        {"topic": topic, "key": key, "payload": payload, "request_id": request_id.get()},
    )


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
        if self.publisher is None:
            await add(connection, topic, key, payload)
            return
        record = Outgoing(topic, key, payload, request_id.get())
        await self.publisher.publish([record], transaction=connection)


async def claim(connection: AsyncConnection, limit: int) -> list[OutboxRecord]:
    """The oldest records, or none when another relay holds the lock (PostgreSQL)."""
    if connection.dialect.name == "postgresql":
        locked = await connection.scalar(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": RELAY_LOCK_KEY}
        )
        if not locked:
            return []
    rows = await connection.execute(select(outbox).order_by(outbox.c.id).limit(limit))
    return [OutboxRecord(r.id, r.topic, r.key, bytes(r.payload), r.request_id) for r in rows]


async def remove(connection: AsyncConnection, ids: list[int]) -> None:
    """Forget published records (by id: ids may commit out of order on PostgreSQL)."""
    await connection.execute(delete(outbox).where(outbox.c.id.in_(ids)))
