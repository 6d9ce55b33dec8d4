"""SQLite through aiosqlite with far fewer trips to the connection's thread.

SQLAlchemy's aiosqlite adapter makes a separate trip to the connection's thread to create a
cursor, to execute, to fetch the rows and to close the cursor. Each trip is a queue put, a wake-up
of the connection's thread, a `call_soon_threadsafe` back to the event loop and two GIL hand-offs;
profiled under load (py-spy, GIL samples) these trips were a third of the embedded process's
Python time, and they cost more still in context switches on a busy machine. This adapter:

- runs a statement outside a write transaction — cursor, execute, fetch all rows, close — as one
  function on the connection's thread (one trip instead of four);
- runs the statements of a write transaction (after `BEGIN IMMEDIATE` succeeded) directly on
  the event loop's thread: the database's write lock is then held by this connection, so no
  statement can wait for a lock, and each is a few microseconds of SQLite work. `BEGIN
  IMMEDIATE` itself (which may wait for another process's write lock), `COMMIT` (which may
  checkpoint the WAL) and every read still go through the connection's thread, so the event
  loop is never blocked by a lock or a long query.

The connection is opened with `check_same_thread=False`; its thread and the event loop never use
it at the same time (SQLAlchemy checks a connection out to one task, and every trip is awaited
before the next statement). It is plugged in as the engine's DBAPI module
(`create_async_engine(..., module=...)`, a documented parameter) and otherwise is SQLAlchemy's
own aiosqlite dialect and connection; the cursor keeps the interface of that dialect's cursor.
Server-side cursors (never used by Herald) stay SQLAlchemy's.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util.concurrency import await_

BUSY_TIMEOUT_MS = 30_000
"""How long a connection waits for another process's write lock."""

# description, rows, rowcount, lastrowid
_Outcome = tuple[Any, list[Any], int, int | None]


def _run(connection: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Outcome:
    """One statement, start to finish, on the connection's own thread."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


async def _done(outcome: _Outcome) -> _Outcome:
    return outcome


def _begin_at_once(connection: sqlite3.Connection) -> bool:
    """Take the write lock on the event loop if no other process holds it (no waiting).

    The process's own writers take turns before they get here (Database's write lock), so the
    lock is almost always free; when another process holds it, False, and BEGIN IMMEDIATE goes
    to the connection's thread, to wait there up to the connection's busy timeout.
    """
    connection.execute("PRAGMA busy_timeout = 0")
    try:
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        if connection.in_transaction or "locked" not in str(error):
            raise
        return False
    finally:
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return True


class OneTripCursor:
    """A buffered DBAPI cursor whose statements each take one trip to the connection's thread."""

    server_side = False

    def __init__(self, adapt_connection: OneTripConnection) -> None:
        self._adapt_connection = adapt_connection
        self._connection: aiosqlite.Connection = adapt_connection._connection  # type: ignore[assignment]
        self._rows: deque[Any] = deque()
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    def execute(self, operation: str, parameters: Any = None) -> None:
        """Run one statement; its rows are buffered."""
        self._trip(operation, parameters, many=False)

    def executemany(self, operation: str, seq_of_parameters: Sequence[Any]) -> None:
        """Run one statement for each set of parameters."""
        self._trip(operation, seq_of_parameters, many=True)

    def _trip(self, operation: str, parameters: Any, *, many: bool) -> None:
        connection = self._adapt_connection
        try:
            if connection.writing:
                # SQLAlchemy's async API insists on an await per statement: a coroutine that
                # is already done costs two greenlet switches, not a trip.
                outcome = await_(_done(_run(connection.sqlite, operation, parameters, many)))
            else:
                outcome = await_(self._execute_async(operation, parameters, many))
        except Exception as error:  # noqa: BLE001 - mapped to the DBAPI's errors, as SQLAlchemy does
            connection._handle_exception(error)
        self.description, rows, self.rowcount, self.lastrowid = outcome
        self._rows = deque(rows)

    async def _execute_async(self, operation: str, parameters: Any, many: bool) -> _Outcome:
        async with self._adapt_connection._execute_mutex:
            outcome: _Outcome = await self._connection._execute(  # type: ignore[no-untyped-call]
                _run, self._connection._conn, operation, parameters, many
            )
        return outcome

    async def _async_soft_close(self) -> None:
        """Nothing is open on the connection's thread between statements."""

    def setinputsizes(self, *inputsizes: Any) -> None:
        """SQLite has no input sizes."""

    def close(self) -> None:
        """Drop the buffered rows."""
        self._rows.clear()

    def __enter__(self) -> OneTripCursor:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Any]:
        while self._rows:
            yield self._rows.popleft()

    def fetchone(self) -> Any:
        """The next buffered row, or None."""
        return self._rows.popleft() if self._rows else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        """Up to `size` buffered rows."""
        rows = self._rows
        return [rows.popleft() for _ in range(min(size or self.arraysize, len(rows)))]

    def fetchall(self) -> list[Any]:
        """The remaining buffered rows."""
        rows = list(self._rows)
        self._rows.clear()
        return rows


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's aiosqlite connection adapter, with one-trip cursors."""

    __slots__ = ("writing",)
    _cursor_cls = OneTripCursor  # type: ignore[assignment]

    def __init__(self, dbapi: Any, connection: aiosqlite.Connection) -> None:
        super().__init__(dbapi, connection)  # type: ignore[arg-type]
        self.writing = False
        """Inside BEGIN IMMEDIATE ... COMMIT/ROLLBACK: statements run on the event loop."""

    @property
    def sqlite(self) -> sqlite3.Connection:
        """The sqlite3 connection (for the event loop's use only while `writing`)."""
        return self._connection._conn  # type: ignore[no-any-return]

    def begin(self, *, write: bool) -> None:
        """Open a transaction; a write takes the database's write lock (BEGIN IMMEDIATE).

        A deferred BEGIN takes no lock, so it runs on the event loop; so does BEGIN IMMEDIATE
        when no other process holds the lock, else it waits on the connection's thread.
        """
        sqlite = self.sqlite
        try:
            if not write:
                sqlite.execute("BEGIN")
            elif not _begin_at_once(sqlite):
                await_(self._begin_waiting())
        except Exception as error:  # noqa: BLE001 - mapped as SQLAlchemy does
            self._handle_exception(error)
        self.writing = write

    async def _begin_waiting(self) -> None:
        async with self._execute_mutex:
            await self._connection._execute(self.sqlite.execute, "BEGIN IMMEDIATE")

    def commit(self) -> None:
        """Commit on the event loop: the pages are appended to the WAL, which the connection
        never checkpoints on commit (see store/wal.py)."""
        self.writing = False
        self._end_here("COMMIT")

    def rollback(self) -> None:
        """Roll back on the event loop: nothing is written, pages are dropped from memory."""
        self.writing = False
        self._end_here("ROLLBACK")

    def _end_here(self, statement: str) -> None:
        sqlite = self._connection._connection
        if sqlite is None or not sqlite.in_transaction:
            return  # e.g. the pool's reset of a connection whose transaction has ended
        try:
            sqlite.execute(statement)
        except Exception as error:  # noqa: BLE001 - mapped as SQLAlchemy does
            self._handle_exception(error)


