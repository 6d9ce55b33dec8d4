"""Both buses keep per-key order and resume a consumer group after its commits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
from sqlalchemy import text

from herald.runtime.bus import embedded
from herald.runtime.bus.base import Consumer, Outgoing, Record
from herald.runtime.bus.connect import Bus
from herald.runtime.bus.kafka import KafkaConsumer, KafkaPublisher, Membership, ensure_topics
from herald.runtime.settings import Settings
from herald.runtime.store.database import Database

TOPIC = "task-changes"


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
async def bus(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Bus]:
    """A prepared bus of each kind, with fresh topic names."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'bus.db'}",
        kafka_bootstrap=(
            request.getfixturevalue("kafka_bootstrap") if request.param == "kafka" else None
        ),
        kafka_topic_prefix=f"herald-test-{uuid.uuid4().hex[:8]}.",
        kafka_partitions=3,
    )
    database = Database(settings.database_url)
    await database.migrate()
    bus = Bus(settings, database)
    await bus.prepare()
    try:
        yield bus
    finally:
        await database.aclose()


async def _drain(consumer: Consumer, want: int) -> list[Record]:
    got: list[Record] = []
    for _ in range(60):
        got += await consumer.fetch(timeout=0.5, max_records=100)
        if len(got) >= want:
            break
    return got


async def test_publish_consume_commit_resume(bus: Bus) -> None:
    topic = bus.settings.topic(TOPIC)
    records = [Outgoing(topic, f"k{i % 3}", f"{i}".encode()) for i in range(30)]
    async with bus.publisher() as publisher:
        await publisher.publish(records)

    group = bus.settings.topic("group")
    async with bus.consumer(group, TOPIC) as consumer:
        got = await _drain(consumer, 30)
        assert sorted(int(r.value) for r in got) == list(range(30))
        for key in ("k0", "k1", "k2"):
            values = [int(r.value) for r in got if r.key == key]
            assert values == sorted(values), f"order of key {key} not kept"
        await consumer.commit(got[:10] if bus.embedded else got)
        assert consumer.owns("k0")

    async with bus.publisher() as publisher:
        await publisher.publish([Outgoing(topic, "k0", b"30")])
    async with bus.consumer(group, TOPIC) as consumer:
        again = await _drain(consumer, 1 if not bus.embedded else 21)
        values = sorted(int(r.value) for r in again)
        # Kafka committed all 30; the embedded consumer committed the first 10 it was given.
        assert values == ([30] if not bus.embedded else list(range(10, 31)))
        await consumer.commit(again)  # moves a stored position
    async with bus.consumer(group, TOPIC) as consumer:
        assert await consumer.fetch(timeout=1, max_records=100) == []


async def test_a_record_carries_its_request_id(bus: Bus) -> None:
    """The id of the request behind a record crosses the bus (Kafka: header x-request-id)."""
    topic = bus.settings.topic(TOPIC)
    async with bus.publisher() as publisher:
        await publisher.publish(
            [Outgoing(topic, "k", b"with", "req-1"), Outgoing(topic, "k", b"without")]
        )
    async with bus.consumer(bus.settings.topic("ids"), TOPIC) as consumer:
        got = await _drain(consumer, 2)
    assert [(r.value, r.request_id) for r in got] == [(b"with", "req-1"), (b"without", None)]


class _Undone(Exception):
    """Raised inside a transaction to roll it back."""


