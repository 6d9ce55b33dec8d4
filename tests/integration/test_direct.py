"""Prepared statements: the same rows, counts and errors whether sqlite3 or SQLAlchemy runs them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import bindparam, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from herald.runtime.store import direct, pg_driver
from herald.runtime.store.database import Database
from herald.runtime.store.direct import Prepared
from herald.runtime.store.tables import outbox, resources

INSERT = Prepared(insert(resources))
BY_ID = Prepared(
    select(resources.c.id, resources.c.version_id, resources.c.deleted)
    .where(resources.c.resource_type == "Task", resources.c.id == bindparam("id"))
    .order_by(resources.c.id)
)
ADD = Prepared(insert(outbox))


@pytest.fixture
async def pg_database(postgres_url: str) -> AsyncIterator[Database]:
    """A migrated, empty PostgreSQL database."""
    database = Database(postgres_url)
    await database.migrate()
    try:
        yield database
    finally:
        await database.aclose()


def _row(resource_id: str, version: int = 1) -> dict[str, object]:
    return {
        "resource_type": "Task",
        "id": resource_id,
        "version_id": version,
        "last_updated": "2026-01-01T00:00:00.000Z",
        "deleted": False,
        "content": "{}",
    }


async def test_writes_and_reads_agree_inside_and_outside_write_transactions(
    database: Database,
) -> None:
    before = database.statements
    module = database._sqlite_module
    direct_before = 0 if module is None else module.direct_statements
    pg_before = database._pg_counts.direct_statements
    async with database.transaction() as connection:
        await direct.run(connection, INSERT, _row("a"))
        await direct.run_many(
            connection, ADD, [{"topic": "t", "key": k, "payload": b"\x00\xff"} for k in "xy"]
        )
        inside = await direct.rows(connection, BY_ID, {"id": "a"})
        assert await direct.scalar(connection, BY_ID, {"id": "missing"}) is None
    async with database.read() as connection:
        outside = await direct.rows(connection, BY_ID, {"id": "a"})
        payloads = (await connection.execute(select(outbox.c.payload))).scalars().all()
    assert [tuple(r) for r in inside] == [("a", 1, False)] == [tuple(r) for r in outside]
    assert [bytes(p) for p in payloads] == [b"\x00\xff", b"\x00\xff"]
    # Every statement is counted, whichever way it ran (the last read and the select above too).
    assert database.statements - before == 6
    if module is not None:  # SQLite: the four in the write transaction bypassed SQLAlchemy
        assert module.direct_statements - direct_before == 4
    else:  # PostgreSQL: the same four ran on asyncpg itself, and so did the read's
        assert database._pg_counts.direct_statements - pg_before == 5


async def test_constraint_violations_raise_sqlalchemy_errors_and_roll_back(
    database: Database,
) -> None:
    async with database.transaction() as connection:
        await direct.run(connection, INSERT, _row("a"))
    with pytest.raises(IntegrityError):
        async with database.transaction() as connection:
            await direct.run(connection, INSERT, _row("b"))
            await direct.run(connection, INSERT, _row("a", 2))
    async with database.read() as connection:
        assert await direct.scalar(connection, BY_ID, {"id": "b"}) is None


@pytest.mark.postgres
async def test_a_write_transaction_costs_its_statements_plus_begin_and_commit(
    pg_database: Database,
) -> None:
    database = pg_database
    for attempt in range(3):
        trips, ran = database.round_trips, database._pg_counts.direct_statements
        async with database.transaction() as connection:
            await direct.run(connection, INSERT, _row(f"r{attempt}"))
            await direct.run_many(
                connection, ADD, [{"topic": "t", "key": k, "payload": b"x"} for k in "xyz"]
            )
            assert (await direct.rows(connection, BY_ID, {"id": f"r{attempt}"}))[0][0]
        assert database._pg_counts.direct_statements - ran == 3  # none through SQLAlchemy
        if attempt:  # the first one also prepared each statement on its connection
            # BEGIN, three statements (the executemany pipelined in one), COMMIT; no ping
            # of a connection that was in use a moment ago.
            assert database.round_trips - trips == 5


@pytest.mark.postgres
async def test_a_connection_lost_while_idle_is_replaced_at_checkout(
    pg_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = pg_database
    await _terminate_pooled_connection(database)
    monkeypatch.setattr(pg_driver, "IDLE_PING_AFTER", 0.0)
    async with database.transaction() as connection:  # pinged, found dead, replaced
        await direct.run(connection, INSERT, _row("after"))
    async with database.read() as connection:
        assert await direct.scalar(connection, BY_ID, {"id": "after"}) == "after"


@pytest.mark.postgres
async def test_a_connection_lost_in_use_raises_a_disconnect_and_is_discarded(
    pg_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = pg_database
    await _terminate_pooled_connection(database)
    # Used a moment ago (however slow this machine is): not pinged, so the statement finds
    # the connection gone.
    monkeypatch.setattr(pg_driver, "IDLE_PING_AFTER", 3600.0)
    with pytest.raises(DBAPIError) as raised:
        async with database.transaction() as connection:
            await direct.run(connection, INSERT, _row("lost"))
    assert raised.value.connection_invalidated
    async with database.transaction() as connection:  # a new connection
        await direct.run(connection, INSERT, _row("next"))
    async with database.read() as connection:
        assert await direct.scalar(connection, BY_ID, {"id": "lost"}) is None
        assert await direct.scalar(connection, BY_ID, {"id": "next"}) == "next"


async def _terminate_pooled_connection(database: Database) -> None:
    """End the server backend of the (only) pooled connection, as a server restart would."""
    async with database.transaction() as connection:
        pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    url = make_url(database.url)
    other = await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, database=url.database
    )
    try:
        # With a timeout, it returns once the backend has exited.
        assert await other.fetchval("SELECT pg_terminate_backend($1, 10000)", pid)
    finally:
        await other.close()


@pytest.mark.postgres
async def test_a_read_costs_its_statements_alone(pg_database: Database) -> None:
    database = pg_database
    async with database.transaction() as connection:
        await direct.run(connection, INSERT, _row("a"))
    for attempt in range(2):
        trips = database.round_trips
        async with database.read() as connection:
            assert (await direct.rows(connection, BY_ID, {"id": "a"}))[0][0] == "a"
            count = select(func.count()).select_from(outbox)
            assert (await connection.execute(count)).scalar_one() == 0
        if attempt:  # the first one also prepared them on its connection
            assert database.round_trips - trips == 2  # no BEGIN, no ROLLBACK
    async with database.transaction() as connection:  # the pool's connection writes again
        await direct.run(connection, INSERT, _row("b"))
        with pytest.raises(IntegrityError):
            await direct.run(connection, INSERT, _row("a"))
    async with database.read() as connection:  # ... and that write was rolled back
        assert await direct.scalar(connection, BY_ID, {"id": "b"}) is None
