"""The subscription registry: resources, status, revision (for matchers), event counters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import orjson
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Row,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.core.errors import InvalidSubscription
from herald.core.fhir import format_instant, utc_now
from herald.core.states import SubscriptionStatus
from herald.core.subscriptions import effective_end, endpoint_origin, filter_texts, heartbeat_period
from herald.core.types import JsonObject
from herald.runtime.store import direct, header_secrets
from herald.runtime.store.direct import Prepared
from herald.runtime.store.tables import counters, resource_versions, subscriptions


@dataclass(frozen=True)
class StoredSubscription:
    """A subscription row."""

    id: str
    status: SubscriptionStatus
    topic: str
    version_id: int
    last_updated: str
    revision: int
    events_count: int
    delivered_through: int
    error: str | None
    deleted: bool
    stored: JsonObject
    """The resource as the client sent it, stamped with id and meta (status and error overlaid)."""
    owner: str | None = None
    """The client that created it (None when it was created without authentication)."""

    @property
    def resource(self) -> JsonObject:
        """The Subscription resource as the API shows it."""
        resource = dict(self.stored)
        # A status change by the server is a new version too (set_status).
        resource["meta"] = {
            **(resource.get("meta") or {}),
            "versionId": str(self.version_id),
            "lastUpdated": self.last_updated,
        }
        resource["status"] = self.status
        if self.error:
            resource["error"] = self.error
        else:
            resource.pop("error", None)
        return resource


def from_row(row: Row[tuple[object, ...]], *, open_headers: bool = True) -> StoredSubscription:
    """A subscription row as a StoredSubscription (channel.header values decrypted unless
    `open_headers` is False)."""
    m = row._mapping
    content = orjson.loads(m["content"])
    return StoredSubscription(
        id=m["id"],
        status=SubscriptionStatus(m["status"]),
        topic=m["topic"],
        version_id=m["version_id"],
        last_updated=m["last_updated"],
        revision=m["revision"],
        events_count=m["events_count"],
        delivered_through=m["delivered_through"],
        error=m["error"],
        deleted=m["deleted"],
        stored=header_secrets.cipher().open(content) if open_headers else content,
        # Rows read before migration 0008 have no owner column.
        owner=m.get("owner"),
    )


def schedule_columns(stored: JsonObject) -> dict[str, object]:
    """The heartbeat period and effective end of a stored Subscription, as row columns."""
    channel = stored.get("channel")
    end = effective_end(stored)
    return {
        "heartbeat_seconds": heartbeat_period(
            channel.get("extension") if isinstance(channel, dict) else None
        ),
        "ends_at": None if end is None else format_instant(end),
    }


def filters_column(stored: JsonObject) -> str | None:
    """The filter-criteria strings of a stored Subscription as the `filters` column holds them
    (a JSON array); None when they do not pass (the matcher then reads the resource)."""
    try:
        return orjson.dumps(filter_texts(stored)).decode()
    except InvalidSubscription:
        return None


async def record_version(
    connection: AsyncConnection, subscription_id: str, method: str | None = None
) -> None:
    """Keep the subscription's current version (as the API shows it) for its history."""
    row = (
        await connection.execute(select(subscriptions).where(subscriptions.c.id == subscription_id))
    ).first()
    if row is None:
        return
    stored = from_row(row, open_headers=False)
    version = resource_versions.c
    # A rewrite of the same version (tests, repairs) replaces its history row.
    await connection.execute(
        delete(resource_versions).where(
            version.resource_type == "Subscription",
            version.id == stored.id,
            version.version_id == stored.version_id,
        )
    )
    await connection.execute(
        insert(resource_versions).values(
            resource_type="Subscription",
            id=stored.id,
            version_id=stored.version_id,
            last_updated=stored.last_updated,
            # Sealed as in the subscriptions row: history keeps no header value in clear.
            content=orjson.dumps(header_secrets.cipher().seal(stored.resource)).decode(),
            method="DELETE" if stored.deleted else method,
            deleted=stored.deleted,
        )
    )


