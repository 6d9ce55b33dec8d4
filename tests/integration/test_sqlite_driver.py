"""Herald's SQLite adapter: transactions begin and end on the event loop, yet never block it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import bindparam, column, select, table, text

from herald.runtime.store.database import Database
from herald.runtime.store.direct import Prepared
from herald.runtime.store.wal import CHECKPOINT_EVERY


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'herald.db'}")
    async with db.transaction() as connection:
        await connection.execute(text("CREATE TABLE t (v INTEGER)"))
    yield db
    await db.aclose()


async def _values(db: Database) -> list[int]:
    async with db.read() as connection:
        return list((await connection.execute(text("SELECT v FROM t ORDER BY v"))).scalars())


async def test_a_write_waits_off_the_loop_for_another_process_lock(
    database: Database, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "herald.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def write() -> None:
        async with database.transaction() as connection:
            await connection.execute(text("INSERT INTO t VALUES (1)"))

    ticker = asyncio.create_task(tick())
    writer = asyncio.create_task(write())
    await asyncio.sleep(0.5)
    assert not writer.done()  # it waits for the lock...
    assert ticks >= 10  # ...and the event loop goes on meanwhile
    other.execute("INSERT INTO t VALUES (0)")
    other.execute("COMMIT")
    await asyncio.wait_for(writer, 10)
    ticker.cancel()
    other.close()
    assert await _values(database) == [0, 1]


async def test_rolled_back_writes_leave_nothing_and_the_connection_is_reusable(
    database: Database,
) -> None:
    with pytest.raises(RuntimeError):
        async with database.transaction() as connection:
            await connection.execute(text("INSERT INTO t VALUES (1)"))
            raise RuntimeError("refused")
    async with database.transaction() as connection:
        await connection.execute(text("INSERT INTO t VALUES (2)"))
    assert await _values(database) == [2]


async def test_reads_see_commits_and_every_pooled_connection_ends_its_transactions(
    database: Database,
) -> None:
    async def write_then_read(value: int) -> list[int]:
        async with database.transaction() as connection:
            await connection.execute(text("INSERT INTO t VALUES (:v)"), {"v": value})
        return await _values(database)

    seen = await asyncio.gather(*(write_then_read(v) for v in range(40)))
    assert all(v in s for v, s in enumerate(seen))
    # No connection was returned to the pool inside a transaction: another process can write.
    other = sqlite3.connect(database.url.removeprefix("sqlite+aiosqlite:///"), timeout=0)
    other.execute("INSERT INTO t VALUES (100)")
    other.commit()
    other.close()
    assert (await _values(database))[-1] == 100


async def test_the_wal_is_checkpointed_off_the_loop_not_on_commit(
    database: Database, tmp_path: Path
) -> None:
    assert database._checkpointer is not None
    checkpointer = database._checkpointer
    async with database.read() as connection:  # commits never checkpoint on the event loop
        assert (await connection.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar() == 0

    async def write_batch(first: int) -> None:
        for value in range(first, first + CHECKPOINT_EVERY):
            async with database.transaction() as connection:
                await connection.execute(text("INSERT INTO t VALUES (:v)"), {"v": value})
        for _ in range(100):  # the background checkpoint the batch started
            if checkpointer.checkpoints * CHECKPOINT_EVERY >= first + CHECKPOINT_EVERY:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("no checkpoint after a batch of commits")

    def wal_frames() -> int:
        with sqlite3.connect(tmp_path / "herald.db") as other:
            busy, frames, done = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and frames == done  # everything was checkpointed already
        return int(frames)

    await write_batch(0)
    one_batch = wal_frames()
    await write_batch(CHECKPOINT_EVERY)
    # The first writer after a checkpoint starts the WAL over: it holds one batch, not two.
    assert one_batch > 0 and wal_frames() <= one_batch * 1.2


async def test_every_write_runs_on_one_connection_that_keeps_its_page_cache(
    database: Database,
) -> None:
    """Writes taking turns over the pool re-read every page they touch from the WAL."""
    writers: set[int] = set()
    for value in range(20):
        async with database.transaction() as connection:
            raw = await connection.get_raw_connection()
            writers.add(id(raw.driver_connection))
            await connection.execute(text("INSERT INTO t VALUES (:v)"), {"v": value})
        # Concurrent reads fill the pool with connections; each sees every commit.
        seen = await asyncio.gather(*(_values(database) for _ in range(4)))
        assert seen == [list(range(value + 1))] * 4
    assert len(writers) == 1
    async with database.transaction() as connection:
        size = (await connection.execute(text("PRAGMA cache_size"))).scalar_one()
    assert size < -2000  # KiB: more than SQLite's default of 2 MiB


_READ_T = Prepared(
    select(column("v")).select_from(table("t")).where(column("v") > bindparam("above")).limit(10)
)


async def _read_rows(db: Database, above: int = -1) -> list[int]:
    return [int(row[0]) for row in await db.read_rows(_READ_T, {"above": above})]


async def test_small_reads_run_on_the_loop_and_see_only_committed_rows(
    database: Database,
) -> None:
    reader = database._loop_reader
    assert reader is not None
    async with database.transaction() as connection:
        await connection.execute(text("INSERT INTO t VALUES (1)"))
        assert await _read_rows(database) == []  # the open transaction is not seen
    assert await _read_rows(database) == [1]
    assert await _read_rows(database, above=1) == []
    assert reader.statements == 3  # none went through the pool


async def test_a_small_read_that_cannot_run_on_the_loop_goes_through_the_pool(
    database: Database, tmp_path: Path
) -> None:
    reader = database._loop_reader
    assert reader is not None
    async with database.transaction() as connection:
        await connection.execute(text("INSERT INTO t VALUES (1)"))
    reader.close()
    reader.path = str(tmp_path / "missing.db")  # fails to open: never created here
    assert await _read_rows(database) == [1]
    assert not (tmp_path / "missing.db").exists()
    reader.path = str(tmp_path / "herald.db")
    assert await _read_rows(database) == [1]
    assert reader.statements == 1  # the read that failed to open went through the pool
    # The connection belongs to this thread's event loop: from another thread, no read.
    assert await asyncio.to_thread(reader.rows, "SELECT v FROM t", []) is None
    assert await _read_rows(database) == [1]


async def test_a_transaction_cancelled_midway_leaves_nothing_and_the_writer_goes_on(
    database: Database,
) -> None:
    inside = asyncio.Event()

    async def stuck() -> None:
        async with database.transaction() as connection:
            await connection.execute(text("INSERT INTO t VALUES (1)"))
            inside.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(stuck())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with database.transaction() as connection:
        await connection.execute(text("INSERT INTO t VALUES (2)"))
    async with database.transaction() as connection:  # the kept connection, between two
        await connection.execute(text("INSERT INTO t VALUES (3)"))
    # No transaction was left open on the writer's connection: another process can write.
    other = sqlite3.connect(database.url.removeprefix("sqlite+aiosqlite:///"), timeout=0)
    other.execute("INSERT INTO t VALUES (4)")
    other.commit()
    other.close()
    assert await _values(database) == [2, 3, 4]
