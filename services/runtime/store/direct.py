"""Statements built once, run straight through sqlite3 inside SQLite write transactions.

Inside a write transaction Herald's SQLite adapter already runs each statement on the event loop
(see sqlite_driver.py). What remained per statement was SQLAlchemy's own work: an execution
context, parameter processing, a result object and an event dispatch, more CPU under load than
SQLite's work itself (see docs/performance.md). The statements of the hot path (a Task write, an
event's numbering, delivery progress) are therefore `Prepared` once at import: on SQLite, inside a
write transaction, each is compiled once per set of parameter names and run on the sqlite3
connection itself; anywhere else (PostgreSQL, reads) SQLAlchemy runs it as usual. Errors are
raised as the same SQLAlchemy exceptions either way.

Only for statements whose parameters and results are plain values (text, integers, bytes,
booleans): no type processing happens on the direct path, so rows come back as the driver's
tuples, booleans as 0/1.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from herald.runtime.store.sqlite_driver import OneTripConnection

Params = Mapping[str, Any]
Rows = Sequence[Sequence[Any]]

# SQL text, the names of its positional parameters, and the values of parameters bound in the
# statement itself.
_Compiled = tuple[str, tuple[str, ...], dict[str, Any]]


class Prepared:
    """A statement built once, with its SQLite compilations per set of parameter names."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._sqlite: dict[tuple[str, ...], _Compiled] = {}

    def sqlite(self, connection: AsyncConnection, names: tuple[str, ...]) -> _Compiled:
        """The statement compiled for SQLite with these parameter names."""
        found = self._sqlite.get(names)
        if found is not None:
            return found
        assert isinstance(self.statement, ClauseElement)
        compiled = self.statement.compile(dialect=connection.dialect, column_keys=list(names))
        assert isinstance(compiled, SQLCompiler)
        positions = tuple(compiled.positiontup or ())
        made = self._sqlite[names] = (compiled.string, positions, dict(compiled.params))
        return made


def _writing(connection: AsyncConnection) -> OneTripConnection | None:
    """The SQLite adapter of a connection inside a write transaction, else None."""
    adapter = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
    if isinstance(adapter, OneTripConnection) and adapter.writing:
        return adapter
    return None


def _raise(sql: str, error: sqlite3.Error) -> NoReturn:
    raise DBAPIError.instance(sql, None, error, sqlite3.Error) from error


async def _execute(
    connection: AsyncConnection, prepared: Prepared, many: Sequence[Params], *, fetch: bool
) -> Rows:
    """Run a statement once per set of parameters (all with the same names); with one set,
    its rows when `fetch`."""
    adapter = _writing(connection)
    if adapter is None:
        arguments = dict(many[0]) if len(many) == 1 else [dict(p) for p in many]
        result = await connection.execute(prepared.statement, arguments)
        return result.all() if fetch else ()
    sql, names, bound = prepared.sqlite(connection, tuple(many[0]))
    adapter.dbapi.direct_statements += 1
    values = [[p[name] if name in p else bound[name] for name in names] for p in many]
    sqlite = adapter.sqlite
    try:
        cursor = (
            sqlite.execute(sql, values[0]) if len(values) == 1 else sqlite.executemany(sql, values)
        )
    except sqlite3.Error as error:
        _raise(sql, error)
    return cursor.fetchall() if fetch else ()


async def rows(connection: AsyncConnection, prepared: Prepared, params: Params) -> Rows:
    """Run a statement; its rows (by position)."""
    return await _execute(connection, prepared, (params,), fetch=True)


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