async def test_embedded_work_and_position_commit_together(tmp_path: Path) -> None:
    """In the store, records published and a position committed in one transaction take effect
    together: a rollback leaves both undone, a commit wakes a waiting reader."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'bus.db'}")
    database = Database(settings.database_url)
    await database.migrate()
    try:
        bus = Bus(settings, database)
        assert bus.in_store
        source, sink = bus.settings.topic(TOPIC), bus.settings.topic("out")
        async with bus.consumer("f", "first") as first, bus.publisher() as publisher:
            # The very first append in a transaction wakes a waiting reader too.
            waiting = asyncio.create_task(first.fetch(timeout=30, max_records=10))
            await asyncio.sleep(0.1)
            async with database.transaction() as connection:
                record = Outgoing(bus.settings.topic("first"), "k", b"1")
                await publisher.publish([record], transaction=connection)
            assert [r.value for r in await asyncio.wait_for(waiting, 5)] == [b"1"]
        async with bus.publisher() as publisher:
            await publisher.publish([Outgoing(source, "k", b"1"), Outgoing(source, "k", b"2")])
        async with bus.consumer("g", TOPIC) as consumer, bus.consumer("h", "out") as reader:
            got = await _drain(consumer, 2)
            with pytest.raises(_Undone):
                async with database.transaction() as connection:
                    await publisher.publish([Outgoing(sink, "k", b"x")], transaction=connection)
                    await bus.commit_in(consumer, got, connection)
                    raise _Undone
            assert await reader.fetch(timeout=0.2, max_records=10) == []
            async with bus.consumer("g", TOPIC) as again:
                assert len(await _drain(again, 2)) == 2, "the position moved without the work"
            waiting = asyncio.create_task(reader.fetch(timeout=30, max_records=10))
            await asyncio.sleep(0.1)  # the reader waits for a wake-up
            async with database.transaction() as connection:
                await publisher.publish([Outgoing(sink, "k", b"y")], transaction=connection)
                await bus.commit_in(consumer, got, connection)
            assert [r.value for r in await asyncio.wait_for(waiting, 5)] == [b"y"]
        async with bus.consumer("g", TOPIC) as consumer:
            assert await consumer.fetch(timeout=0.2, max_records=10) == []
    finally:
        await database.aclose()


async def _until(
    owned: Callable[[], bool], consumers: Sequence[KafkaConsumer], timeout: float
) -> None:
    """Fetch (which keeps members in their group) until `owned()` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not owned():
        assert asyncio.get_running_loop().time() < deadline, "partitions never so assigned"
        for consumer in consumers:
            await consumer.fetch(timeout=0.1, max_records=10)


@pytest.mark.kafka
async def test_a_static_member_that_stops_hands_its_partitions_over_at_once(
    kafka_bootstrap: str,
) -> None:
    """Static members (group.instance.id) with a session timeout far longer than the wait: when
    one stops gracefully, it leaves the group, so the other takes its partitions right away
    rather than when the session expires (the stopped one might never come back)."""
    prefix = f"herald-test-{uuid.uuid4().hex[:8]}."
    topic, group = f"{prefix}{TOPIC}", f"{prefix}group"
    await ensure_topics(kafka_bootstrap, [topic], partitions=2, replication_factor=1)
    keys = ["k0", "k1", "k2", "k3", "k4", "k5"]  # both partitions among them
    slow = {"session_timeout": 120.0, "heartbeat_interval": 1.0}
    first = KafkaConsumer(kafka_bootstrap, group, topic, Membership("first", **slow))
    second = KafkaConsumer(kafka_bootstrap, group, topic, Membership("second", **slow))
    await first.start()
    await second.start()
    try:

        def shared() -> bool:
            return (
                all(first.owns(k) != second.owns(k) for k in keys)
                and any(first.owns(k) for k in keys)
                and any(second.owns(k) for k in keys)
            )

        await _until(shared, [first, second], timeout=60)
        await first.aclose()
        # Well within the session timeout: the partitions were handed over, not timed out.
        await _until(lambda: all(second.owns(k) for k in keys), [second], timeout=60)
    finally:
        await first.aclose()
        await second.aclose()


@pytest.mark.kafka
async def test_kafka_commits_are_deferred_to_the_interval_and_made_on_close(
    kafka_bootstrap: str,
) -> None:
    """Offsets of processed records wait for the commit interval (one round trip per interval,
    not per batch), and a member that closes commits them, so the next one resumes after them."""
    prefix = f"herald-test-{uuid.uuid4().hex[:8]}."
    topic, group = f"{prefix}{TOPIC}", f"{prefix}group"
    await ensure_topics(kafka_bootstrap, [topic], partitions=1, replication_factor=1)
    publisher = KafkaPublisher(kafka_bootstrap)
    await publisher.start()
    await publisher.publish([Outgoing(topic, "k", f"{i}".encode()) for i in range(5)])
    lazy = Membership(commit_interval=3600.0)
    first = KafkaConsumer(kafka_bootstrap, group, topic, lazy)
    await first.start()
    try:
        await first.commit([])  # the first commit is due at once; make the next one wait
        got = await _drain(first, 5)
        await first.commit(got)
        assert await first.lag() == 5, "committed before the interval"
    finally:
        await first.aclose()
    await publisher.publish([Outgoing(topic, "k", b"5")])
    await publisher.aclose()
    eager = KafkaConsumer(kafka_bootstrap, group, topic, Membership(commit_interval=0))
    await eager.start()
    try:
        assert [r.value for r in await _drain(eager, 1)] == [b"5"]  # resumed after the close
        await eager.commit(got[-1:])
        assert await eager.lag() == 1
    finally:
        await eager.aclose()


