"""Versioned resources (Tasks): current version plus history, written with their change event."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import bindparam, false, select, text, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.core.errors import ConcurrentWrite
from herald.core.fhir import utc_now
from herald.core.search import DATABASE_SEARCHED
from herald.core.types import JsonObject
from herald.runtime.bus.base import Outgoing
from herald.runtime.store import direct, outbox, search
from herald.runtime.store.direct import Prepared
from herald.runtime.store.tables import resource_versions, resources


@dataclass(frozen=True)
class StoredResource:
    """A resource version as stored."""

    resource_type: str
    id: str
    version_id: int
    last_updated: str
    deleted: bool
    resource: JsonObject


# The statements of every write, built once (see store/direct.py).
_COLUMNS = (
    resources.c.resource_type,
    resources.c.id,
    resources.c.version_id,
    resources.c.last_updated,
    resources.c.deleted,
    resources.c.content,
)
_CURRENT_QUERY = select(*_COLUMNS).where(
    resources.c.resource_type == bindparam("type"), resources.c.id == bindparam("id")
)
_CURRENT = Prepared(_CURRENT_QUERY)


async def current(
    connection: AsyncConnection, resource_type: str, resource_id: str
) -> StoredResource | None:
    """The current version of a resource."""
    found = await direct.rows(connection, _CURRENT, {"type": resource_type, "id": resource_id})
    if not found:
        return None
    type_, id_, version_id, last_updated, deleted, content = found[0]
    return StoredResource(
        type_, id_, version_id, last_updated, bool(deleted), orjson.loads(content)
    )


_WRITE_LOCK = 7244  # advisory lock class of "writes of one resource type" (7243: migrations)
_TICK = timedelta(milliseconds=1)  # the precision of meta.lastUpdated
# The current version (when there is one), the newest stamp of the type and the registry
# revision, in one statement: a round trip each held the type's write lock for longer. On
# PostgreSQL a function (migration 0013) takes the lock first and then reads, in one round trip.
_START_SQL = (
    "WITH cur AS (SELECT version_id, last_updated, deleted, content FROM resources"
    " WHERE resource_type = :type AND id = :id)"
    " SELECT (SELECT max(last_updated) FROM resources"
    " WHERE resource_type = :type AND deleted = false),"
    " (SELECT value FROM counters WHERE name = 'registry'),"
    " cur.version_id, cur.last_updated, cur.deleted, cur.content"
    " FROM (SELECT 1 AS one) AS one LEFT JOIN cur ON true"
)
_START = Prepared(text(_START_SQL))
_START_LOCKED = Prepared(text("SELECT * FROM herald_write_start_v2(:kind, :key, :type, :id)"))


@dataclass(frozen=True)
class WriteStart:
    """What a write decides on, read under the type's write lock."""

    previous: StoredResource | None
    clock: datetime
    """The new version's meta.lastUpdated (see begin_write)."""
    registry_revision: int
    """The subscription registry revision, for the change event."""


async def begin_write(
    connection: AsyncConnection, resource_type: str, resource_id: str
) -> WriteStart:
    """Take the type's write lock; the current version (its row locked on PostgreSQL), the new
    version's stamp and the registry revision.

    The stamp is taken so that polling never misses a change. A poller asks for
    `_lastUpdated=gt<the newest lastUpdated it has seen>`. That is only safe if versions become
    visible in lastUpdated order: two writers that stamp 10:00:00.001 and .002 and commit in
    the other order would hide the first behind the poller's cursor. So the writers of one
    resource type take their stamp under one lock held until commit (PostgreSQL: a transaction
    advisory lock, taken before the read's snapshot so that it sees every earlier holder's
    commit; SQLite: its single writer), and the stamp is later than every
    stored one (1 ms apart, the precision of lastUpdated). The cost: writes of one type commit
    one at a time, across all ingest processes (see docs/performance.md).
    """
    params: dict[str, Any] = {"type": resource_type, "id": resource_id}
    adapter = direct.writing_sqlite(connection)
    if adapter is not None:  # sqlite3 binds the named parameters itself
        found = direct.fetch(adapter, _START_SQL, params)
    elif connection.dialect.name == "postgresql":
        params.update(kind=_WRITE_LOCK, key=zlib.crc32(resource_type.encode()) & 0x7FFFFFFF)
        found = await direct.rows(connection, _START_LOCKED, params)
    else:
        found = await direct.rows(connection, _START, params)
    newest, revision, version_id, last_updated, deleted, content = found[0]
    previous = None
    if version_id is not None:
        previous = StoredResource(
            resource_type,
            resource_id,
            version_id,
            last_updated,
            bool(deleted),
            orjson.loads(content),
        )
    now = utc_now()
    if newest is not None:
        now = max(now, datetime.fromisoformat(newest) + _TICK)
    return WriteStart(previous, now, int(revision or 0))


