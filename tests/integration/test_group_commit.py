"""Group commit of concurrent writes, on SQLite and on PostgreSQL: a failed write sends the others
of its group to do theirs again alone (on SQLite, unless it changed nothing)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

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


async def _write(
    groups: GroupCommit,
    database: Database,
    key: str,
    *,
    fail: bool = False,
    runs: list[str] | None = None,
    refuse: bool = False,
) -> bool:
    """Queue one record; whether a fresh reader saw it the moment the write returned.

    `fail`: raise after writing; `refuse`: raise before writing anything."""

    async def work(connection: AsyncConnection) -> None:
        if runs is not None:
            runs.append(key)
        if refuse:
            raise Refused(key)
        await outbox.add(connection, "topic", key, b"{}")
        if fail:
            raise Refused(key)

    await groups.run(work)
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
    assert sizes == [12]


async def test_postgresql_groups_the_writes_of_one_key(database: Database) -> None:
    sizes: list[int] = []
    groups = GroupCommit(database, sizes.append)

    async def write(key: str, record: str) -> None:
        async def work(connection: AsyncConnection) -> None:
            await outbox.add(connection, "topic", record, b"{}")

        await groups.run(work, key=key)

    await asyncio.gather(*(write(key, f"{key}{n}") for n, key in enumerate("TTPTP")))
    assert await _stored(database) == {"T0", "T1", "P2", "T3", "P4"}
    # Each resource type's writes take its own lock on PostgreSQL: a group holds one type's.
    assert sorted(sizes) == ([5] if database.is_sqlite else [2, 3])


async def test_a_failed_write_changes_nothing_of_the_others(database: Database) -> None:
    groups = GroupCommit(database)
    runs: list[str] = []
    outcomes = await asyncio.gather(
        _write(groups, database, "a", runs=runs),
        _write(groups, database, "b", fail=True, runs=runs),
        _write(groups, database, "c", runs=runs),
        return_exceptions=True,
    )
    assert outcomes[0] is True and outcomes[2] is True
    assert isinstance(outcomes[1], Refused)
    assert await _stored(database) == {"a", "c"}
    # The group of a and b rolled back; both ran again, each alone (b failing again, on its own
    # this time); c, waiting meanwhile, in the next group.
    assert sorted(runs) == ["a", "a", "b", "b", "c"]
    assert runs[:2] == ["a", "b"]
    # The group goes on taking writes afterwards.
    assert await _write(groups, database, "d")


async def test_a_refused_write_that_changed_nothing_costs_the_others_nothing(
    database: Database,
) -> None:
    sizes: list[int] = []
    groups = GroupCommit(database, sizes.append)
    runs: list[str] = []
    outcomes = await asyncio.gather(
        _write(groups, database, "a", runs=runs),
        _write(groups, database, "b", refuse=True, runs=runs),
        _write(groups, database, "c", runs=runs),
        _write(groups, database, "d", refuse=True, runs=runs),
        return_exceptions=True,
    )
    assert outcomes[0] is True and outcomes[2] is True
    assert isinstance(outcomes[1], Refused) and isinstance(outcomes[3], Refused)
    assert await _stored(database) == {"a", "c"}
    if database.is_sqlite:
        # Nothing of b or d to undo: each got its error at once, a and c committed together.
        assert runs == ["a", "b", "c", "d"]
        assert sizes == [2]
    else:
        assert sorted(runs) == ["a", "a", "b", "b", "c", "c", "d", "d"]
    assert await _write(groups, database, "e")


async def test_a_failed_statement_spoils_nothing_of_the_others(database: Database) -> None:
    groups = GroupCommit(database)
    runs: list[str] = []

    async def broken(connection: AsyncConnection) -> None:
        runs.append("broken")
        await outbox.add(connection, "topic", "broken", b"{}")
        # On PostgreSQL the failed statement aborts the whole transaction.
        await connection.execute(text("SELECT no_such_column FROM outbox"))

    outcomes = await asyncio.gather(
        _write(groups, database, "a", runs=runs),
        groups.run(broken),
        _write(groups, database, "c", runs=runs),
        return_exceptions=True,
    )
    assert outcomes[0] is True and outcomes[2] is True
    assert isinstance(outcomes[1], DBAPIError)
    assert await _stored(database) == {"a", "c"}
    assert sorted(runs) == ["a", "a", "broken", "broken", "c"]


@pytest.mark.parametrize("how", ["refuse", "fail"])
async def test_a_write_failing_first_in_its_group_runs_once(database: Database, how: str) -> None:
    """Refused before changing anything, or failed after: the first write saw only committed
    data, so its error is its own, and the group goes on without it."""
    groups = GroupCommit(database)
    runs: list[str] = []
    outcomes = await asyncio.gather(
        _write(groups, database, "a", runs=runs, fail=how == "fail", refuse=how == "refuse"),
        _write(groups, database, "b", runs=runs),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], Refused) and outcomes[1] is True
    assert runs == ["a", "b"]
    assert await _stored(database) == {"b"}


async def test_a_failed_commit_fails_every_write_of_its_group(database: Database) -> None:
    groups = GroupCommit(database)

    async def breaks_the_commit(connection: AsyncConnection) -> None:
        # A deferred foreign key violation is only found at COMMIT.
        await connection.execute(text("CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY)"))
        await connection.execute(
            text(
                "CREATE TEMP TABLE child (parent INTEGER REFERENCES parent (id)"
                " DEFERRABLE INITIALLY DEFERRED)"
            )
        )
        await connection.execute(text("INSERT INTO child VALUES (1)"))

    outcomes = await asyncio.gather(
        _write(groups, database, "a"), groups.run(breaks_the_commit), return_exceptions=True
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
