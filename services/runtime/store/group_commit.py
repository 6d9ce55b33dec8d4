"""Group commit: concurrent resource writes share one transaction and one COMMIT.

Writes of one resource type take turns anyway: SQLite has one writer, and on PostgreSQL every
write of a type holds the type's write lock until it commits (resources.begin_write). What each
turn cost on its own was the transaction around it: a connection checked out of the pool, BEGIN,
COMMIT (a WAL record and flush; on SQLite the same index and table pages appended again for
every write), the connection's reset, and on PostgreSQL two more round trips under the lock.
Here the writes that arrive while one transaction is being filled join it: a leader task opens
one write transaction and hands it to each waiting writer in turn; after the last writer of the
group (or `GROUP_LIMIT` of them) it commits, and only then does each writer's `run` return: a
caller answers 201 only after its own commit. When the commit fails, every writer of the group
gets the error and nothing of any of them is stored.

A writer whose work fails must leave nothing behind, and the others must not notice. The group
is rolled back, and every writer of it so far does its work again, alone in a transaction of its
own, the failed one included (its error may have depended on the others' uncommitted work); the
first writer of a group saw only committed data, so its error is its own and stands. Work is
therefore a function that may run twice, and the common case (no failure) costs nothing extra.
A savepoint per write would cost more on either engine: on PostgreSQL two round trips per write
(and a failed statement spoils the whole transaction anyway); on SQLite two statements per write
(SAVEPOINT and RELEASE, some 45 µs of CPU) and a copy of every page the write changes.

On SQLite a writer that fails without having changed a row (a refused write: a version conflict,
a guard's 403, found out before its first INSERT) leaves nothing to undo: it gets its error at
once and the group goes on, so a refusal costs nobody a redo. Work changes the database only by
INSERT, UPDATE and DELETE (counted by the connection's `total_changes`). On PostgreSQL writers
are grouped by resource type, so that a group holds one type's lock and groups of two processes
cannot deadlock on two types' locks.

A group takes the writers that are waiting when the leader gets the event loop: it adds no delay
of its own, so a lone write commits as before. The writers of a group commit together, in the
order they ran, each seeing the ones before (the write clock stays monotonic).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from herald.runtime.store import direct
from herald.runtime.store.database import Database

GROUP_LIMIT = 64
"""Most writes in one transaction (it holds the write lock meanwhile)."""

T = TypeVar("T")
Work = Callable[[AsyncConnection], Awaitable[T]]
"""A write: given a connection inside a write transaction, its result (may run twice)."""


class _Redo:
    """The verdict "your group was rolled back for another write: do yours again alone"."""


_REDO: Final = _Redo()

Verdict = BaseException | _Redo | None
"""How a writer's turn ended: committed (None), again alone, or the error to raise."""


class _Writer:
    """One write waiting for, or working in, its group's transaction."""

    __slots__ = ("finished", "started", "verdict")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.started: asyncio.Future[AsyncConnection] = loop.create_future()
        self.finished: asyncio.Future[BaseException | None] = loop.create_future()
        self.verdict: asyncio.Future[Verdict] = loop.create_future()

    def finish(self, error: BaseException | None) -> None:
        """The writer's work is over (with its error): the leader may go on."""
        if not self.finished.done():
            self.finished.set_result(error)

    def decide(self, verdict: Verdict) -> None:
        """How the writer's turn ended (a result, never an exception: it may not be awaited)."""
        if not self.verdict.done():
            self.verdict.set_result(verdict)

    def fail(self, error: BaseException) -> None:
        """The group's transaction failed before or after the writer's turn."""
        if not self.started.done() and not self.finished.done():
            self.started.set_exception(error)
        self.decide(error)


class _Failed(Exception):
    """A writer's work failed inside a PostgreSQL group: roll the group back."""


