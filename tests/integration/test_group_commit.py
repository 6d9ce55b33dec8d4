"""Group commit of concurrent writes (SQLite), and the same guarantees on PostgreSQL where each
write keeps a transaction of its own."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from herald.runtime.store import database as database_module
from herald.runtime.store import outbox, sqlite_driver
from herald.runtime.store.database import Database
from herald.runtime.store.group_commit import GroupCommit
from herald.runtime.store.tables import outbox as outbox_table


class Refused(Exception):
    """A write's own failure."""


async def _stored(database: Database) -> set[str]:
    async with database.read() as connection:
        return set((await connection.execute(select(outbox_table.c.key))).scalars())


async def _write(groups: GroupCommit, database: Database, key: str, *, fail: bool = False) -> bool:
    """Queue one record; whether a fresh reader saw it the moment the write returned."""
    async with groups.transaction() as connection:
        await outbox.add(connection, "topic", key, b"{}")
        if fail:
            raise Refused(key)
    return key in await _stored(database)


async def test_concurrent_writes_share_a_transaction_and_return_after_its_commit(
    database: Database,
) -> None:
    sizes: list[int] = []
    groups = GroupCommit(database, sizes.append)
    keys = [f"k{i}" for i in range(12)]
    seen = await asyncio.gather(*(_write(groups, database, key) for key in keys))
    assert all(seen), "a write returned before its commit"
    assert await _stored(database) == set(keys)
    if database.is_sqlite:
        assert sizes == [12]
    else:
        assert sizes == []  # one transaction per write, as before


async def test_a_failed_write_changes_nothing_of_the_others(database: Database) -> None:
    groups = GroupCommit(database)
    outcomes = await asyncio.gather(
        _write(groups, database, "a"),
        _write(groups, database, "b", fail=True),
        _write(groups, database, "c"),
        return_exceptions=True,
    )
    assert outcomes[0] is True and outcomes[2] is True
    assert isinstance(outcomes[1], Refused)
    assert await _stored(database) == {"a", "c"}
    # The group goes on taking writes afterwards.
    assert await _write(groups, database, "d")


async def test_a_failed_commit_fails_every_write_of_its_group(database: Database) -> None:
    if not database.is_sqlite:
        pytest.skip("PostgreSQL commits each write on its own")
    groups = GroupCommit(database)

    async def breaks_the_commit() -> None:
        # A deferred foreign key violation is only found at COMMIT.
        async with groups.transaction() as connection:
            await connection.execute(text("CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY)"))
            await connection.execute(
                text(
                    "CREATE TEMP TABLE child (parent INTEGER REFERENCES parent (id)"
                    " DEFERRABLE INITIALLY DEFERRED)"
                )
            )
            await connection.execute(text("INSERT INTO child VALUES (1)"))

    outcomes = await asyncio.gather(
        _write(groups, database, "a"), breaks_the_commit(), return_exceptions=True
    )
    assert all(isinstance(outcome, IntegrityError) for outcome in outcomes), outcomes
    assert await _stored(database) == set()
    assert await _write(groups, database, "b")


async def test_a_writer_cancelled_while_waiting_leaves_the_group_working(
    database: Database,
) -> None:
    groups = GroupCommit(database)
    first = asyncio.create_task(_write(groups, database, "a"))
    gone = asyncio.create_task(_write(groups, database, "gone"))
    last = asyncio.create_task(_write(groups, database, "c"))
    await asyncio.sleep(0)  # all three queued, none started
    gone.cancel()
    assert await first and await last
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert await _stored(database) == {"a", "c"}


async def test_writes_get_the_error_when_their_transaction_cannot_begin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process holds the write lock past the busy timeout (shortened here).
    monkeypatch.setattr(sqlite_driver, "BUSY_TIMEOUT_MS", 200)
    monkeypatch.setattr(database_module, "BUSY_TIMEOUT_MS", 200)
    db = Database(f"sqlite:///{tmp_path / 'herald.db'}")
    await db.migrate()
    other = sqlite3.connect(tmp_path / "herald.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    groups = GroupCommit(db)
    try:
        writes = asyncio.gather(*(_write(groups, db, k) for k in "abc"), return_exceptions=True)
        outcomes = await asyncio.wait_for(writes, 30)
        locked = (OperationalError, sqlite3.OperationalError)
        assert all(isinstance(o, locked) and "locked" in str(o) for o in outcomes), outcomes
        other.execute("ROLLBACK")
        assert await _write(groups, db, "d")  # and writes go on once the lock is free
        assert await _stored(db) == {"d"}
    finally:
        other.close()
        await db.aclose()
