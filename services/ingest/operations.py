"""Subscription operations of the Backport IG: $status (instance and type level) and $events."""

from __future__ import annotations

from dataclasses import replace

from fastapi import Request
from starlette.responses import Response

from herald.core.errors import FhirError
from herald.core.fhir import format_instant, new_id, utc_now, whole_number
from herald.core.notifications import (
    QUERY_EVENT,
    QUERY_STATUS,
    SubscriptionState,
    notification_bundle,
    status_parameters,
)
from herald.core.subscriptions import CONTENT_CODES, STORED_POLICY, parse_subscription
from herald.core.types import JsonObject
from herald.ingest.auth.access import CallerDep, may_see, owns, require
from herald.ingest.context import Ctx, IngestContext
from herald.ingest.fhirhttp import FhirResponse, fhir_router, read_resource
from herald.ingest.subscriptions import stored_subscription
from herald.runtime.store import events as event_log
from herald.runtime.store import subscriptions as registry
from herald.runtime.store.subscriptions import StoredSubscription

router = fhir_router()

# One $events answer carries at most this many events; ask again from the last number + 1.
MAX_EVENTS = 1000
# A type-level $status without ids answers for at most this many subscriptions.
MAX_STATUS = 1000
# Values one operation parameter may carry (ids of a type-level $status, for instance).
MAX_VALUES = 100


def _state(stored: StoredSubscription, content: str = "id-only") -> SubscriptionState:
    return SubscriptionState(
        id=stored.id,
        topic_url=stored.topic,
        status=stored.status,
        events_since_start=stored.events_count,
        content=content,
        error=stored.error,
    )


async def _operation_parameters(request: Request) -> dict[str, list[str]]:
    """Parameters from the query string and, for POST, from a Parameters body."""
    values: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        values.setdefault(name, []).extend(v for v in value.split(",") if v)
    if request.method == "POST" and await request.body():
        body = await read_resource(request)
        if body.get("resourceType") != "Parameters":
            raise FhirError("the body of an operation must be a Parameters resource")
        parameters = body.get("parameter") or []
        if not isinstance(parameters, list) or not all(isinstance(p, dict) for p in parameters):
            raise FhirError(
                "Parameters.parameter must be a list of objects", expression="Parameters.parameter"
            )
        for parameter in parameters:
            given = next((v for k, v in parameter.items() if k.startswith("value")), None)
            if isinstance(given, str | int):
                values.setdefault(str(parameter.get("name")), []).append(str(given))
    for name, given in values.items():
        if len(given) > MAX_VALUES:
            raise FhirError(f"{name[:50]!r} may carry at most {MAX_VALUES} values")
    return values


def _searchset(ctx: IngestContext, found: list[StoredSubscription], self_url: str) -> JsonObject:
    entries = []
    for stored in found:
        parameters = status_parameters(ctx.settings.fhir_base, _state(stored), QUERY_STATUS)
        entries.append(
            {
                "fullUrl": f"urn:uuid:{parameters['id']}",
                "resource": parameters,
                "search": {"mode": "match"},
            }
        )
    return {
        "resourceType": "Bundle",
        "id": new_id(),
        "type": "searchset",
        "timestamp": format_instant(utc_now()),
        "total": len(entries),
        "link": [{"relation": "self", "url": self_url}],
        "entry": entries,
    }


@router.api_route(
    "/Subscription/$status", methods=["GET", "POST"], dependencies=[require("Subscription", "s")]
)
async def status_of_many(request: Request, ctx: Ctx, who: CallerDep) -> Response:
    """Type-level $status: the subscriptions named by `id` (all when none), filtered by `status`."""
    parameters = await _operation_parameters(request)
    ids = parameters.get("id", [])
    statuses = set(parameters.get("status", []))
    async with ctx.database.read() as connection:
        if ids:
            found = [s for i in dict.fromkeys(ids) if (s := await registry.get(connection, i))]
        else:
            found = await registry.changed_since(connection, 0)
    found = [
        s
        for s in found
        if not s.deleted and owns(who, s.owner) and (not statuses or s.status in statuses)
    ]
    return FhirResponse(_searchset(ctx, found[:MAX_STATUS], str(request.url)))


@router.api_route(
    "/Subscription/{subscription_id}/$status",
    methods=["GET", "POST"],
    dependencies=[require("Subscription", "r")],
)
async def status_of_one(
    subscription_id: str, request: Request, ctx: Ctx, who: CallerDep
) -> Response:
    """Instance-level $status: a searchset Bundle with the subscription's status Parameters."""
    stored = await stored_subscription(ctx, subscription_id, who)
    return FhirResponse(_searchset(ctx, [stored], str(request.url)))


def _number(values: list[str], name: str) -> int | None:
    if not values:
        return None
    number = whole_number(values[0]) if len(values) == 1 else None
    if number is None:
        raise FhirError(f"{name} must be one non-negative event number, got {values!r:.200}")
    return number


@router.api_route(
    "/Subscription/{subscription_id}/$events",
    methods=["GET", "POST"],
    dependencies=[require("Subscription", "r")],
)
async def events_of_one(
    subscription_id: str, request: Request, ctx: Ctx, who: CallerDep
) -> Response:
    """$events: the stored events of a subscription as a history Bundle (query-event)."""
    parameters = await _operation_parameters(request)
    since = _number(parameters.get("eventsSinceNumber", []), "eventsSinceNumber") or 1
    until = _number(parameters.get("eventsUntilNumber", []), "eventsUntilNumber")
    stored = await stored_subscription(ctx, subscription_id, who)
    own = parse_subscription(stored.resource, ctx.topics, STORED_POLICY).content
    content = (parameters.get("content") or [own])[0]
    if content not in CONTENT_CODES:
        raise FhirError(f"content must be one of {', '.join(CONTENT_CODES)}, got {content!r}")
    async with ctx.database.read() as connection:
        logged = await event_log.between(connection, subscription_id, since, until, MAX_EVENTS)
        events = await event_log.as_notification_events(
            connection, logged, with_resources=content == "full-resource"
        )
    base = ctx.settings.fhir_base
    # What the caller may not read (no read scope on the type, or a Task since moved to another
    # organization of a tenant) stays id-only.
    events = [
        e
        if e.resource is None
        or (who.allows(e.resource_type, "r") and may_see(who, e.resource, base))
        else replace(e, resource=None)
        for e in events
    ]
    bundle = notification_bundle(
        ctx.settings.fhir_base,
        _state(stored, content),
        QUERY_EVENT,
        events,
        timestamp=format_instant(utc_now()),
    )
    return FhirResponse(bundle)
