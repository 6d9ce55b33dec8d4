"""The database handle: engine per URL, migrations, transactions alike on both engines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from herald.runtime.store import direct, pg_driver
from herald.runtime.store.direct import Params, Prepared, Rows
from herald.runtime.store.schema_version import is_newest
from herald.runtime.store.sqlite_driver import BUSY_TIMEOUT_MS, LoopReader, OneTripDbapi
from herald.runtime.store.wal import NO_AUTOCHECKPOINT, Checkpointer

MIGRATIONS = Path(__file__).with_name("migrations")
# Connections (and so threads) of an SQLite database for reads; writes have one of their own.
SQLITE_CONNECTIONS = 16
# Pages the writer's connection keeps in memory (KiB, as SQLite's negative cache_size).
WRITER_CACHE_KIB = 32_768


def async_url(url: str) -> str:
    """Map sqlite:// and postgresql:// URLs to their asyncio drivers."""
    parsed = make_url(url)
    driver = {
        "sqlite": "sqlite+aiosqlite",
        "postgresql": "postgresql+asyncpg",
        "postgres": "postgresql+asyncpg",
    }
    backend = parsed.drivername.split("+", 1)[0]
    if backend not in driver:
        raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")
    return parsed.set(drivername=driver[backend]).render_as_string(hide_password=False)


class Database:
    """One engine, and the rules for using it (SQLite serialises writers in-process)."""

    def __init__(self, url: str, *, pool_size: int = 20) -> None:
        self.url = async_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        self._sqlite_module: OneTripDbapi | None = None
        self._pg_counts = pg_driver.Counts()
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT_MS / 1000}
            kwargs["module"] = self._sqlite_module = OneTripDbapi()
            # A fixed set of connections: each is a thread with its own SQLite cache, and
            # closing overflow connections on return started a new one for every burst.
            kwargs["pool_size"] = SQLITE_CONNECTIONS
            kwargs["max_overflow"] = 0
            kwargs["pool_timeout"] = 60
        else:
            # A fixed set too (20: the ceiling of the 10 + 10 overflow there used to be): an
            # overflow connection closed on return made a new one for every burst, each
            # preparing its statements again.
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = 0
            # The most recently returned connection first: a process that needs a few
            # connections at a time keeps reusing them, never idle long enough to be pinged
            # (pg_driver.ping_when_idle). In turns over the whole pool (FIFO), a dispatcher's
            # few checkouts a second found each connection idle for seconds and paid a ping
            # round trip on most of them.
            kwargs["pool_use_lifo"] = True
            kwargs["connect_args"] = {
                "connection_class": pg_driver.connection_class(self._pg_counts)
            }
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if not self.is_sqlite:
            pg_driver.ping_when_idle(self.engine)
        self._writer = self.engine
        # SQLite allows one writer; taking the lock here avoids "database is locked" retries.
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self._kept: AsyncConnection | None = None
        """SQLite: the writer's connection, kept between transactions (see transaction)."""
        self._checkpointer: Checkpointer | None = None
        self._loop_reader: LoopReader | None = None
        if self.is_sqlite:
            # Every write on one connection: an SQLite connection drops its page cache whenever
            # another connection wrote since its last transaction, so writes taking turns over
            # the pool read each page they touch back from the WAL (23 reads per Task, measured).
            # Only the writer's own commits change the database under it, and its cache stays.
            self._writer = create_async_engine(self.url, **{**kwargs, "pool_size": 1})
            _sqlite_pragmas(self.engine, cache_kib=None)
            _sqlite_pragmas(self._writer, cache_kib=WRITER_CACHE_KIB)
            self._checkpointer = Checkpointer(Path(make_url(self.url).database or ":memory:"))
            self._loop_reader = _loop_reader(self.url)
        self.executed = 0
        """SQL statements SQLAlchemy sent."""
        self.transactions = 0
        """Transactions ended (committed or rolled back), for herald_database_transactions_total."""
        for engine in {self.engine, self._writer}:
            _count_work(self, engine)

    @property
    def statements(self) -> int:
        """SQL statements sent (BEGIN excluded), for herald_database_statements_total."""
        direct = self._sqlite_module.direct_statements if self._sqlite_module else 0
        direct += self._loop_reader.statements if self._loop_reader else 0
        return self.executed + direct + self._pg_counts.direct_statements

    @property
    def round_trips(self) -> int:
        """Requests sent to PostgreSQL that waited for its answer (0 on SQLite), for
        herald_database_round_trips_total."""
        return self._pg_counts.round_trips

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A connection inside a transaction, committed on success and rolled back on error."""
        if self._write_lock is None:
            async with self._writer.begin() as connection:
                yield connection
            return
        # SQLite: the writer's one connection stays checked out between transactions (the
        # write lock gives it to one at a time); a checkout and check-in per transaction cost
        # as much CPU as the transaction's BEGIN and COMMIT. After any error it goes back to
        # the pool (reset, or replaced when invalidated) and the next transaction takes it anew.
        async with self._write_lock:
            if self._kept is None:
                self._kept = await self._writer.connect()
            connection = self._kept
            try:
                async with connection.begin():
                    yield connection
            except BaseException:
                self._kept = None
                await connection.close()
                raise
        if self._checkpointer is not None:
            self._checkpointer.committed()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads."""
        async with self.engine.connect() as connection:
            if self.is_sqlite:
                await connection.execution_options(herald_read_only=True)
            else:
                # Each statement in a transaction of its own, without BEGIN and ROLLBACK round
                # trips around the reads: at READ COMMITTED, PostgreSQL's default, every
                # statement of a transaction takes a snapshot of its own anyway.
                await connection.execution_options(
                    herald_read_only=True, isolation_level="AUTOCOMMIT"
                )
            yield connection

    async def read_rows(self, prepared: Prepared, params: Params) -> Rows:
        """Run a small read, bounded by the statement itself (a key, a LIMIT), of plain values
        (see store/direct.py); its rows by position.

        On an SQLite file it runs on the event loop on a connection of its own (see
        sqlite_driver.LoopReader), and through `read()` when it cannot run there; on
        PostgreSQL through `read()`, on the driver."""
        if self._loop_reader is not None:
            sql, values = prepared.values(self.engine.dialect, (params,))
            found = self._loop_reader.rows(sql, values[0])
            if found is not None:
                return found
        async with self.read() as connection:
            return await direct.rows(connection, prepared, params)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncConnection]:
        """A connection whose reads all see one snapshot of the database.

        For a read of several statements that must agree (a search's total and its page).
        `read()` gives each statement a snapshot of its own on PostgreSQL; here BEGIN
        ISOLATION LEVEL REPEATABLE READ READ ONLY and the ROLLBACK ending it cost two round
        trips more. SQLite's read transaction holds one snapshot already."""
        if self.is_sqlite:
            async with self.read() as connection:
                yield connection
            return
        async with self.engine.connect() as connection:
            await connection.execution_options(
                herald_read_only=True,
                isolation_level="REPEATABLE READ",
                postgresql_readonly=True,
            )
            yield connection

    async def migrate(self, revision: str = "head") -> None:
        """Bring the schema to the newest migration (or to an older `revision`, for tests)."""
        async with self.transaction() as connection:
            if not self.is_sqlite:
                # Services starting together must not migrate at the same time.
                await connection.execute(text("SELECT pg_advisory_xact_lock(7243)"))
            if revision == "head" and await connection.run_sync(is_newest):
                return
            await connection.run_sync(_upgrade, revision)

    async def ping(self) -> bool:
        """Whether the database answers."""
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False
        return True

    async def aclose(self) -> None:
        """Close every pooled connection (SQLite: after a last checkpoint)."""
        if self._loop_reader is not None:
            # First: the last connection to close checkpoints, which must not be this one.
            self._loop_reader.close()
        if self._kept is not None:
            kept, self._kept = self._kept, None
            await kept.close()
        if self._checkpointer is not None:
            await self._checkpointer.aclose()
        await self.engine.dispose()
        await self._writer.dispose()


