"""Statements built once, run straight on the driver inside transactions.

Inside a write transaction Herald's SQLite adapter already runs each statement on the event loop
(see sqlite_driver.py). What remained per statement was SQLAlchemy's own work: an execution
context, parameter processing, a result object and an event dispatch, more CPU under load than
SQLite's work itself (see docs/performance.md); on PostgreSQL the same, plus its asyncpg adapter's
own prepared-statement bookkeeping. The statements of the hot path (a Task write, an event's
numbering, delivery progress) are therefore `Prepared` once at import and compiled once per
dialect and set of parameter names; they run on the driver's connection itself: on SQLite inside
a write transaction (sqlite3), on PostgreSQL inside any transaction SQLAlchemy has begun (asyncpg,
whose statement cache prepares each once per connection), and in Database.read's autocommit
connections. Anywhere else (SQLite reads) SQLAlchemy runs them as usual. Errors are raised as
the same SQLAlchemy exceptions either way (on PostgreSQL through SQLAlchemy's own handling, so
that a lost connection is invalidated as usual).

Only for statements whose parameters and results are plain values (text, integers, bytes,
booleans): no type processing happens on the direct path, so rows come back as the driver's
rows (tuples; asyncpg Records), booleans as 0/1 on SQLite.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any, NoReturn

from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from herald.runtime.store.pg_driver import CountedConnection
from herald.runtime.store.sqlite_driver import OneTripConnection

Params = Mapping[str, Any]
Rows = Sequence[Sequence[Any]]

# SQL text, the names of its positional parameters, and the values of parameters bound in the
# statement itself.
_Compiled = tuple[str, tuple[str, ...], dict[str, Any]]
_Getter = Callable[[Params], Sequence[Any]]


def _getter(names: tuple[str, ...], bound: dict[str, Any], given: frozenset[str]) -> _Getter:
    """What takes a set of parameters (naming `given`) to the statement's positional values:
    an itemgetter when they name them all (the hot path's statements, several per write), else
    a lookup that falls back on the values bound in the statement."""
    if not given.issuperset(names):

        def lookup(params: Params) -> list[Any]:
            return [params[name] if name in params else bound[name] for name in names]

        return lookup
    if not names:
        return lambda _params: ()
    if len(names) == 1:
        only = names[0]
        return lambda params: (params[only],)
    return itemgetter(*names)


class Prepared:
    """A statement built once, with its compilations per dialect and set of parameter names."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, tuple[str, ...]], _Compiled] = {}
        self._getters: dict[tuple[str, tuple[str, ...]], tuple[str, _Getter]] = {}

    def values(self, dialect: Dialect, many: Sequence[Params]) -> tuple[str, list[Sequence[Any]]]:
        """The SQL text for the dialect, and the values of each set of parameters in its order."""
        key = (dialect.name, tuple(many[0]))
        found = self._getters.get(key)
        if found is None:
            sql, names, bound = self.compiled(dialect, key[1])
            found = self._getters[key] = (sql, _getter(names, bound, frozenset(key[1])))
        sql, get = found
        return sql, [get(p) for p in many]

    def compiled(self, dialect: Dialect, names: tuple[str, ...]) -> _Compiled:
        """The statement compiled for the dialect with these parameter names."""
        key = (dialect.name, names)
        found = self._compiled.get(key)
        if found is not None:
            return found
        assert isinstance(self.statement, ClauseElement)
        compiled = self.statement.compile(dialect=dialect, column_keys=list(names))
        assert isinstance(compiled, SQLCompiler)
        positions = tuple(compiled.positiontup or ())
        made = self._compiled[key] = (compiled.string, positions, dict(compiled.params))
        return made


def writing_sqlite(connection: AsyncConnection) -> OneTripConnection | None:
    """The SQLite adapter of a connection inside a write transaction, else None (its statements
    run on the event loop, see sqlite_driver.py)."""
    adapter = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
    if isinstance(adapter, OneTripConnection) and adapter.writing:
        return adapter
    return None


def _asyncpg(connection: AsyncConnection) -> AsyncAdapt_asyncpg_connection | None:
    """The asyncpg adapter of a connection inside a begun transaction or in autocommit mode
    (Database.read), else None."""
    adapter = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
    if not isinstance(adapter, AsyncAdapt_asyncpg_connection):
        return None
    return adapter if adapter.autocommit or connection.in_transaction() else None


def _raise(sql: str, error: sqlite3.Error) -> NoReturn:
    raise DBAPIError.instance(sql, None, error, sqlite3.Error) from error


def _values(
    prepared: Prepared, connection: AsyncConnection, many: Sequence[Params]
) -> tuple[str, list[Sequence[Any]]]:
    """The SQL text, and the values of each set of parameters in its order."""
    return prepared.values(connection.dialect, many)


async def _on_asyncpg(
    connection: AsyncConnection,
    adapter: AsyncAdapt_asyncpg_connection,
    prepared: Prepared,
    many: Sequence[Params],
    fetch: bool,
) -> Rows:
    sql, values = _values(prepared, connection, many)
    driver: Any = adapter._connection
    if isinstance(driver, CountedConnection):
        driver.herald_counts.direct_statements += 1
    try:
        if adapter._transaction is None:
            # SQLAlchemy's adapter sends BEGIN before the first statement it runs; this one
            # may be the first (in autocommit mode it sends nothing).
            await adapter._start_transaction()  # type: ignore[no-untyped-call]
        if len(values) > 1:
            await driver.executemany(sql, values)
        elif fetch:
            return await driver.fetch(sql, *values[0])  # type: ignore[no-any-return]
        else:
            await driver.execute(sql, *values[0])
    except Exception as error:  # noqa: BLE001 - handled (and raised) as SQLAlchemy does
        await _handle(connection, adapter, sql, error)
    return ()


async def _handle(
    connection: AsyncConnection, adapter: AsyncAdapt_asyncpg_connection, sql: str, error: Exception
) -> NoReturn:
    """Raise an asyncpg error as SQLAlchemy would have: the same exception classes, and a lost
    connection invalidated (with the pool's older connections)."""
    try:
        adapter._handle_exception(error)
    except Exception as translated:  # noqa: BLE001 - the DBAPI error, handed on below
        dbapi_error = translated

    def handle(sync: Connection) -> NoReturn:
        sync._handle_dbapi_exception(dbapi_error, sql, None, None, None)

    await connection.run_sync(handle)
    raise AssertionError("unreachable")  # pragma: no cover


async def _execute(
    connection: AsyncConnection, prepared: Prepared, many: Sequence[Params], *, fetch: bool
) -> Rows:
    """Run a statement once per set of parameters (all with the same names); with one set,
    its rows when `fetch`."""
    adapter = writing_sqlite(connection)
    if adapter is None:
        postgres = _asyncpg(connection)
        if postgres is not None:
            return await _on_asyncpg(connection, postgres, prepared, many, fetch)
        arguments = dict(many[0]) if len(many) == 1 else [dict(p) for p in many]
        result = await connection.execute(prepared.statement, arguments)
        return result.all() if fetch else ()
    sql, values = _values(prepared, connection, many)
    adapter.dbapi.direct_statements += 1
    sqlite = adapter.sqlite
    try:
        cursor = (
            sqlite.execute(sql, values[0]) if len(values) == 1 else sqlite.executemany(sql, values)
        )
    except sqlite3.Error as error:
        _raise(sql, error)
    return cursor.fetchall() if fetch else ()


Batch = Sequence[tuple[str, Sequence[Sequence[Any]]]]
"""Statements for sqlite3 itself: each SQL text (positional `?` parameters) with its rows of
values, run once per row."""


def run_batch(adapter: OneTripConnection, batch: Batch) -> None:
    """Run statements straight on the writer's sqlite3 connection (see `writing_sqlite`).

    For a write of several statements whose SQL is SQLite's own: no Prepared lookup, compiled
    text or parameter dictionary per statement (a few microseconds each, several statements per
    Task write)."""
    adapter.dbapi.direct_statements += len(batch)
    sqlite = adapter.sqlite
    for sql, values in batch:
        try:
            if len(values) == 1:
                sqlite.execute(sql, values[0])
            else:
                sqlite.executemany(sql, values)
        except sqlite3.Error as error:
            _raise(sql, error)


def fetch(adapter: OneTripConnection, sql: str, values: Sequence[Any] | Params) -> Rows:
    """Run one statement straight on the writer's sqlite3 connection (see run_batch), its
    parameters by position or by name; its rows."""
    adapter.dbapi.direct_statements += 1
    try:
        return adapter.sqlite.execute(sql, values).fetchall()
    except sqlite3.Error as error:
        _raise(sql, error)


async def rows(connection: AsyncConnection, prepared: Prepared, params: Params) -> Rows:
    """Run a statement; its rows (by position)."""
    return await _execute(connection, prepared, (params,), fetch=True)


async def driver_rows(connection: AsyncConnection, prepared: Prepared, params: Params) -> Rows:
    """Run a read of many rows; on SQLite, outside a write transaction, the rows come as
    sqlite3's tuples from the connection's thread (SQLAlchemy's result rows cost as much again
    as SQLite's reading); elsewhere SQLAlchemy runs it."""
    adapter = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
    if not isinstance(adapter, OneTripConnection) or adapter.writing:
        return (await connection.execute(prepared.statement, dict(params))).all()
    sql, values = _values(prepared, connection, (params,))
    adapter.dbapi.direct_statements += 1
    async with adapter.driver_connection.execute(sql, values[0]) as cursor:
        found: Rows = await cursor.fetchall()
    return found


async def scalar(connection: AsyncConnection, prepared: Prepared, params: Params) -> Any:
    """Run a statement; the first column of its first row, or None."""
    found = await rows(connection, prepared, params)
    return found[0][0] if found else None


async def run(connection: AsyncConnection, prepared: Prepared, params: Params) -> None:
    """Run a statement that returns no rows."""
    await _execute(connection, prepared, (params,), fetch=False)


async def run_many(connection: AsyncConnection, prepared: Prepared, many: Sequence[Params]) -> None:
    """Run a statement once per set of parameters (all with the same names)."""
    if many:
        await _execute(connection, prepared, many, fetch=False)
