"""Resource history: every version of one resource or of a type, newest first, in pages."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.core.types import JsonObject
from herald.runtime.store import header_secrets
from herald.runtime.store.tables import resource_versions

HistoryKey = tuple[str, str, int]
"""last_updated, id, version id: the order of history (descending), and a page's cursor."""


@dataclass(frozen=True)
class HistoryVersion:
    """One version as history shows it (for a deletion, the content before it)."""

    resource_type: str
    id: str
    version_id: int
    last_updated: str
    method: str | None
    deleted: bool
    resource: JsonObject

    @property
    def key(self) -> HistoryKey:
        """Where this version is in the history order."""
        return (self.last_updated, self.id, self.version_id)


async def history(
    connection: AsyncConnection,
    resource_type: str,
    resource_id: str | None,
    *,
    since: str | None,
    count: int,
    before: HistoryKey | None = None,
) -> list[HistoryVersion]:
    """Up to `count` versions (of one resource, or of every resource of the type), newest first,
    changed at or after `since`, older than `before` (a previous page's last key)."""
    table = resource_versions
    query = select(table).where(table.c.resource_type == resource_type)
    if resource_id is not None:
        query = query.where(table.c.id == resource_id)
    if since is not None:
        query = query.where(table.c.last_updated >= since)
    if before is not None:
        at, rid, version = before
        query = query.where(
            or_(
                table.c.last_updated < at,
                and_(table.c.last_updated == at, table.c.id < rid),
                and_(table.c.last_updated == at, table.c.id == rid, table.c.version_id < version),
            )
        )
    order = (table.c.last_updated.desc(), table.c.id.desc(), table.c.version_id.desc())
    rows = await connection.execute(query.order_by(*order).limit(count))
    return [
        HistoryVersion(
            r.resource_type,
            r.id,
            r.version_id,
            r.last_updated,
            r.method,
            r.deleted,
            # Subscription versions are kept with channel.header values sealed.
            header_secrets.cipher().open(orjson.loads(r.content)),
        )
        for r in rows
    ]
