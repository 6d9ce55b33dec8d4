"""Writing a resource version and its change event in one transaction (the outbox)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from herald.core.contracts import ResourceChange, encode
from herald.core.errors import FhirError, ResourceGone, ResourceNotFound
from herald.core.fhir import format_instant, new_id, utc_now
from herald.core.resources import with_version
from herald.core.search import Criteria
from herald.core.types import JsonObject
from herald.ingest.context import IngestContext
from herald.runtime.bus.connect import TASK_CHANGES
from herald.runtime.store import outbox, resources, subscriptions
from herald.runtime.store.search import search_ids


class VersionConflict(FhirError):
    """If-Match named a version that is not the current one."""

    status_code = 412
    issue_code = "conflict"


@dataclass(frozen=True)
class WriteResult:
    """The stored version and whether it created the resource."""

    resource: JsonObject
    created: bool
    matched: int = 0
    """With `unless`: how many resources matched it (then nothing was written)."""


async def write(
    ctx: IngestContext,
    resource: JsonObject,
    resource_id: str | None,
    *,
    if_match: str | None = None,
    unless: Criteria | None = None,
) -> WriteResult:
    """Store a new version of a resource and queue its change event; create when it is new.

    `unless` (a conditional create): write nothing when resources match these criteria, checked
    under the write clock's lock so that two conditional creates cannot both create.
    """
    resource_type = resource["resourceType"]
    method = "POST" if resource_id is None else "PUT"
    resource_id = resource_id or new_id()
    try:
        return await _write(ctx, resource, resource_type, resource_id, if_match, method, unless)
    except IntegrityError as exc:
        # Two creates of the same new id raced; the loser updates on top of the winner.
        if if_match is not None:
            raise VersionConflict("the resource changed while it was being written") from exc
        return await _write(ctx, resource, resource_type, resource_id, if_match, method, unless)


async def _write(
    ctx: IngestContext,
    resource: JsonObject,
    resource_type: str,
    resource_id: str,
    if_match: str | None,
    method: str,
    unless: Criteria | None,
) -> WriteResult:
    async with ctx.database.transaction() as connection:
        previous = await resources.current(connection, resource_type, resource_id, for_update=True)
        if if_match is not None:
            current_version = None if previous is None or previous.deleted else previous.version_id
            if if_match.strip().removeprefix("W/").strip('"') != str(current_version):
                raise VersionConflict(
                    f"If-Match {if_match} does not name the current version ({current_version})"
                )
        version_id = 1 if previous is None else previous.version_id + 1
        now = await resources.write_clock(connection, resource_type)
        if unless is not None:
            found = await search_ids(connection, unless, now=now)
            if found:
                match = await resources.current(connection, resource_type, found[0])
                assert match is not None
                return WriteResult(match.resource, created=False, matched=len(found))
        stamped = with_version(resource, resource_id, version_id, format_instant(now))
        await resources.save(connection, stamped, previous=previous, method=method)
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
            method=method,
        )
        await outbox.add(connection, ctx.settings.topic(TASK_CHANGES), resource_id, encode(change))
    ctx.outbox_written.set()
    ctx.metrics.resource_writes.labels(resource_type, interaction).inc()
    return WriteResult(stamped, created=interaction == "create")


async def delete(ctx: IngestContext, resource_type: str, resource_id: str) -> bool:
    """Delete a resource (a new, deleted version) and queue the delete event; False if absent."""
    async with ctx.database.transaction() as connection:
        previous = await resources.current(connection, resource_type, resource_id, for_update=True)
        if previous is None or previous.deleted:
            return False
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