async def next_revision(connection: AsyncConnection) -> int:
    """Take the next registry revision (the counter row lock orders revisions by commit)."""
    value = await connection.scalar(
        update(counters)
        .where(counters.c.name == "registry")
        .values(value=counters.c.value + 1)
        .returning(counters.c.value)
    )
    return int(value or 0)


_REVISION = Prepared(select(counters.c.value).where(counters.c.name == "registry"))


async def revision(connection: AsyncConnection) -> int:
    """The current registry revision."""
    value = await direct.scalar(connection, _REVISION, {})
    return int(value or 0)


_ONE = select(subscriptions).where(subscriptions.c.id == bindparam("id"))
_ONE_LOCKED = _ONE.with_for_update()


async def get(
    connection: AsyncConnection, subscription_id: str, *, for_update: bool = False
) -> StoredSubscription | None:
    """One subscription, deleted or not."""
    locked = for_update and connection.dialect.name == "postgresql"
    query = _ONE_LOCKED if locked else _ONE
    row = (await connection.execute(query, {"id": subscription_id})).first()
    return None if row is None else from_row(row)


async def insert_new(
    connection: AsyncConnection,
    stored: JsonObject,
    *,
    status: str,
    topic: str,
    owner: str | None = None,
) -> None:
    """Register a new subscription, owned by the client that created it."""
    await connection.execute(
        insert(subscriptions).values(
            id=stored["id"],
            status=status,
            topic=topic,
            content=orjson.dumps(header_secrets.cipher().seal(stored)).decode(),
            version_id=int(stored["meta"]["versionId"]),
            last_updated=stored["meta"]["lastUpdated"],
            revision=await next_revision(connection),
            events_count=0,
            delivered_through=0,
            error=None,
            deleted=False,
            owner=owner,
            **schedule_columns(stored),
            endpoint_origin=endpoint_origin(stored),
            filters=filters_column(stored),
        )
    )
    await record_version(connection, stored["id"], "POST")


async def replace(
    connection: AsyncConnection,
    stored: JsonObject,
    *,
    status: str,
    topic: str,
    skip_backlog: bool = False,
) -> None:
    """Store a client's update of a subscription (clears the error).

    With skip_backlog, undelivered events count as handled: a client re-activating a
    subscription fetches what it missed with $events instead of receiving it again.
    """
    extra = {"delivered_through": subscriptions.c.events_count} if skip_backlog else {}
    await connection.execute(
        update(subscriptions)
        .where(subscriptions.c.id == stored["id"])
        .values(
            **extra,
            status=status,
            topic=topic,
            content=orjson.dumps(header_secrets.cipher().seal(stored)).decode(),
            version_id=int(stored["meta"]["versionId"]),
            last_updated=stored["meta"]["lastUpdated"],
            revision=await next_revision(connection),
            error=None,
            deleted=False,
            **schedule_columns(stored),
            endpoint_origin=endpoint_origin(stored),
            filters=filters_column(stored),
        )
    )
    await record_version(connection, stored["id"], "PUT")


async def count_at_origin(connection: AsyncConnection, origin: str, *, other_than: str) -> int:
    """Live subscriptions (not deleted, not off) whose endpoint has this origin."""
    return await _count_live(connection, subscriptions.c.endpoint_origin == origin, other_than)


async def count_owned(connection: AsyncConnection, owner: str, *, other_than: str) -> int:
    """Live subscriptions (not deleted, not off) this client owns."""
    return await _count_live(connection, subscriptions.c.owner == owner, other_than)


async def _count_live(
    connection: AsyncConnection, condition: ColumnElement[bool], other_than: str
) -> int:
    count = await connection.scalar(
        select(func.count())
        .select_from(subscriptions)
        .where(
            condition,
            subscriptions.c.deleted.is_(False),
            subscriptions.c.status != SubscriptionStatus.OFF,
            subscriptions.c.id != other_than,
        )
    )
    return int(count or 0)