class _Line:
    """The writers of one key waiting for a group, and the leader running their groups."""

    __slots__ = ("leader", "waiting")

    def __init__(self) -> None:
        self.waiting: deque[_Writer] = deque()
        self.leader: asyncio.Task[None] | None = None


class GroupCommit:
    """Write transactions of one database, grouped (see the module's docstring)."""

    def __init__(self, database: Database, observe: Callable[[int], None] | None = None) -> None:
        self._database = database
        self._observe = observe
        self._lines: dict[str, _Line] = {}

    async def run(self, work: Work[T], *, key: str = "") -> T:
        """Run `work` in a write transaction shared with concurrent writes of the same `key`
        (a resource type; SQLite groups all writes); its result once that transaction
        committed."""
        line = self._lines.setdefault("" if self._database.is_sqlite else key, _Line())
        writer = _Writer(asyncio.get_running_loop())
        line.waiting.append(writer)
        if line.leader is None:
            line.leader = asyncio.create_task(self._lead(line))
        failure: Exception | None = None
        try:
            connection = await writer.started
            result = await work(connection)
        except BaseException as error:
            if not isinstance(error, Exception):
                writer.finish(error)
                raise  # cancelled: nothing to wait for
            failure = error
        writer.finish(failure)
        verdict = await writer.verdict
        if verdict is _REDO:
            return await self._alone(work)
        if failure is not None:
            raise failure  # the writer's own error has the last word
        if isinstance(verdict, BaseException):
            raise verdict
        return result

    async def _alone(self, work: Work[T]) -> T:
        """Run `work` in a transaction of its own."""
        async with self._database.transaction() as connection:
            return await work(connection)

    async def _lead(self, line: _Line) -> None:
        """Run groups until no writer waits."""
        try:
            while line.waiting:
                await self._group(line.waiting)
        finally:
            line.leader = None
            if line.waiting:  # cancelled (shutdown): nobody will run these
                error = asyncio.CancelledError("the database's write groups stopped")
                while line.waiting:
                    line.waiting.popleft().fail(error)

    async def _group(self, waiting: deque[_Writer]) -> None:
        """One transaction: the waiting writers in turn, then COMMIT."""
        done: list[_Writer] = []
        writer: _Writer | None = None
        spoiled = False  # a writer failed after changing rows: the group is rolled back
        try:
            async with self._database.transaction() as connection:
                adapter = direct.writing_sqlite(connection)
                sqlite = None if adapter is None else adapter.sqlite
                while waiting and len(done) < GROUP_LIMIT:
                    writer = waiting.popleft()
                    if writer.finished.done():  # gone (cancelled) before its turn
                        writer = None
                        continue
                    changes = 0 if sqlite is None else sqlite.total_changes
                    writer.started.set_result(connection)
                    error = await writer.finished
                    if error is None:
                        done.append(writer)
                    elif (
                        sqlite is not None
                        and sqlite.total_changes == changes
                        and sqlite.in_transaction
                    ):
                        writer.decide(error)  # changed nothing: nothing to undo
                    else:
                        spoiled = True
                        raise _Failed
                    writer = None
        except BaseException as error:
            if spoiled and isinstance(error, Exception):
                # Rolled back (or its connection lost while rolling back): nothing of the group
                # stays, so its writers so far may write again.
                assert writer is not None
                for each in [*done, writer] if done else []:
                    each.decide(_REDO)
                writer.decide(writer.finished.result())  # first of its group: its error stands
                return
            failed = done if writer is None else [*done, writer]
            if not failed:
                # The transaction could not begin (the database locked by another process past
                # the busy timeout, a lost server): every waiting write gets the error, as each
                # would have on its own, instead of waiting for a retry that may never succeed.
                failed = list(waiting)
                waiting.clear()
            for each in failed:
                each.fail(error)
            if not isinstance(error, Exception):
                raise
            return
        for writer in done:
            writer.decide(None)
        if self._observe is not None and done:
            self._observe(len(done))
