"""The embedded bus: a durable log in Herald's own database, so a crash loses nothing."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import bindparam, delete, event, func, insert, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.runtime.bus.base import Outgoing, Record, Transaction
from herald.runtime.store import direct
from herald.runtime.store.database import Database
from herald.runtime.store.direct import Prepared
from herald.runtime.store.tables import bus_log, bus_offsets

# Seconds between deletions of committed records from the log.
TRIM_INTERVAL = 1.0

# Built once (see store/direct.py).
_APPEND = Prepared(insert(bus_log))
_GROUP = (bus_offsets.c.group_id == bindparam("of_group")) & (
    bus_offsets.c.topic == bindparam("of_topic")
)
_POSITION = Prepared(select(bus_offsets.c.position).where(_GROUP))
# The group's position stored or moved forward (never back) in one statement.
_STORE_POSITION = Prepared(
    text(
        "INSERT INTO bus_offsets (group_id, topic, position) VALUES (:of_group, :of_topic, :to)"
        " ON CONFLICT (group_id, topic) DO UPDATE SET position = CASE"
        " WHEN excluded.position > bus_offsets.position THEN excluded.position"
        " ELSE bus_offsets.position END"
    )
)
_READ = Prepared(
    select(bus_log.c.id, bus_log.c.key, bus_log.c.payload, bus_log.c.request_id)
    .where(bus_log.c.topic == bindparam("topic"), bus_log.c.id > bindparam("after"))
    .order_by(bus_log.c.id)
    .limit(bindparam("limit"))
)
_FORGET = Prepared(
    delete(bus_log).where(bus_log.c.topic == bindparam("topic"), bus_log.c.id <= bindparam("to"))
)


class EmbeddedBus:
    """Publisher and consumer factory over the bus_log table."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._wakeups: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        # Per topic, how many commits appended to it (so far as this process knows): a
        # consumer that found the log drained reads again only once it changed.
        self._appended: dict[str, int] = defaultdict(int)
        # Records appended in a caller's transaction wake readers once it commits: one listener
        # per engine that writes (added at its first append), as adding one per transaction
        # cost more than the append (every write publishes its change here).
        self._listening: set[Engine] = set()
        # Key, in a connection's info, of the topics appended to in its open transaction (one
        # per bus: every bus over the engine hears every commit).
        self._pending = f"herald_bus_pending_{id(self)}"

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
                await direct.run_many(own, _APPEND, rows)
            self._wake(topics)
            return
        await direct.run_many(connection, _APPEND, rows)
        # Readers must look only once the records are committed (see _on_commit).
        engine = connection.sync_engine
        if engine not in self._listening:
            event.listen(engine, "commit", self._on_commit)
            event.listen(engine, "rollback", self._on_rollback)
            self._listening.add(engine)
        info = connection.sync_connection.info  # type: ignore[union-attr]
        info.setdefault(self._pending, set()).update(topics)

    def _on_commit(self, connection: Connection) -> None:
        topics = connection.info.pop(self._pending, None)
        if topics:
            self._wake(topics)

    def _on_rollback(self, connection: Connection) -> None:
        connection.info.pop(self._pending, None)

    def _wake(self, topics: set[str]) -> None:
        for topic in topics:
            self._appended[topic] += 1
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
        self._group = {"of_group": group_id, "of_topic": topic}
        self._position: int | None = None
        self._trimmed = -TRIM_INTERVAL  # when committed records were last dropped (monotonic)
        self._drained = False  # the last read returned every record committed before it
        self._seen = 0  # the topic's count of appending commits at the last read

    async def _committed(self) -> int:
        found = await self.bus.database.read_rows(_POSITION, self._group)
        return int(found[0][0]) if found else 0

    async def fetch(self, timeout: float, max_records: int) -> list[Record]:
        """The next records after the last fetched ones."""
        if self._position is None:
            self._position = await self._committed()
        wakeup = self.bus._wakeups[self.topic]
        for attempt in range(2):
            # After a read that found the log drained, only a commit that appended records
            # can change that, and every such commit of this process counts (the embedded
            # bus has no other writer): without one, the read would find nothing. Half of
            # the reads were such, each dearer than its rows of SQLite work, as the write
            # before it had emptied the reader's page cache.
            appended = self.bus._appended[self.topic]
            if attempt == 1 or not self._drained or appended != self._seen:
                self._seen, self._drained = appended, False
                wakeup.clear()
                after = {"topic": self.topic, "after": self._position, "limit": max_records}
                # Read after nearly every commit: on SQLite without a pooled connection.
                rows = await self.bus.database.read_rows(_READ, after)
                self._drained = len(rows) < max_records
                if rows:
                    self._position = rows[-1][0]
                    return [
                        Record(self.topic, 0, offset, key, bytes(payload), None, request_id)
                        for offset, key, payload, request_id in rows
                    ]
            if attempt == 0:
                try:
                    await asyncio.wait_for(wakeup.wait(), timeout)
                except TimeoutError:
                    # Read at the next fetch whatever happened: a timeout keeps the log
                    # polled as it was before reads were skipped.
                    self._drained = False
                    return []
        return []

    async def commit(
        self, records: Sequence[Record], transaction: Transaction | None = None
    ) -> None:
        """Store the group's position after these records and drop what every reader has seen;
        in the caller's transaction when one is given (the work and its position commit
        together)."""
        if not records:
            return
        if transaction is None:
            async with self.bus.database.transaction() as connection:
                await self._commit(connection, records)
            return
        assert isinstance(transaction, AsyncConnection)
        await self._commit(transaction, records)

    async def _commit(self, connection: AsyncConnection, records: Sequence[Record]) -> None:
        position = max(r.offset for r in records)
        await direct.run(connection, _STORE_POSITION, {**self._group, "to": position})
        # Embedded mode has one consumer group per topic, so committed records are done with;
        # they are dropped every TRIM_INTERVAL, not with every commit (at a low rate, each
        # commit holds one record, and the DELETE was a statement per record). Readers start
        # after the stored position, so what is left for a while is never read again.
        now = time.monotonic()
        if now - self._trimmed >= TRIM_INTERVAL:
            await direct.run(connection, _FORGET, {"topic": self.topic, "to": position})
            self._trimmed = now

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
