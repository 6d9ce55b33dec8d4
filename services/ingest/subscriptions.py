"""Subscription REST: create, read, update, delete, $status. Handshakes are queued, never inline."""

from __future__ import annotations

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from herald.core.contracts import NOTIFICATIONS, NotificationRequest, encode
from herald.core.errors import InvalidSubscription, QuotaExceeded, ResourceGone, ResourceNotFound
from herald.core.fhir import format_instant, new_id, utc_now
from herald.core.resources import with_version
from herald.core.states import CLIENT_STATUSES, SubscriptionStatus
from herald.core.structure import validate_structure
from herald.core.subscriptions import endpoint_origin, parse_subscription
from herald.core.tenancy import check_pinned
from herald.core.types import JsonObject
from herald.ingest.auth.access import CallerDep, owns, require
from herald.ingest.auth.server import ANONYMOUS, Caller
from herald.ingest.context import Ctx, IngestContext
from herald.ingest.fhirhttp import fhir_router, read_resource, versioned
from herald.runtime.packaged import fhir_xml
from herald.runtime.store import subscriptions as registry
from herald.runtime.store.subscriptions import StoredSubscription

router = fhir_router()


async def _queue_handshake(
    ctx: IngestContext, connection: AsyncConnection, stored: JsonObject
) -> None:
    request = NotificationRequest(
        request_id=f"handshake:{stored['id']}:{stored['meta']['versionId']}",
        kind="handshake",
        subscription_id=stored["id"],
        source_event_id=f"Subscription/{stored['id']}/_history/{stored['meta']['versionId']}",
        requested_at=format_instant(utc_now()),
    )
    await ctx.outbox.add(
        connection,
        ctx.settings.topic(NOTIFICATIONS),
        stored["id"],
        encode(request),
    )


def _client_status(resource: JsonObject, current: SubscriptionStatus | None) -> SubscriptionStatus:
    status = resource.get("status", SubscriptionStatus.REQUESTED)
    if status in CLIENT_STATUSES or status == current:
        return SubscriptionStatus(status)
    raise InvalidSubscription(
        f"a client may set Subscription.status to requested or off, not {status!r}; "
        "active and error are set by the server",
        expression="Subscription.status",
    )


async def save_subscription(
    ctx: IngestContext,
    resource: JsonObject,
    subscription_id: str | None,
    who: Caller = ANONYMOUS,
) -> JsonObject:
    """Validate and store a new version; queue a handshake when the status is requested.

    The API and `herald subscriptions reactivate|off` both change subscriptions through here.
    """
    subscription = parse_subscription(resource, ctx.topics, ctx.settings.endpoint_policy)
    validate_structure(resource, fhir_xml())
    async with ctx.database.transaction() as connection:
        current = None
        if subscription_id is not None:
            current = await registry.get(connection, subscription_id, for_update=True)
            _check_exists(current, subscription_id, who)
        if who.organizations is not None:
            check_pinned(subscription, who.organizations, ctx.settings.fhir_base)
        status = _client_status(resource, current.status if current else None)
        if status != SubscriptionStatus.OFF:
            await _check_origin_quota(ctx, connection, resource, subscription_id)
            if who.client_id is not None:
                await _check_client_quota(ctx, connection, who.client_id, subscription_id)
        stored = with_version(
            {k: v for k, v in resource.items() if k not in ("status", "error")},
            subscription_id or new_id(),
            current.version_id + 1 if current else 1,
            format_instant(utc_now()),
        )
        if current is None:
            await registry.insert_new(
                connection,
                stored,
                status=status,
                topic=subscription.topic_url,
                owner=who.client_id,
            )
        else:
            await registry.replace(
                connection,
                stored,
                status=status,
                topic=subscription.topic_url,
                skip_backlog=status == SubscriptionStatus.REQUESTED
                and current.status in (SubscriptionStatus.ERROR, SubscriptionStatus.OFF),
            )
        if status == SubscriptionStatus.REQUESTED:
            await _queue_handshake(ctx, connection, stored)
    ctx.outbox_written.set()
    return {**stored, "status": status}