async def test_embedded_positions_never_go_back_and_the_log_is_trimmed_in_turns(
    database_url: str, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(database_url=database_url)

    async def logged() -> int:
        async with database.read() as connection:
            return int(
                (await connection.execute(text("SELECT count(*) FROM bus_log"))).scalar_one()
            )

    bus = Bus(settings, database)
    topic = bus.settings.topic(TOPIC)
    async with bus.publisher() as publisher, bus.consumer("g", TOPIC) as consumer:
        await publisher.publish([Outgoing(topic, "k", f"{i}".encode()) for i in range(3)])
        first = await _drain(consumer, 3)
        await consumer.commit(first)
        assert await logged() == 0  # the first commit drops what was read
        await publisher.publish([Outgoing(topic, "k", b"3"), Outgoing(topic, "k", b"4")])
        second = await _drain(consumer, 2)
        await consumer.commit(second)
        assert await logged() == 2  # within the interval: kept a while, never read again
        await consumer.commit(first[:1])  # an older position is no step back
        async with bus.consumer("g", TOPIC) as again:
            assert await again.fetch(timeout=0.2, max_records=10) == []
        monkeypatch.setattr(embedded, "TRIM_INTERVAL", 0.0)
        await consumer.commit(second)
        assert await logged() == 0


async def test_an_embedded_consumer_reads_again_only_after_an_append_or_a_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer that found the log drained skips the read until a commit appended to its
    topic (whichever consumer of the topic was woken by it) or a wait timed out (the log is
    still polled then, as before)."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'bus.db'}")
    database = Database(settings.database_url)
    await database.migrate()
    reads = 0
    read_rows = database.read_rows

    async def counted(*args: object) -> object:
        nonlocal reads
        reads += 1
        return await read_rows(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(database, "read_rows", counted)
    try:
        bus = Bus(settings, database)
        topic = bus.settings.topic(TOPIC)
        async with (
            bus.publisher() as publisher,
            bus.consumer("g", TOPIC) as consumer,
            bus.consumer("h", TOPIC) as other,
        ):
            await publisher.publish([Outgoing(topic, "k", b"1"), Outgoing(topic, "k", b"2")])
            assert [r.value for r in await consumer.fetch(timeout=0.1, max_records=10)] == [
                b"1",
                b"2",
            ]
            reads = 0
            assert await consumer.fetch(timeout=0.1, max_records=10) == []
            assert reads == 0, "read although nothing was appended since the log was drained"
            # After a timeout the next fetch reads: an append this process did not make
            # (nothing else writes the embedded log, but nothing is lost if it did).
            async with database.transaction() as connection:
                await connection.execute(
                    text("INSERT INTO bus_log (topic, key, payload) VALUES (:topic, 'k', x'33')"),
                    {"topic": topic},
                )
            assert [r.value for r in await consumer.fetch(timeout=0.1, max_records=10)] == [b"3"]
            # One consumer clearing the topic's wake-up does not hide an append from another.
            assert len(await _drain(other, 3)) == 3
            assert await other.fetch(timeout=0.1, max_records=10) == []
            assert await consumer.fetch(timeout=0.1, max_records=10) == []
            await publisher.publish([Outgoing(topic, "k", b"4")])
            assert [r.value for r in await other.fetch(timeout=5, max_records=10)] == [b"4"]
            assert [r.value for r in await consumer.fetch(timeout=5, max_records=10)] == [b"4"]
            # A full batch means more may be there: read again at once.
            await publisher.publish([Outgoing(topic, "k", b"5"), Outgoing(topic, "k", b"6")])
            assert [r.value for r in await consumer.fetch(timeout=5, max_records=1)] == [b"5"]
            reads = 0
            assert [r.value for r in await consumer.fetch(timeout=5, max_records=1)] == [b"6"]
            assert reads == 1
    finally:
        await database.aclose()
