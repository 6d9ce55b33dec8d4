"""Writing a resource version and its change event in one transaction (the outbox)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from herald.core.contracts import ResourceChange, encode
from herald.core.errors import FhirError, ResourceGone, ResourceNotFound
from herald.core.fhir import format_instant, new_id, utc_now
from herald.core.resources import with_version
from herald.core.types import JsonObject
from herald.ingest.context import IngestContext
from herald.runtime.bus.connect import TASK_CHANGES
from herald.runtime.store import outbox, resources, subscriptions


class VersionConflict(FhirError):
    """If-Match named a version that is not the current one."""

    status_code = 412
    issue_code = "conflict"


WriteGuard = Callable[[JsonObject | None], None]
"""Checks, inside the write's transaction, that the caller may replace this current version
(None: there is none); raises a FhirError to refuse."""


@dataclass(frozen=True)
class WriteResult:
    """The stored version and whether it created the resource."""

    resource: JsonObject
    created: bool


async def write(
    ctx: IngestContext,
    resource: JsonObject,
    resource_id: str | None,
    *,
    if_match: str | None = None,
    guard: WriteGuard | None = None,
) -> WriteResult:
    """Store a new version of a resource and queue its change event; create when it is new."""
    resource_type = resource["resourceType"]
    resource_id = resource_id or new_id()
    try:
        return await _write(ctx, resource, resource_type, resource_id, if_match, guard)
    except IntegrityError as exc:
        # Two creates of the same new id raced; the loser updates on top of the winner.
        if if_match is not None:
            raise VersionConflict("the resource changed while it was being written") from exc
        return await _write(ctx, resource, resource_type, resource_id, if_match, guard)


async def _write(
    ctx: IngestContext,
    resource: JsonObject,
    resource_type: str,
    resource_id: str,
    if_match: str | None,
    guard: WriteGuard | None,
) -> WriteResult:
    async with ctx.database.transaction() as connection:
        previous = await resources.current(connection, resource_type, resource_id, for_update=True)
        if guard is not None:
            guard(None if previous is None else previous.resource)
        if if_match is not None:
            current_version = None if previous is None or previous.deleted else previous.version_id
            if if_match.strip().removeprefix("W/").strip('"') != str(current_version):
                raise VersionConflict(
                    f"If-Match {if_match} does not name the current version ({current_version})"
                )
        version_id = 1 if previous is None else previous.version_id + 1
        now = utc_now()
        stamped = with_version(resource, resource_id, version_id, format_instant(now))
        await resources.save(connection, stamped, previous=previous)
        interaction = "create" if previous is None or previous.deleted else "update"
        change = ResourceChange(
            event_id=new_id(),
            resource_type=resource_type,
            resource_id=resource_id,
            interaction=interaction,
            version_id=str(version_id),
            occurred_at=format_instant(now),
            current=stamped,
            previous=None if interaction == "create" else previous.resource if previous else None,
            registry_revision=await subscriptions.revision(connection),
        )
        await outbox.add(connection, ctx.settings.topic(TASK_CHANGES), resource_id, encode(change))
    ctx.outbox_written.set()
    ctx.metrics.resource_writes.labels(resource_type, interaction).inc()
    return WriteResult(stamped, created=interaction == "create")


async def delete(
    ctx: IngestContext, resource_type: str, resource_id: str, *, guard: WriteGuard | None = None
) -> bool:
    """Delete a resource (a new, deleted version) and queue the delete event; False if absent."""
    async with ctx.database.transaction() as connection:
        previous = await resources.current(connection, resource_type, resource_id, for_update=True)
        if previous is None or previous.deleted:
            return False
        if guard is not None:
            guard(previous.resource)
        now = utc_now()
        version_id = previous.version_id + 1
        await resources.mark_deleted(connection, previous, version_id, format_instant(now))
        change = ResourceChange(
            event_id=new_id(),
            resource_type=resource_type,
            resource_id=resource_id,
            interaction="delete",
            version_id=str(version_id),
            occurred_at=format_instant(now),
            current=None,
            previous=previous.resource,
            registry_revision=await subscriptions.revision(connection),
        )
        await outbox.add(connection, ctx.settings.topic(TASK_CHANGES), resource_id, encode(change))
    ctx.outbox_written.set()
    ctx.metrics.resource_writes.labels(resource_type, "delete").inc()
    return True


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
    if version_id.isdigit():
        async with ctx.database.read() as connection:
            found = await resources.version(connection, resource_type, resource_id, int(version_id))
    if found is None:
        raise ResourceNotFound(f"{resource_type}/{resource_id}/_history/{version_id} is not known")
    return found
