"""Versioned resources (Tasks): current version plus history, written with their change event."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from sqlalchemy import bindparam, false, func, insert, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.core.errors import ConcurrentWrite
from herald.core.fhir import utc_now
from herald.core.types import JsonObject
from herald.runtime.store import direct, search
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
_CURRENT_LOCKED = Prepared(_CURRENT_QUERY.with_for_update())
_NEWEST = Prepared(
    select(func.max(resources.c.last_updated)).where(
        resources.c.resource_type == bindparam("type"), resources.c.deleted == false()
    )
)
_TYPE_LOCK = text("SELECT pg_advisory_xact_lock(:kind, :key)")
_INSERT_CURRENT = Prepared(insert(resources))
_UPDATE_CURRENT = Prepared(
    update(resources).where(
        resources.c.resource_type == bindparam("key_type"), resources.c.id == bindparam("key_id")
    )
)
_INSERT_VERSION = Prepared(insert(resource_versions))


async def current(
    connection: AsyncConnection, resource_type: str, resource_id: str, *, for_update: bool = False
) -> StoredResource | None:
    """The current version of a resource, locking its row when asked (PostgreSQL)."""
    locked = for_update and connection.dialect.name == "postgresql"
    found = await direct.rows(
        connection,
        _CURRENT_LOCKED if locked else _CURRENT,
        {"type": resource_type, "id": resource_id},
    )
    if not found:
        return None
    type_, id_, version_id, last_updated, deleted, content = found[0]
    return StoredResource(
        type_, id_, version_id, last_updated, bool(deleted), orjson.loads(content)
    )


_WRITE_LOCK = 7244  # advisory lock class of "writes of one resource type" (7243: migrations)
_TICK = timedelta(milliseconds=1)  # the precision of meta.lastUpdated


async def write_clock(connection: AsyncConnection, resource_type: str) -> datetime:
    """The meta.lastUpdated of a new version, taken so that polling never misses a change.

    A poller asks for `_lastUpdated=gt<the newest lastUpdated it has seen>`. That is only safe
    if versions become visible in lastUpdated order: two writers that stamp 10:00:00.001 and
    .002 and commit in the other order would hide the first behind the poller's cursor. So the
    writers of one resource type take their stamp under one lock held until commit (PostgreSQL:
    a transaction advisory lock; SQLite: its single writer), and the stamp is later than every
    stored one (1 ms apart, the precision of lastUpdated). The cost: writes of one type commit
    one at a time, across all ingest processes (see docs/performance.md).
    """
    if connection.dialect.name == "postgresql":
        key = zlib.crc32(resource_type.encode()) & 0x7FFFFFFF
        await connection.execute(_TYPE_LOCK, {"kind": _WRITE_LOCK, "key": key})
    newest = await direct.scalar(connection, _NEWEST, {"type": resource_type})
    now = utc_now()
    if newest is not None:
        now = max(now, datetime.fromisoformat(newest) + _TICK)
    return now


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
) -> None:
    """Write a new version (already stamped with id, versionId and lastUpdated).

    ConcurrentWrite when another transaction created the same resource first.
    """
    try:
        await _save(connection, stamped, previous, method)
    except IntegrityError as exc:
        raise ConcurrentWrite(
            f"{stamped['resourceType']}/{stamped['id']} was written concurrently"
        ) from exc


async def _save(
    connection: AsyncConnection,
    stamped: JsonObject,
    previous: StoredResource | None,
    method: str | None,
) -> None:
    resource_type, resource_id = stamped["resourceType"], stamped["id"]
    version_id = int(stamped["meta"]["versionId"])
    last_updated = stamped["meta"]["lastUpdated"]
    content = orjson.dumps(stamped).decode()
    values = {
        "version_id": version_id,
        "last_updated": last_updated,
        "deleted": False,
        "content": content,
    }
    if previous is None:
        await direct.run(
            connection,
            _INSERT_CURRENT,
            {"resource_type": resource_type, "id": resource_id, **values},
        )
    else:
        await direct.run(
            connection,
            _UPDATE_CURRENT,
            {"key_type": resource_type, "key_id": resource_id, **values},
        )
    await direct.run(
        connection,
        _INSERT_VERSION,
        {
            "resource_type": resource_type,
            "id": resource_id,
            "version_id": version_id,
            "last_updated": last_updated,
            "content": content,
            "method": method,
            "deleted": False,
        },
    )
    await search.reindex(connection, stamped, fresh=previous is None or previous.deleted)


async def mark_deleted(
    connection: AsyncConnection, previous: StoredResource, version_id: int, last_updated: str
) -> None:
    """Record a deletion as a new version; the last content is kept for history."""
    await connection.execute(
        update(resources)
        .where(resources.c.resource_type == previous.resource_type, resources.c.id == previous.id)
        .values(version_id=version_id, last_updated=last_updated, deleted=True)
    )
    await connection.execute(
        insert(resource_versions).values(
            resource_type=previous.resource_type,
            id=previous.id,
            version_id=version_id,
            last_updated=last_updated,
            content=orjson.dumps(previous.resource).decode(),
            method="DELETE",
            deleted=True,
        )
    )
    await search.unindex(connection, previous.resource_type, previous.id)
