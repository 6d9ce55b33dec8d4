"""Reads of several statements: one snapshot in `snapshot()`, one per statement in `read()`.

On each engine (the `database` fixture of conftest.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import DBAPIError

from herald.runtime.store.database import Database
from herald.runtime.store.tables import resources

COUNT = select(func.count()).select_from(resources)


def _row(resource_id: str) -> dict[str, object]:
    return {
        "resource_type": "Task",
        "id": resource_id,
        "version_id": 1,
        "last_updated": "2026-01-01T00:00:00.000Z",
        "deleted": False,
        "content": "{}",
    }


async def _add(database: Database, resource_id: str) -> None:
    async with database.transaction() as connection:
        await connection.execute(insert(resources), _row(resource_id))


async def test_a_snapshot_read_does_not_see_a_commit_made_between_its_statements(
    database: Database,
) -> None:
    await _add(database, "a")
    async with database.snapshot() as connection:
        assert await connection.scalar(COUNT) == 1
        await _add(database, "b")
        assert await connection.scalar(COUNT) == 1
    async with database.snapshot() as connection:
        assert await connection.scalar(COUNT) == 2


async def test_nothing_written_in_a_snapshot_read_is_kept(database: Database) -> None:
    refused = False
    try:
        async with database.snapshot() as connection:
            await connection.execute(insert(resources), _row("a"))
    except DBAPIError:
        refused = True
    # PostgreSQL refuses the write (a READ ONLY transaction); SQLite's read is rolled back.
    assert refused is not database.is_sqlite
    async with database.read() as connection:
        assert await connection.scalar(COUNT) == 0


@pytest.mark.postgres
async def test_postgresql_reads_take_a_snapshot_per_statement_and_snapshots_two_trips_more(
    postgres_url: str,
) -> None:
    database = Database(postgres_url)
    await database.migrate()
    try:
        for attempt in range(2):
            trips = database.round_trips
            async with database.read() as connection:
                before = int(await connection.scalar(COUNT) or 0)
                await _add(database, f"r{attempt}")
                # Autocommit: the second statement sees the commit made in between.
                assert await connection.scalar(COUNT) == before + 1
            read_trips = database.round_trips - trips
            trips = database.round_trips
            async with database.snapshot() as connection:
                assert await connection.scalar(COUNT) == before + 1
                assert await connection.scalar(COUNT) == before + 1
            if attempt:  # the first also prepared the statements on its connection
                # Two statements each; the read's share includes the write's BEGIN,
                # INSERT and COMMIT made in between; the snapshot adds BEGIN and ROLLBACK.
                assert read_trips == 2 + 3
                assert database.round_trips - trips == 2 + 2
    finally:
        await database.aclose()