async def set_status(
    connection: AsyncConnection,
    subscription_id: str,
    status: str,
    *,
    error: str | None = None,
    expected: str | None = None,
) -> bool:
    """Move a subscription to a status (only from `expected`, when given); True if it moved.

    The move makes a new version (versionId + 1, lastUpdated now), so that a client polling the
    Subscription by ETag or _lastUpdated sees it.
    """
    query = update(subscriptions).where(
        subscriptions.c.id == subscription_id, subscriptions.c.deleted.is_(False)
    )
    if expected is not None:
        query = query.where(subscriptions.c.status == expected)
    result = await connection.execute(
        query.values(
            status=status,
            error=error,
            revision=await next_revision(connection),
            version_id=subscriptions.c.version_id + 1,
            last_updated=format_instant(utc_now()),
        )
    )
    if result.rowcount:
        await record_version(connection, subscription_id)
    return bool(result.rowcount)


async def mark_deleted(connection: AsyncConnection, subscription_id: str) -> bool:
    """Delete a subscription (kept as a tombstone so matchers learn of it)."""
    result = await connection.execute(
        update(subscriptions)
        .where(subscriptions.c.id == subscription_id, subscriptions.c.deleted.is_(False))
        .values(
            deleted=True,
            status=SubscriptionStatus.OFF,
            revision=await next_revision(connection),
            version_id=subscriptions.c.version_id + 1,
            last_updated=format_instant(utc_now()),
        )
    )
    if result.rowcount:
        await record_version(connection, subscription_id)
    return bool(result.rowcount)


async def changed_since(connection: AsyncConnection, since: int) -> list[StoredSubscription]:
    """Subscriptions whose registry revision is above `since`, in revision order."""
    rows = await connection.execute(
        select(subscriptions)
        .where(subscriptions.c.revision > since)
        .order_by(subscriptions.c.revision)
    )
    return [from_row(r) for r in rows]


# A row of the registry as the matcher loads it: id, status, deleted, revision, topic, filters
# (a JSON array; None only for rows whose filters did not pass when migration 0010 filled them).
RegistryRow = tuple[str, str, bool, int, str, str | None]
# In index order: on SQLite the index ix_subscriptions_registry (0010) holds them all.
REGISTRY_COLUMNS = ["revision", "id", "status", "deleted", "topic", "filters"]


def _registry_rows(after: ColumnElement[bool]) -> Prepared:
    columns = subscriptions.c
    return Prepared(
        select(
            columns.id,
            columns.status,
            columns.deleted,
            columns.revision,
            columns.topic,
            columns.filters,
        )
        .where(after)
        .order_by(columns.revision, columns.id)
        .limit(bindparam("limit"))
    )


_SINCE: BindParameter[int] = bindparam("since")
_PAGE = _registry_rows(subscriptions.c.revision > _SINCE)
_PAGE_AFTER = _registry_rows(
    (subscriptions.c.revision >= _SINCE)
    & ((subscriptions.c.revision > _SINCE) | (subscriptions.c.id > bindparam("after_id")))
)


async def registry_page(
    connection: AsyncConnection, since: int, after_id: str | None, limit: int
) -> Sequence[RegistryRow]:
    """Up to `limit` registry rows in (revision, id) order: those above revision `since`, or at
    `since` with an id above `after_id` when given — the pages in which a matcher loads the
    registry."""
    params: dict[str, object] = {"since": since, "limit": limit}
    prepared = _PAGE
    if after_id is not None:
        params["after_id"], prepared = after_id, _PAGE_AFTER
    # A matcher starting reads a million of these.
    return cast(Sequence[RegistryRow], await direct.driver_rows(connection, prepared, params))


async def contents(connection: AsyncConnection, ids: Sequence[str]) -> dict[str, str]:
    """The stored resources (channel.header values sealed) of these subscriptions, by id."""
    rows = await connection.execute(
        select(subscriptions.c.id, subscriptions.c.content).where(subscriptions.c.id.in_(ids))
    )
    return {row.id: row.content for row in rows}


async def changed_ids_since(connection: AsyncConnection, since: int) -> list[tuple[str, int]]:
    """(id, revision) of the subscriptions whose revision is above `since`, in revision order."""
    rows = await connection.execute(
        select(subscriptions.c.id, subscriptions.c.revision)
        .where(subscriptions.c.revision > since)
        .order_by(subscriptions.c.revision)
    )
    return [(r.id, r.revision) for r in rows]