class OneTripDbapi(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module SQLAlchemy's aiosqlite dialect is given instead of its own."""

    def __init__(self) -> None:
        super().__init__(aiosqlite, sqlite3)
        self.direct_statements = 0
        """Statements run on sqlite3 directly, bypassing the cursor (see store/direct.py)."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        """Open an aiosqlite connection (its thread a daemon, as SQLAlchemy's adapter does)."""
        creator = kw.pop("async_creator_fn", None)
        # The event loop runs the statements of write transactions itself (see above).
        kw["check_same_thread"] = False
        connection = creator(*arg, **kw) if creator else aiosqlite.connect(*arg, **kw)
        if not creator:
            connection._thread.daemon = True
        return OneTripConnection(self, await_(connection))


class LoopReader:
    """A connection of the event loop's own, outside every pool, for small reads.

    A read through the pool costs a checkout, a trip to the connection's thread and back,
    SQLAlchemy's execution and result rows and the check-in: several times the SQLite work of a
    read of a few indexed rows (the event path reads the bus log and the event log after nearly
    every commit). Here such a read is one `execute` and `fetchall` on the event loop. That is
    safe because of how it is used: only statements bounded by their own text (a key, a LIMIT),
    in autocommit mode (each its own snapshot of committed data; a reader never waits for a
    writer in WAL mode), with no busy timeout (a lock it would have to wait for, e.g. a database
    not in WAL mode, is an error), and a read that fails for any reason returns None so that
    the caller reads through the pool as before.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.statements = 0
        """Statements run here (for herald_database_statements_total)."""
        self._connection: sqlite3.Connection | None = None
        self._thread: int | None = None

    def rows(self, sql: str, values: Sequence[Any]) -> list[Any] | None:
        """The statement's rows (sqlite3's tuples), or None when it could not run here."""
        if self._thread is not None and self._thread != threading.get_ident():
            return None  # the connection belongs to another thread's event loop
        try:
            connection = self._connection or self._open()
            self.statements += 1
            return connection.execute(sql, values).fetchall()
        except sqlite3.Error:
            self.close()  # opened again at the next read
            return None

    def _open(self) -> sqlite3.Connection:
        # check_same_thread (the default): a use from another thread is an error, not a race.
        # mode=rw: a missing database file is an error, never created here.
        connection = sqlite3.connect(
            f"file:{quote(self.path)}?mode=rw", timeout=0, isolation_level=None, uri=True
        )
        try:
            connection.execute("PRAGMA query_only = ON")
        except sqlite3.Error:
            connection.close()
            raise
        self._connection, self._thread = connection, threading.get_ident()
        return connection

    def close(self) -> None:
        """Close the connection (a later read opens it again)."""
        connection, self._connection, self._thread = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(sqlite3.Error):
                connection.close()
