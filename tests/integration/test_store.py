"""The store on SQLite and PostgreSQL: versions, outbox, registry revisions, event numbering."""

from __future__ import annotations

import asyncio

import pytest

from herald.core.resources import with_version
from herald.runtime.store import events, outbox, resources, subscriptions
from herald.runtime.store.database import Database
from herald.runtime.store.events import LoggedEvent

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
        previous = await resources.current(connection, "Task", "t1", for_update=True)
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


async def test_no_events_for_deleted_subscriptions(database: Database) -> None:
    async with database.transaction() as connection:
        await subscriptions.insert_new(connection, _subscription("s1"), status="active", topic="t")
        assert await subscriptions.mark_deleted(connection, "s1")
        assert await events.record(connection, _event("s1", "r1"), NOW) is None