async def write_clock(connection: AsyncConnection, resource_type: str) -> datetime:
    """The meta.lastUpdated of a new version of a resource type, under its write lock (see
    begin_write)."""
    return (await begin_write(connection, resource_type, "")).clock


async def version(
    connection: AsyncConnection, resource_type: str, resource_id: str, version_id: int
) -> JsonObject | None:
    """One historical version."""
    content = await connection.scalar(
        select(resource_versions.c.content).where(
            resource_versions.c.resource_type == resource_type,
            resource_versions.c.id == resource_id,
            resource_versions.c.version_id == version_id,
            resource_versions.c.deleted == false(),
        )
    )
    return None if content is None else orjson.loads(content)


VersionKey = tuple[str, str, int]
"""resource type, id, version id."""


async def versions(
    connection: AsyncConnection, keys: list[VersionKey]
) -> dict[VersionKey, JsonObject]:
    """Several historical versions in one query, by (type, id, version); missing ones left out."""
    if not keys:
        return {}
    rows = await connection.execute(
        select(
            resource_versions.c.resource_type,
            resource_versions.c.id,
            resource_versions.c.version_id,
            resource_versions.c.content,
        ).where(
            tuple_(
                resource_versions.c.resource_type,
                resource_versions.c.id,
                resource_versions.c.version_id,
            ).in_(set(keys)),
            resource_versions.c.deleted == false(),
        )
    )
    return {(r.resource_type, r.id, r.version_id): orjson.loads(r.content) for r in rows}


async def save(
    connection: AsyncConnection,
    stamped: JsonObject,
    *,
    previous: StoredResource | None,
    method: str | None = None,
    queued: Outgoing | None = None,
) -> None:
    """Write a new version (already stamped with id, versionId and lastUpdated), with the
    outbox row `queued` when given.

    ConcurrentWrite when another transaction created the same resource first.
    """
    meta = stamped["meta"]
    new = _NewVersion(
        stamped["resourceType"],
        stamped["id"],
        int(meta["versionId"]),
        meta["lastUpdated"],
        orjson.dumps(stamped).decode(),
        method,
        deleted=False,
    )
    try:
        await _write(connection, new, stamped, previous, queued)
    except IntegrityError as exc:
        raise ConcurrentWrite(
            f"{stamped['resourceType']}/{stamped['id']} was written concurrently"
        ) from exc


async def mark_deleted(
    connection: AsyncConnection,
    previous: StoredResource,
    version_id: int,
    last_updated: str,
    *,
    queued: Outgoing | None = None,
) -> None:
    """Record a deletion as a new version (the last content is kept for history), with the
    outbox row `queued` when given."""
    content = orjson.dumps(previous.resource).decode()
    new = _NewVersion(
        previous.resource_type, previous.id, version_id, last_updated, content, "DELETE", True
    )
    await _write(connection, new, None, previous, queued)


@dataclass(frozen=True)
class _NewVersion:
    """A version to write: the columns of its current row and of its history row."""

    resource_type: str
    id: str
    version_id: int
    last_updated: str
    content: str
    method: str | None
    deleted: bool