def _loop_reader(url: str) -> LoopReader | None:
    """A LoopReader for a database file named plainly in the URL (not in memory, no options)."""
    parsed = make_url(url)
    path = parsed.database
    if not path or path == ":memory:" or path.startswith("file:") or parsed.query:
        return None
    return LoopReader(path)


def _upgrade(connection: Connection, revision: str) -> None:
    # Alembic is loaded only when there is something to migrate (store.schema_version).
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _count_work(database: Database, async_engine: AsyncEngine) -> None:
    engine = async_engine.sync_engine

    @event.listens_for(engine, "before_cursor_execute")
    def _statement(*_args: Any) -> None:
        database.executed += 1  # SQLite's BEGIN is issued by its adapter, not counted

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _ended(_connection: Connection) -> None:
        database.transactions += 1


def _sqlite_pragmas(engine: AsyncEngine, *, cache_kib: int | None) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, open transactions, so BEGIN IMMEDIATE below takes effect.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(NO_AUTOCHECKPOINT)
        if cache_kib is not None:
            cursor.execute(f"PRAGMA cache_size = -{cache_kib}")
            # Sub-journals (a statement's journal inside a transaction; savepoints, which the
            # writes of a group once ran in) copy each page changed into a temporary file past
            # 64 KiB: a write() per page, a tenth of a Task's CPU back then. In memory instead
            # (a migration's large statement holds its statement journal in memory too).
            cursor.execute("PRAGMA temp_store = MEMORY")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        read_only = connection.get_execution_options().get("herald_read_only", False)
        connection.connection.dbapi_connection.begin(write=not read_only)  # type: ignore[union-attr]