async def with_work(connection: AsyncConnection) -> list[tuple[str, str, int]]:
    """(id, status, events numbered) of the subscriptions that need the dispatcher: a pending
    handshake or undelivered events."""
    rows = await connection.execute(
        select(subscriptions.c.id, subscriptions.c.status, subscriptions.c.events_count).where(
            subscriptions.c.deleted.is_(False),
            (subscriptions.c.status == SubscriptionStatus.REQUESTED)
            | (
                (subscriptions.c.status == SubscriptionStatus.ACTIVE)
                & (subscriptions.c.events_count > subscriptions.c.delivered_through)
            ),
        )
    )
    return [(row.id, row.status, row.events_count) for row in rows]


async def past_end(connection: AsyncConnection, now: str) -> list[tuple[str, str]]:
    """(id, status) of the live subscriptions whose end has come (and that are not off yet)."""
    rows = await connection.execute(
        select(subscriptions.c.id, subscriptions.c.status).where(
            subscriptions.c.ends_at <= now,
            subscriptions.c.deleted.is_(False),
            subscriptions.c.status != SubscriptionStatus.OFF,
        )
    )
    return [(r.id, r.status) for r in rows]


async def heartbeat_periods(connection: AsyncConnection) -> dict[str, int]:
    """Heartbeat period in seconds of each active subscription that asked for heartbeats."""
    rows = await connection.execute(
        select(subscriptions.c.id, subscriptions.c.heartbeat_seconds).where(
            subscriptions.c.heartbeat_seconds.is_not(None),
            subscriptions.c.status == SubscriptionStatus.ACTIVE,
            subscriptions.c.deleted.is_(False),
        )
    )
    return {r.id: int(r.heartbeat_seconds) for r in rows}


async def count_by_status(connection: AsyncConnection) -> dict[str, int]:
    """How many live subscriptions are in each status."""
    rows = await connection.execute(
        select(subscriptions.c.status, func.count())
        .where(subscriptions.c.deleted.is_(False))
        .group_by(subscriptions.c.status)
    )
    return {status: int(n) for status, n in rows}


def _rotated(content: str) -> str | None:
    """The content with its headers encrypted again with the newest key; None if unchanged."""
    resource = orjson.loads(content)
    rotated = header_secrets.cipher().rotate(resource)
    return None if rotated is resource or rotated == resource else orjson.dumps(rotated).decode()


async def rotate_header_secrets(connection: AsyncConnection) -> int:
    """Encrypt every stored channel.header again with the newest key; how many rows changed."""
    rows = (await connection.execute(select(subscriptions.c.id, subscriptions.c.content))).all()
    changed = 0
    for row in rows:
        if (content := _rotated(row.content)) is not None:
            await connection.execute(
                update(subscriptions).where(subscriptions.c.id == row.id).values(content=content)
            )
            changed += 1
    # The versions history keeps are sealed too.
    version = resource_versions.c
    kept = await connection.execute(
        select(version.id, version.version_id, version.content).where(
            version.resource_type == "Subscription"
        )
    )
    for kept_row in kept.all():
        if (content := _rotated(kept_row.content)) is not None:
            await connection.execute(
                update(resource_versions)
                .where(
                    version.resource_type == "Subscription",
                    version.id == kept_row.id,
                    version.version_id == kept_row.version_id,
                )
                .values(content=content)
            )
    return changed


async def live(
    connection: AsyncConnection,
    *,
    status: SubscriptionStatus | None = None,
    topic: str | None = None,
) -> list[StoredSubscription]:
    """The subscriptions not deleted, by id; only those of a status and topic when given."""
    query = select(subscriptions).where(subscriptions.c.deleted.is_(False))
    if status is not None:
        query = query.where(subscriptions.c.status == status)
    if topic is not None:
        query = query.where(subscriptions.c.topic == topic)
    return [from_row(r) for r in await connection.execute(query.order_by(subscriptions.c.id))]
