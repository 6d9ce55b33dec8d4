"""The store on SQLite and PostgreSQL: versions, outbox, registry revisions, event numbering."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import sqlalchemy as sa
from prometheus_client import generate_latest

from herald.core.errors import ConcurrentWrite
from herald.core.resources import with_version
from herald.core.subscriptions import HEARTBEAT_PERIOD_URL
from herald.runtime.bus.base import Outgoing
from herald.runtime.metrics import Metrics
from herald.runtime.store import events, outbox, resources, subscriptions
from herald.runtime.store.database import Database
from herald.runtime.store.events import LoggedEvent
from herald.runtime.store.history import history

NOW = "2026-01-01T00:00:00.000Z"


def _subscription(sub_id: str) -> dict[str, object]:
    return with_version(
        {"resourceType": "Subscription", "criteria": "http://example.org/topic"}, sub_id, 1, NOW
    )


def _event(sub_id: str, request_id: str) -> LoggedEvent:
    return LoggedEvent(sub_id, 0, request_id, "Task", "t1", "1", "update", NOW)


async def test_migrate_twice_is_harmless(database: Database) -> None:
    await database.migrate()
    assert await database.ping()


async def test_resource_versions_and_outbox_commit_together(database: Database) -> None:
    task = with_version({"resourceType": "Task", "status": "requested"}, "t1", 1, NOW)
    with pytest.raises(RuntimeError):
        async with database.transaction() as connection:
            await resources.save(connection, task, previous=None)
            await outbox.add(connection, "changes", "t1", b"x")
            raise RuntimeError("crash before commit")
    async with database.read() as connection:
        assert await resources.current(connection, "Task", "t1") is None
        assert await outbox.claim(connection, 10) == []

    async with database.transaction() as connection:
        await resources.save(connection, task, previous=None)
        await outbox.add(connection, "changes", "t1", b"v1")
    async with database.transaction() as connection:
        previous = (await resources.begin_write(connection, "Task", "t1")).previous
        await resources.save(connection, with_version(task, "t1", 2, NOW), previous=previous)
        await outbox.add(connection, "changes", "t1", b"v2")
    async with database.transaction() as connection:
        stored = await resources.current(connection, "Task", "t1")
        assert stored is not None and stored.version_id == 2
        first = await resources.version(connection, "Task", "t1", 1)
        assert first is not None and first["meta"]["versionId"] == "1"
        claimed = await outbox.claim(connection, 10)
        assert [r.payload for r in claimed] == [b"v1", b"v2"]
        await outbox.remove(connection, [r.id for r in claimed])
    async with database.transaction() as connection:
        assert await outbox.claim(connection, 10) == []


async def test_a_task_write_carries_its_outbox_row_and_replaces_its_index(
    database: Database,
) -> None:
    task = {"resourceType": "Task", "status": "requested", "owner": {"reference": "Org/a"}}
    for version in (1, 2, 3):
        trips = database.round_trips
        async with database.transaction() as connection:
            start = await resources.begin_write(connection, "Task", "t1")
            stamped = with_version(
                {**task, "status": "ready"} if version > 1 else task, "t1", version, NOW
            )
            queued = Outgoing("changes", "t1", f"v{version}".encode(), f"request-{version}")
            await resources.save(connection, stamped, previous=start.previous, queued=queued)
        if database.round_trips and version == 3:
            # PostgreSQL: BEGIN, the type's lock with the read, the write (with its index and
            # outbox rows), COMMIT; every statement prepared on the pool's connection by now.
            assert database.round_trips - trips == 4
    async with database.transaction() as connection:
        start = await resources.begin_write(connection, "Task", "t1")
        assert start.previous is not None and start.previous.resource["status"] == "ready"
        statuses = await connection.execute(
            sa.text("SELECT code FROM search_tokens WHERE resource_id = 't1' AND param = 'status'")
        )
        assert statuses.scalars().all() == ["ready"]  # the old rows replaced, not added to
        queued = Outgoing("changes", "t1", b"gone", None)
        await resources.mark_deleted(connection, start.previous, 4, NOW, queued=queued)
    async with database.transaction() as connection:
        stored = await resources.current(connection, "Task", "t1")
        assert stored is not None and stored.deleted and stored.version_id == 4
        kept = await resources.version(connection, "Task", "t1", 3)
        assert kept is not None and kept["status"] == "ready"
        claimed = await outbox.claim(connection, 10)
        assert [(r.payload, r.request_id) for r in claimed] == [
            (b"v1", "request-1"),
            (b"v2", "request-2"),
            (b"v3", "request-3"),
            (b"gone", None),
        ]
        rows = await connection.execute(
            sa.text("SELECT count(*) FROM search_tokens WHERE resource_id = 't1'")
        )
        assert rows.scalar_one() == 0  # the deletion removed the index rows
        await outbox.remove(connection, [r.id for r in claimed])
        assert await outbox.claim(connection, 10) == []


async def test_a_second_create_of_one_id_is_a_concurrent_write_and_changes_nothing(
    database: Database,
) -> None:
    task = {"resourceType": "Task", "status": "requested", "owner": {"reference": "Org/a"}}
    async with database.transaction() as connection:
        await resources.save(connection, with_version(task, "t1", 1, NOW), previous=None)
    later = "2026-01-01T00:00:01.000Z"
    with pytest.raises(ConcurrentWrite):
        async with database.transaction() as connection:
            stamped = with_version({**task, "status": "ready"}, "t1", 1, later)
            await resources.save(connection, stamped, previous=None)
    async with database.transaction() as connection:
        stored = await resources.current(connection, "Task", "t1")
        assert stored is not None and stored.last_updated == NOW
        codes = await connection.execute(
            sa.text("SELECT code FROM search_tokens WHERE resource_id = 't1' AND param = 'status'")
        )
        assert codes.scalars().all() == ["requested"]


async def test_a_write_waiting_for_the_type_lock_stamps_after_the_holders_commit(
    database: Database,
) -> None:
    if database.is_sqlite:  # one writer at a time in-process: nothing to race
        pytest.skip("SQLite serialises write transactions before they begin")
    # The holder's stamp is far ahead of the clock: the waiter's stamp can only be later if its
    # read ran after the holder committed (not with a snapshot from before it waited).
    ahead = "2099-01-01T00:00:00.000Z"
    holding, committing = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with database.transaction() as connection:
            await resources.begin_write(connection, "Task", "first")
            task = with_version({"resourceType": "Task", "status": "ready"}, "first", 1, ahead)
            await resources.save(connection, task, previous=None)
            holding.set()
            await asyncio.sleep(0.3)
            committing.set()

    async def waiter() -> tuple[bool, str]:
        await holding.wait()
        async with database.transaction() as connection:
            start = await resources.begin_write(connection, "Task", "first")
            return committing.is_set(), start.previous.last_updated if start.previous else ""

    _, (after_commit, seen) = await asyncio.gather(holder(), waiter())
    assert after_commit  # it waited for the holder's lock
    assert seen == ahead  # and read the row the holder committed
    async with database.transaction() as connection:
        clock = await resources.write_clock(connection, "Task")
    assert clock.isoformat().startswith("2099-01-01T00:00:00.001")


async def test_registry_revision_grows_with_every_change(database: Database) -> None:
    async with database.transaction() as connection:
        start = await subscriptions.revision(connection)
        await subscriptions.insert_new(
            connection, _subscription("s1"), status="requested", topic="t"
        )
    async with database.transaction() as connection:
        assert await subscriptions.set_status(connection, "s1", "active", expected="requested")
        assert not await subscriptions.set_status(connection, "s1", "active", expected="requested")
    async with database.read() as connection:
        changed = await subscriptions.changed_since(connection, start)
        assert [s.id for s in changed] == ["s1"]
        assert changed[0].status == "active"
        assert changed[0].revision == start + 2
        # A status change that did not apply may still take a revision; revisions only grow.
        assert await subscriptions.revision(connection) >= start + 2


async def test_a_status_change_by_the_server_is_a_new_version(database: Database) -> None:
    async with database.transaction() as connection:
        await subscriptions.insert_new(
            connection, _subscription("s1"), status="requested", topic="t"
        )
    for status, version in (("active", "2"), ("error", "3"), ("off", "4")):
        async with database.transaction() as connection:
            await subscriptions.set_status(connection, "s1", status)
        async with database.read() as connection:
            stored = await subscriptions.get(connection, "s1")
        assert stored is not None
        assert stored.resource["meta"]["versionId"] == version
        assert stored.resource["meta"]["lastUpdated"] > NOW
        assert stored.resource["status"] == status
    async with database.read() as connection:
        versions = await history(connection, "Subscription", "s1", since=None, count=10)
    assert [(v.version_id, v.resource["status"]) for v in versions] == [
        (4, "off"),
        (3, "error"),
        (2, "active"),
        (1, "requested"),
    ]


async def test_event_numbers_are_gap_free_and_deduplicated(database: Database) -> None:
    async with database.transaction() as connection:
        await subscriptions.insert_new(connection, _subscription("s1"), status="active", topic="t")

    async def record(request_id: str) -> int | None:
        async with database.transaction() as connection:
            return await events.record(connection, _event("s1", request_id), NOW)

    # Concurrent writers, each request twice: every request gets exactly one number.
    results = await asyncio.gather(*(record(f"r{i % 20}") for i in range(40)))
    numbers = sorted(n for n in results if n is not None)
    assert numbers == list(range(1, 21))
    async with database.read() as connection:
        logged = await events.after(connection, "s1", 0, 100)
        assert [e.number for e in logged] == list(range(1, 21))
        assert len({e.request_id for e in logged}) == 20
        stored = await subscriptions.get(connection, "s1")
        assert stored is not None and stored.events_count == 20


async def test_a_batch_is_numbered_per_subscription_in_order_once(database: Database) -> None:
    async with database.transaction() as connection:
        for sub_id in ("s1", "s2", "gone"):
            await subscriptions.insert_new(
                connection, _subscription(sub_id), status="active", topic="t"
            )
        assert await subscriptions.mark_deleted(connection, "gone")
        assert await events.record(connection, _event("s2", "before"), NOW) == 1
    batch = [
        _event("s1", "a"),
        _event("s2", "b"),
        _event("gone", "c"),
        _event("s1", "d"),
        _event("s2", "before"),  # recorded by an earlier transaction
        _event("s1", "a"),  # repeated within the batch
        _event("s2", "e"),
    ]
    async with database.transaction() as connection:
        numbers = await events.record_many(connection, batch, NOW)
    assert numbers == [1, 2, None, 2, None, None, 3]
    async with database.read() as connection:
        assert [e.request_id for e in await events.after(connection, "s1", 0, 10)] == ["a", "d"]
        logged = await events.after(connection, "s2", 0, 10)
        assert [(e.number, e.request_id) for e in logged] == [(1, "before"), (2, "b"), (3, "e")]
        assert await events.after(connection, "gone", 0, 10) == []
        counts = [(await subscriptions.get(connection, s)) for s in ("s1", "s2")]
        assert [c.events_count for c in counts if c is not None] == [2, 3]


async def test_concurrent_batches_share_numbers_without_gaps(database: Database) -> None:
    async with database.transaction() as connection:
        for sub_id in ("s1", "s2"):
            await subscriptions.insert_new(
                connection, _subscription(sub_id), status="active", topic="t"
            )

    async def record(requests: range) -> list[int | None]:
        # Two dispatchers during a rebalance: overlapping batches over both subscriptions, in
        # transactions of their own or joined with other work (a bus in the store).
        batch = [_event(f"s{1 + i % 2}", f"r{i}") for i in requests]
        if requests.start % 10:
            return await events.record_alone(database, batch, NOW)
        async with database.transaction() as connection:
            return await events.record_many(connection, batch, NOW)

    async def mark_delivered() -> list[int | None]:
        # The progress writer locks the same rows meanwhile.
        async with database.transaction() as connection:
            await events.mark_delivered_many(connection, {"s2": 1, "s1": 1})
        return []

    results = await asyncio.gather(
        *(record(range(i, i + 10)) for i in range(0, 40, 5)),
        *(mark_delivered() for _ in range(4)),
    )
    assert sum(n is not None for numbers in results for n in numbers) == 45
    async with database.read() as connection:
        for sub_id in ("s1", "s2"):
            logged = await events.after(connection, sub_id, 0, 100)
            assert [e.number for e in logged] == list(range(1, len(logged) + 1))
            assert len({e.request_id for e in logged}) == len(logged)
        assert len(await events.after(connection, "s1", 0, 100)) == 23


async def test_no_events_for_deleted_subscriptions(database: Database) -> None:
    async with database.transaction() as connection:
        await subscriptions.insert_new(connection, _subscription("s1"), status="active", topic="t")
        assert await subscriptions.mark_deleted(connection, "s1")
        assert await events.record(connection, _event("s1", "r1"), NOW) is None


def _scheduled(sub_id: str, end: str | None, heartbeat: int | None) -> dict[str, object]:
    resource: dict[str, object] = {**_subscription(sub_id), "channel": {"type": "rest-hook"}}
    if end is not None:
        resource["end"] = end
    if heartbeat is not None:
        resource["channel"] = {
            "type": "rest-hook",
            "extension": [{"url": HEARTBEAT_PERIOD_URL, "valueUnsignedInt": heartbeat}],
        }
    return resource


async def test_heartbeats_and_ends_are_read_without_parsing_resources(
    database: Database,
) -> None:
    async with database.transaction() as connection:
        await subscriptions.insert_new(
            connection, _scheduled("beats", None, 60), status="active", topic="t"
        )
        await subscriptions.insert_new(
            connection,
            _scheduled("ends", "2026-06-01T00:00:00+02:00", None),
            status="active",
            topic="t",
        )
        # An end already past when written never turns the subscription off.
        await subscriptions.insert_new(
            connection,
            _scheduled("stale", "2020-01-01T00:00:00Z", None),
            status="active",
            topic="t",
        )
        await subscriptions.insert_new(
            connection, _scheduled("waiting", None, 30), status="requested", topic="t"
        )
    async with database.read() as connection:
        assert await subscriptions.heartbeat_periods(connection) == {"beats": 60}
        assert await subscriptions.past_end(connection, "2026-05-31T21:59:59.999Z") == []
        assert await subscriptions.past_end(connection, "2026-05-31T22:00:00.000Z") == [
            ("ends", "active")
        ]
    async with database.transaction() as connection:  # the client drops the end
        await subscriptions.replace(
            connection, _scheduled("ends", None, None), status="requested", topic="t"
        )
        await subscriptions.set_status(connection, "beats", "off")
    async with database.read() as connection:
        assert await subscriptions.past_end(connection, "2030-01-01T00:00:00.000Z") == []
        assert await subscriptions.heartbeat_periods(connection) == {}


async def test_the_0003_migration_fills_heartbeats_and_ends(database_url: str) -> None:
    database = Database(database_url)
    before = sa.table(
        "subscriptions",
        *(
            sa.column(name)
            for name in [
                "id",
                "status",
                "topic",
                "content",
                "version_id",
                "last_updated",
                "revision",
                "events_count",
                "delivered_through",
                "deleted",
            ]
        ),
    )
    try:
        await database.migrate("0002")
        async with database.transaction() as connection:
            for sub_id, end, heartbeat in (("a", None, 20), ("b", "2027-01-01T00:00:00Z", None)):
                await connection.execute(
                    before.insert().values(
                        id=sub_id,
                        status="active",
                        topic="t",
                        content=orjson.dumps(_scheduled(sub_id, end, heartbeat)).decode(),
                        version_id=1,
                        last_updated=NOW,
                        revision=1,
                        events_count=0,
                        delivered_through=0,
                        deleted=False,
                    )
                )
        await database.migrate()
        async with database.read() as connection:
            assert await subscriptions.heartbeat_periods(connection) == {"a": 20}
            assert await subscriptions.past_end(connection, "2027-01-01T00:00:00.000Z") == [
                ("b", "active")
            ]
    finally:
        await database.aclose()


async def test_statements_and_transactions_are_counted_and_exported(database: Database) -> None:
    metrics = Metrics()
    metrics.watch_database(database)
    statements, transactions = database.statements, database.transactions
    trips = database.round_trips
    async with database.transaction() as connection:
        await connection.execute(sa.text("SELECT 1"))
        await connection.execute(sa.text("SELECT 2"))
    async with database.read() as connection:
        await connection.execute(sa.text("SELECT 3"))
    assert database.statements - statements == 3
    assert database.transactions - transactions == 2
    exposition = generate_latest(metrics.registry).decode()
    assert f"herald_database_statements_total {float(database.statements)}" in exposition
    assert f"herald_database_transactions_total {float(database.transactions)}" in exposition
    assert f"herald_database_round_trips_total {float(database.round_trips)}" in exposition
    # PostgreSQL: each statement waited for the server, and for its preparation (new to the
    # connection), and BEGIN and COMMIT of the write; a read needs neither (SQLite: none).
    assert database.round_trips - trips == (0 if database.is_sqlite else 3 + 3 + 2)
