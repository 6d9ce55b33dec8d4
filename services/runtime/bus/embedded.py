"""The embedded bus: a durable log in Herald's own database, so a crash loses nothing."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import delete, event, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.runtime.bus.base import Outgoing, Record, Transaction
from herald.runtime.store.database import Database
from herald.runtime.store.tables import bus_log, bus_offsets


class EmbeddedBus:
    """Publisher and consumer factory over the bus_log table."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._wakeups: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def publish(
        self, records: Sequence[Outgoing], transaction: Transaction | None = None
    ) -> None:
        """Append records to the log, in the caller's transaction when one is given."""
        assert transaction is None or isinstance(transaction, AsyncConnection)
        connection = transaction
        if not records:
            return
        topics = {r.topic for r in records}
        rows = [
            {"topic": r.topic, "key": r.key, "payload": r.value, "request_id": r.request_id}
            for r in records
        ]
        if connection is None:
            async with self.database.transaction() as own:
                await own.execute(insert(bus_log), rows)
            self._wake(topics)
            return
        await connection.execute(insert(bus_log), rows)
        # Readers must look only once the records are committed.
        event.listen(connection.sync_connection, "commit", lambda _c: self._wake(topics), once=True)

    def _wake(self, topics: set[str]) -> None:
        for topic in topics:
            self._wakeups[topic].set()

    def consumer(self, group_id: str, topic: str) -> EmbeddedConsumer:
        """A consumer of one topic for a group."""
        return EmbeddedConsumer(self, group_id, topic)


class EmbeddedConsumer:
    """Reads the log from the group's committed position."""

    def __init__(self, bus: EmbeddedBus, group_id: str, topic: str) -> None:
        self.bus = bus
        self.group_id = group_id
        self.topic = topic
        self._position: int | None = None

    async def _committed(self) -> int:
        async with self.bus.database.read() as connection:
            value = await connection.scalar(
                select(bus_offsets.c.position).where(
                    bus_offsets.c.group_id == self.group_id, bus_offsets.c.topic == self.topic
                )
            )
        return int(value or 0)

    async def fetch(self, timeout: float, max_records: int) -> list[Record]:
        """The next records after the last fetched ones."""
        if self._position is None:
            self._position = await self._committed()
        wakeup = self.bus._wakeups[self.topic]
        for attempt in range(2):
            wakeup.clear()
            async with self.bus.database.read() as connection:
                rows = (
                    await connection.execute(
                        select(bus_log)
                        .where(bus_log.c.topic == self.topic, bus_log.c.id > self._position)
                        .order_by(bus_log.c.id)
                        .limit(max_records)
                    )
                ).all()
            if rows:
                self._position = rows[-1].id
                return [
                    Record(self.topic, 0, r.id, r.key, bytes(r.payload), None, r.request_id)
                    for r in rows
                ]
            if attempt == 0:
                try:
                    await asyncio.wait_for(wakeup.wait(), timeout)
                except TimeoutError:
                    return []
        return []

    async def commit(self, records: Sequence[Record]) -> None:
        """Store the group's position after these records and drop what every reader has seen."""
        if not records:
            return
        position = max(r.offset for r in records)
        where = (bus_offsets.c.group_id == self.group_id) & (bus_offsets.c.topic == self.topic)
        async with self.bus.database.transaction() as connection:
            existing = await connection.scalar(select(bus_offsets.c.position).where(where))
            if existing is None:
                await connection.execute(
                    insert(bus_offsets).values(
                        group_id=self.group_id, topic=self.topic, position=position
                    )
                )
            elif position > existing:
                await connection.execute(update(bus_offsets).where(where).values(position=position))
            # Embedded mode has one consumer group per topic, so committed records are done with.
            await connection.execute(
                delete(bus_log).where(bus_log.c.topic == self.topic, bus_log.c.id <= position)
            )

    def owns(self, key: str) -> bool:
        """A single embedded member owns every key."""
        return True

    async def lag(self) -> int | None:
        """Records in the log after the committed position."""
        committed = await self._committed()
        async with self.bus.database.read() as connection:
            value = await connection.scalar(
                select(func.count())
                .select_from(bus_log)
                .where(bus_log.c.topic == self.topic, bus_log.c.id > committed)
            )
        return int(value or 0)