async def _check_origin_quota(
    ctx: IngestContext, connection: AsyncConnection, resource: JsonObject, own_id: str | None
) -> None:
    """Refuse one more live subscription to an endpoint origin that has its quota: each
    subscription is one more POST per matching change to that origin."""
    origin = endpoint_origin(resource)
    most = ctx.settings.max_subscriptions_per_origin
    if origin is None:
        return
    held = await registry.count_at_origin(connection, origin, other_than=own_id or "")
    if held >= most:
        raise QuotaExceeded(
            f"the endpoint's origin already has {held} live subscriptions, the most this "
            f"server allows (HERALD_MAX_SUBSCRIPTIONS_PER_ORIGIN={most}); delete or turn off "
            "some, or use filters on fewer subscriptions",
            expression="Subscription.channel.endpoint",
        )


async def _check_client_quota(
    ctx: IngestContext, connection: AsyncConnection, client_id: str, own_id: str | None
) -> None:
    """Refuse one more live subscription to a client that owns its quota of them."""
    most = ctx.settings.max_subscriptions_per_client
    held = await registry.count_owned(connection, client_id, other_than=own_id or "")
    if held >= most:
        raise QuotaExceeded(
            f"this client already owns {held} live subscriptions, the most this server allows "
            f"(HERALD_MAX_SUBSCRIPTIONS_PER_CLIENT={most}); delete or turn off some"
        )


def _check_exists(
    found: StoredSubscription | None, subscription_id: str, who: Caller
) -> StoredSubscription:
    # Another client's subscription is not known to this one: 404, never 403.
    if found is None or not owns(who, found.owner):
        raise ResourceNotFound(f"Subscription/{subscription_id} is not known")
    if found.deleted:
        raise ResourceGone(f"Subscription/{subscription_id} was deleted")
    return found


@router.post("/Subscription", status_code=201, dependencies=[require("Subscription", "c")])
async def create_subscription(request: Request, ctx: Ctx, who: CallerDep) -> Response:
    """Register a subscription as requested; the dispatcher sends the handshake."""
    saved = await save_subscription(ctx, await read_resource(request), None, who)
    return versioned(ctx.settings.fhir_base, saved, 201, request, write=True)


async def stored_subscription(
    ctx: IngestContext, subscription_id: str, who: Caller = ANONYMOUS
) -> StoredSubscription:
    """A live subscription the caller owns; ResourceNotFound or ResourceGone otherwise."""
    async with ctx.database.read() as connection:
        found = await registry.get(connection, subscription_id)
    return _check_exists(found, subscription_id, who)


@router.get("/Subscription/{subscription_id}", dependencies=[require("Subscription", "r")])
async def read_subscription(
    subscription_id: str, request: Request, ctx: Ctx, who: CallerDep
) -> Response:
    """A subscription with its current status and error (conditional read: 304)."""
    stored = await stored_subscription(ctx, subscription_id, who)
    return versioned(ctx.settings.fhir_base, stored.resource, 200, request)


@router.put("/Subscription/{subscription_id}", dependencies=[require("Subscription", "u")])
async def update_subscription(
    subscription_id: str, request: Request, ctx: Ctx, who: CallerDep
) -> Response:
    """Change a subscription; status requested asks for a new handshake, off stops it."""
    resource = await read_resource(request)
    if resource.get("id") != subscription_id:
        raise InvalidSubscription(
            f"the id in the body ({resource.get('id')!r}) differs from the URL "
            f"({subscription_id!r})",
            expression="Subscription.id",
        )
    saved = await save_subscription(ctx, resource, subscription_id, who)
    return versioned(ctx.settings.fhir_base, saved, 200, request, write=True)


@router.delete(
    "/Subscription/{subscription_id}",
    status_code=204,
    dependencies=[require("Subscription", "d")],
)
async def delete_subscription(subscription_id: str, ctx: Ctx, who: CallerDep) -> Response:
    """Delete a subscription; no notification is sent for it afterwards."""
    async with ctx.database.transaction() as connection:
        found = await registry.get(connection, subscription_id, for_update=True)
        if found is not None and not owns(who, found.owner):
            raise ResourceNotFound(f"Subscription/{subscription_id} is not known")
        await registry.mark_deleted(connection, subscription_id)
    return Response(status_code=204)
