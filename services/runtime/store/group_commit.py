"""Group commit: concurrent resource writes share one SQLite transaction, each in a savepoint.

SQLite has one writer, so concurrent writes take turns anyway; what each turn cost on its own was
the transaction around it: a connection checked out of the pool, BEGIN IMMEDIATE, COMMIT (its
pages appended to the WAL, the same index and table pages again for every write) and the
connection's reset. Here the writes that arrive while one transaction is being filled join it:

- a leader task opens one write transaction and hands it to each waiting writer in turn, inside
  `SAVEPOINT`; a writer whose work fails is rolled back to its savepoint (nothing of it stays,
  nothing of the others moves) and gets its error at once;
- after the last writer of the group (or `GROUP_LIMIT` of them) the leader commits, and only then
  does each writer's `transaction()` return: a caller answers 201 only after its commit. When the
  commit fails, every writer of the group gets the error and nothing of any of them is stored.

A group takes the writers that are waiting when the leader gets the event loop: it adds no delay
of its own, so a lone write commits as before. The writers of a group commit together, in the
order they ran, each seeing the ones before (the write clock stays monotonic). PostgreSQL has
concurrent writers and gets one transaction per write, as before.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.runtime.store import direct
from herald.runtime.store.database import Database
from herald.runtime.store.direct import Prepared

GROUP_LIMIT = 64
"""Most writes in one transaction (it holds the database's write lock meanwhile)."""

_SAVEPOINT = Prepared(text("SAVEPOINT herald_write"))
_RELEASE = Prepared(text("RELEASE SAVEPOINT herald_write"))
_ROLLBACK = Prepared(text("ROLLBACK TO SAVEPOINT herald_write"))


class _Writer:
    """One write waiting for, or working in, its group's transaction."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.started: asyncio.Future[AsyncConnection] = loop.create_future()
        self.finished: asyncio.Future[BaseException | None] = loop.create_future()
        self.committed: asyncio.Future[None] = loop.create_future()

    def finish(self, error: BaseException | None) -> None:
        """The writer's work is over (with its error): the leader may go on."""
        if not self.finished.done():
            self.finished.set_result(error)

    def fail(self, error: BaseException) -> None:
        """The group's transaction did not commit."""
        if not self.committed.done():
            self.committed.set_exception(error)
        if not self.started.done():
            self.started.set_exception(error)


class GroupCommit:
    """Write transactions of one database, grouped on SQLite (see the module's docstring)."""

    def __init__(self, database: Database, observe: Callable[[int], None] | None = None) -> None:
        self._database = database
        self._observe = observe
        self._waiting: deque[_Writer] = deque()
        self._leader: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A connection inside a write transaction; returns once that transaction committed."""
        if not self._database.is_sqlite:
            async with self._database.transaction() as connection:
                yield connection
            return
        writer = _Writer(asyncio.get_running_loop())
        self._waiting.append(writer)
        if self._leader is None:
            self._leader = asyncio.create_task(self._lead())
        try:
            connection = await writer.started
            yield connection
        except BaseException as error:
            writer.finish(error)
            # Never a 201 for this write; the writer's error has the last word. Retrieved so
            # that a failed group's error is not reported as never retrieved.
            if writer.committed.done() and not writer.committed.cancelled():
                writer.committed.exception()
            raise
        writer.finish(None)
        await writer.committed

    async def _lead(self) -> None:
        """Run groups until no writer waits."""
        try:
            while self._waiting:
                await self._group()
        finally:
            self._leader = None
            if self._waiting:  # cancelled (shutdown): nobody will run these
                error = asyncio.CancelledError("the database's write groups stopped")
                while self._waiting:
                    self._waiting.popleft().fail(error)

    async def _group(self) -> None:
        """One transaction: the waiting writers in turn, each in a savepoint, then COMMIT."""
        done: list[_Writer] = []
        writer: _Writer | None = None
        try:
            async with self._database.transaction() as connection:
                while self._waiting and len(done) < GROUP_LIMIT:
                    writer = self._waiting.popleft()
                    if writer.finished.done():  # gone (cancelled) before its turn
                        continue
                    await direct.run(connection, _SAVEPOINT, {})
                    writer.started.set_result(connection)
                    error = await writer.finished
                    if error is None:
                        await direct.run(connection, _RELEASE, {})
                        done.append(writer)
                    else:
                        await direct.run(connection, _ROLLBACK, {})
                        await direct.run(connection, _RELEASE, {})
                    writer = None
        except BaseException as error:
            failed = done if writer is None else [*done, writer]
            if not failed:
                # The transaction could not begin (the database locked by another process past
                # the busy timeout, a disk error): every waiting write gets the error, as each
                # would have on its own, instead of waiting for a retry that may never succeed.
                failed = list(self._waiting)
                self._waiting.clear()
            for each in failed:
                each.fail(error)
            if not isinstance(error, Exception):
                raise
            return
        for writer in done:
            writer.committed.set_result(None)
        if self._observe is not None and done:
            self._observe(len(done))