# The statements of a write, in SQL both engines read (booleans as parameters).
_INSERT_CURRENT = (
    "INSERT INTO resources (resource_type, id, version_id, last_updated, deleted, content)"
    " VALUES (:type, :id, :version_id, :last_updated, :deleted, :content)"
)
_UPDATE_CURRENT = (
    "UPDATE resources SET version_id = :version_id, last_updated = :last_updated,"
    " deleted = :deleted, content = :content WHERE resource_type = :type AND id = :id"
)
_INSERT_VERSION = (
    "INSERT INTO resource_versions"
    " (resource_type, id, version_id, last_updated, content, method, deleted)"
    " VALUES (:type, :id, :version_id, :last_updated, :content, :method, :deleted)"
)
_SQLITE = {sql: Prepared(text(sql)) for sql in (_INSERT_CURRENT, _UPDATE_CURRENT, _INSERT_VERSION)}
# The same for sqlite3 itself (positional parameters, see _sqlite_batch); the current row's
# insert names its columns in the update's order, so that both take one tuple.
_SQLITE_INSERT_CURRENT = (
    "INSERT INTO resources (version_id, last_updated, deleted, content, resource_type, id)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_SQLITE_UPDATE_CURRENT = (
    "UPDATE resources SET version_id = ?, last_updated = ?, deleted = ?, content = ?"
    " WHERE resource_type = ? AND id = ?"
)
_SQLITE_INSERT_VERSION = (
    "INSERT INTO resource_versions"
    " (resource_type, id, version_id, last_updated, content, method, deleted)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_COMBINED: dict[tuple[bool, bool, bool, bool], Prepared] = {}


def _combined(*, create: bool, unindex: bool, index: bool, queued: bool) -> Prepared:
    """One statement of data-modifying CTEs (PostgreSQL): the current row, the history row,
    the index rows replaced and the outbox row. Each round trip of a write is held under the
    type's write lock (see begin_write), so a write is one statement instead of up to nine.
    The parts see one snapshot: the DELETE of the old index rows does not see the new ones."""
    shape = (create, unindex, index, queued)
    found = _COMBINED.get(shape)
    if found is not None:
        return found
    parts = [_INSERT_CURRENT if create else _UPDATE_CURRENT, _INSERT_VERSION]
    if unindex:
        parts += search.UNINDEX_SQL
    if index:
        parts += search.INDEX_SQL
    if queued:
        parts.append(outbox.ADD_SQL)
    ctes = ", ".join(f"part{n} AS ({sql})" for n, sql in enumerate(parts[:-1]))
    made = _COMBINED[shape] = Prepared(text(f"WITH {ctes} {parts[-1]}"))
    return made


def _sqlite_batch(
    new: _NewVersion,
    create: bool,
    indexed: JsonObject | None,
    had_index: bool,
    searched: bool,
    queued: Outgoing | None,
) -> direct.Batch:
    """The statements of a write on SQLite, as direct.run_batch runs them on the writer's
    connection (one lookup of the connection per write instead of one per statement)."""
    key = (new.resource_type, new.id)
    current = (new.version_id, new.last_updated, new.deleted, new.content, *key)
    version = (*key, new.version_id, new.last_updated, new.content, new.method, new.deleted)
    batch: list[tuple[str, Sequence[Sequence[Any]]]] = [
        (_SQLITE_INSERT_CURRENT if create else _SQLITE_UPDATE_CURRENT, [current]),
        (_SQLITE_INSERT_VERSION, [version]),
    ]
    if searched and (indexed is None or had_index):
        batch += [(sql, [key]) for sql in search.SQLITE_UNINDEX]
    if indexed is not None:
        batch += search.index_batch(indexed)
    if queued is not None:
        batch.append((outbox.SQLITE_ADD, [outbox.record_values(queued)]))
    return batch


async def _write(
    connection: AsyncConnection,
    new: _NewVersion,
    indexed: JsonObject | None,
    previous: StoredResource | None,
    queued: Outgoing | None,
) -> None:
    """Write `new`; index `indexed` (None: a deletion), remove the previous index rows, queue
    the outbox row."""
    create = previous is None
    searched = new.resource_type in DATABASE_SEARCHED
    had_index = searched and previous is not None and not previous.deleted
    sqlite = connection.dialect.name != "postgresql"
    adapter = direct.writing_sqlite(connection) if sqlite else None
    if adapter is not None:
        direct.run_batch(adapter, _sqlite_batch(new, create, indexed, had_index, searched, queued))
        return
    params: dict[str, Any] = {
        "type": new.resource_type,
        "id": new.id,
        "version_id": new.version_id,
        "last_updated": new.last_updated,
        "deleted": new.deleted,
        "content": new.content,
        "method": new.method,
    }
    if sqlite:  # outside Database.transaction: through SQLAlchemy
        await direct.run(
            connection, _SQLITE[_INSERT_CURRENT if create else _UPDATE_CURRENT], params
        )
        await direct.run(connection, _SQLITE[_INSERT_VERSION], params)
        if indexed is None:
            await search.unindex(connection, new.resource_type, new.id)
        else:
            await search.reindex(connection, indexed, fresh=not had_index)
        if queued is not None:
            await outbox.add_record(connection, queued)
        return
    index = searched and indexed is not None
    if index:
        assert indexed is not None
        params.update(search.index_arrays(indexed))
    if queued is not None:
        params.update(outbox.record_params(queued))
    statement = _combined(create=create, unindex=had_index, index=index, queued=queued is not None)
    await direct.run(connection, statement, params)
