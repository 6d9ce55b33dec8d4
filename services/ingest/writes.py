"""Writing a resource version and its change event in one transaction (the outbox).

`write_version` is the one place a Task version is written: it reads the current version with
its row locked (PostgreSQL) or under the single-writer lock (SQLite), lets the caller decide
what the next version is, stamps it (id, versionId, lastUpdated), saves and indexes it, and
queues its change event on the outbox, all in one transaction. PUT, POST, DELETE and the
Canvas endpoint differ only in how they decide. Concurrent writes of a type share one
transaction, and each returns only after that transaction committed (store/group_commit.py):
the write may run twice, so a plan decides afresh each time it is called.

The stamp comes from `resources.begin_write`: taken under a per-type lock held until commit and
later than every stored one, so that polling with `_lastUpdated=gt` never misses a version.
A conditional create (`unless`) looks for matches under that same lock, so two of them cannot
both create.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sqlalchemy.ext.asyncio import AsyncConnection

from herald.core.contracts import TASK_CHANGES, ResourceChange, encode
from herald.core.errors import ConcurrentWrite, ResourceGone, ResourceNotFound, VersionConflict
from herald.core.fhir import format_instant, new_id, whole_number
from herald.core.resources import with_version
from herald.core.search import Criteria
from herald.core.types import JsonObject
from herald.ingest.context import IngestContext
from herald.runtime.bus.base import Outgoing
from herald.runtime.logs import request_id
from herald.runtime.store import resources
from herald.runtime.store.resources import StoredResource
from herald.runtime.store.search import search_ids


class _Delete:
    """The decision to delete the resource (see DELETE)."""


DELETE: Final = _Delete()
"""What a Plan returns to write a deleted version."""

Plan = Callable[[StoredResource | None], JsonObject | _Delete | None]
"""Given the current version (None when there is none), the next version's content, DELETE,
or None to write nothing; raises a FhirError to refuse the write."""


WriteGuard = Callable[[JsonObject | None], None]
"""Checks, inside the write's transaction, that the caller may replace this current version
(None: there is none); raises a FhirError to refuse."""


@dataclass(frozen=True)
class WriteResult:
    """The version written: its content (None for a delete) and its interaction."""

    resource: JsonObject | None
    interaction: str
    """create | update | delete; "match" when a conditional create found `matched` resources
    (then `resource` is the first and nothing was written)."""
    matched: int = 0

    @property
    def created(self) -> bool:
        """Whether the write created the resource."""
        return self.interaction == "create"


async def write_version(
    ctx: IngestContext,
    resource_type: str,
    resource_id: str,
    plan: Plan,
    *,
    method: str | None = None,
    unless: Criteria | None = None,
    within: frozenset[str] | None = None,
) -> WriteResult | None:
    """Write the version `plan` decides on, with its change event; None when it wrote nothing.

    `method`: the HTTP method of the interaction, for history and notifications (None: the
    interaction implies it). `unless`: a conditional create's criteria; when resources match
    them nothing is written (see WriteResult); `within`: a tenant's organizations, the only
    Tasks its criteria can match.
    """
    try:
        return await _write_version(ctx, resource_type, resource_id, plan, method, unless, within)
    except ConcurrentWrite:
        # Two creates of the same new id raced; the loser decides again on top of the winner.
        return await _write_version(ctx, resource_type, resource_id, plan, method, unless, within)


async def _write_version(
    ctx: IngestContext,
    resource_type: str,
    resource_id: str,
    plan: Plan,
    method: str | None,
    unless: Criteria | None,
    within: frozenset[str] | None,
) -> WriteResult | None:
    async def work(connection: AsyncConnection) -> WriteResult | None:
        start = await resources.begin_write(connection, resource_type, resource_id)
        previous = start.previous
        found = None
        if unless is not None:
            found = await search_ids(connection, unless, now=start.clock, organizations=within)
        if found:
            match = await resources.current(connection, resource_type, found[0])
            assert match is not None
            return WriteResult(match.resource, "match", matched=len(found))
        decided = plan(previous)
        if decided is None:
            return None
        live = None if previous is None or previous.deleted else previous
        version_id = 1 if previous is None else previous.version_id + 1
        now = format_instant(start.clock)
        if isinstance(decided, _Delete):
            assert live is not None, "a plan deletes only a live resource"
            result = WriteResult(None, "delete")
        else:
            stamped = with_version(decided, resource_id, version_id, now)
            result = WriteResult(stamped, "create" if live is None else "update")
        change = ResourceChange(
            event_id=new_id(),
            resource_type=resource_type,
            resource_id=resource_id,
            interaction=result.interaction,
            version_id=str(version_id),
            occurred_at=now,
            current=result.resource,
            previous=None if live is None else live.resource,
            registry_revision=start.registry_revision,
            method=method,
        )
        record = Outgoing(
            ctx.settings.topic(TASK_CHANGES), resource_id, encode(change), request_id.get()
        )
        # A record for the outbox table is written in the version's own statement(s).
        queued = record if ctx.outbox.relayed else None
        if result.resource is None:
            assert live is not None
            await resources.mark_deleted(connection, live, version_id, now, queued=queued)
        else:
            await resources.save(
                connection, result.resource, previous=previous, method=method, queued=queued
            )
        if queued is None:
            await ctx.outbox.add_record(connection, record)
        return result

    result = await ctx.write_groups.run(work, key=resource_type)
    if result is None or result.interaction == "match":
        return result
    ctx.outbox_written.set()
    ctx.metrics.resource_writes.labels(resource_type, result.interaction).inc()
    return result


async def write(
    ctx: IngestContext,
    resource: JsonObject,
    resource_id: str | None,
    *,
    if_match: str | None = None,
    guard: WriteGuard | None = None,
    unless: Criteria | None = None,
    within: frozenset[str] | None = None,
) -> WriteResult:
    """Store a new version of a resource and queue its change event; create when it is new
    (`unless`: a conditional create, see write_version)."""

    def plan(previous: StoredResource | None) -> JsonObject:
        if guard is not None:
            guard(None if previous is None else previous.resource)
        if if_match is not None:
            current_version = None if previous is None or previous.deleted else previous.version_id
            if if_match.strip().removeprefix("W/").strip('"') != str(current_version):
                raise VersionConflict(
                    f"If-Match {if_match} does not name the current version ({current_version})"
                )
        return resource

    method = "POST" if resource_id is None else "PUT"
    written = await write_version(
        ctx,
        resource["resourceType"],
        resource_id or new_id(),
        plan,
        method=method,
        unless=unless,
        within=within,
    )
    assert written is not None
    return written


async def delete(
    ctx: IngestContext, resource_type: str, resource_id: str, *, guard: WriteGuard | None = None
) -> bool:
    """Delete a resource (a new, deleted version) and queue the delete event; False if absent."""

    def plan(previous: StoredResource | None) -> _Delete | None:
        if previous is None or previous.deleted:
            return None
        if guard is not None:
            guard(previous.resource)
        return DELETE

    written = await write_version(ctx, resource_type, resource_id, plan, method="DELETE")
    return written is not None


async def read(ctx: IngestContext, resource_type: str, resource_id: str) -> JsonObject:
    """The current version, or 404/410."""
    async with ctx.database.read() as connection:
        stored = await resources.current(connection, resource_type, resource_id)
    if stored is None:
        raise ResourceNotFound(f"{resource_type}/{resource_id} is not known")
    if stored.deleted:
        raise ResourceGone(f"{resource_type}/{resource_id} was deleted")
    return stored.resource


async def vread(
    ctx: IngestContext, resource_type: str, resource_id: str, version_id: str
) -> JsonObject:
    """One version, or 404."""
    found = None
    number = whole_number(version_id)
    if number is not None:
        async with ctx.database.read() as connection:
            found = await resources.version(connection, resource_type, resource_id, number)
    if found is None:
        raise ResourceNotFound(f"{resource_type}/{resource_id}/_history/{version_id} is not known")
    return found
