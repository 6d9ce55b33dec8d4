"""History of Tasks and Subscriptions: `GET /{type}/{id}/_history` and `GET /{type}/_history`,
newest version first, paged. A Subscription's history includes the status changes the server
made (handshake → active, error, off).

Result parameters: `_count` (default 50, at most 1000), `_since` (versions changed at or after
that instant) and `_cursor` (only as written in a next link). Each entry carries the version's
resource (none for a deletion), its request (`POST Task`, `PUT Task/x`, `DELETE Task/x`) and its
response (status, ETag, lastModified).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from urllib.parse import quote, unquote

from fastapi import Request
from starlette.responses import Response

from herald.core.errors import ResourceGone, ResourceNotFound, SearchParameterError
from herald.core.fhir import format_instant, new_id, utc_now
from herald.core.search import parse_date_range
from herald.core.types import JsonObject
from herald.ingest import writes
from herald.ingest.auth.access import CallerDep, may_see, owns, require
from herald.ingest.auth.server import Caller
from herald.ingest.context import Ctx, IngestContext
from herald.ingest.fhirhttp import FhirResponse, fhir_router
from herald.ingest.search import DEFAULT_COUNT, MAX_COUNT, is_strict
from herald.runtime.store import subscriptions as registry
from herald.runtime.store.history import HistoryKey, HistoryVersion, history
from herald.runtime.store.search import Cursor

router = fhir_router()

_PARAMETERS = frozenset({"_count", "_since", "_cursor", "_format", "_pretty"})
_STATUS = {"POST": "201", "PUT": "200", "DELETE": "204", "PATCH": "200"}


def _request(version: HistoryVersion, created: bool) -> JsonObject:
    method = version.method or ("DELETE" if version.deleted else "POST" if created else "PUT")
    url = version.resource_type if method == "POST" else f"{version.resource_type}/{version.id}"
    return {"method": method, "url": url}


def _entry(base: str, version: HistoryVersion) -> JsonObject:
    # Without a stored method, a first version (or one after a deletion) was a create.
    created = version.version_id == 1
    request = _request(version, created)
    status = "201" if created and request["method"] == "PUT" else _STATUS[request["method"]]
    entry: JsonObject = {"fullUrl": f"{base}/{version.resource_type}/{version.id}"}
    if not version.deleted:
        entry["resource"] = version.resource
    entry["request"] = request
    entry["response"] = {
        "status": status,
        "etag": f'W/"{version.version_id}"',
        "lastModified": version.last_updated,
    }
    return entry


def _parameters(request: Request) -> tuple[int, str | None, HistoryKey | None]:
    count, since, before = DEFAULT_COUNT, None, None
    strict = is_strict(request.headers.get("prefer"))
    for name, value in request.query_params.multi_items():
        if name == "_count":
            if not value.isdigit():
                raise SearchParameterError(f"_count must be a whole number, not {value!r}")
            count = min(int(value), MAX_COUNT)
        elif name == "_since":
            try:
                since = format_instant(parse_date_range(value).low)
            except ValueError:
                raise SearchParameterError(f"_since must be an instant, not {value!r}") from None
        elif name == "_cursor":
            cursor = Cursor.decode(value)
            rid, _, version = cursor.id.partition("/")
            if cursor.key is None or not version.isdigit():
                raise SearchParameterError(f"Malformed paging cursor {value!r}")
            before = (cursor.key, rid, int(version))
        elif name not in _PARAMETERS and strict:
            raise SearchParameterError(
                f"unknown history parameter {name!r}; supported: _count, _since"
            )
    return count, since, before


Shown = Callable[[HistoryVersion], bool]
"""Which versions the caller may see (a page's others are left out; paging goes on past them)."""


async def _history(
    ctx: IngestContext,
    request: Request,
    resource_type: str,
    resource_id: str | None,
    shown: Shown | None = None,
) -> Response:
    count, since, before = _parameters(request)
    async with ctx.database.read() as connection:
        versions = await history(
            connection, resource_type, resource_id, since=since, count=count + 1, before=before
        )
    base = ctx.settings.fhir_base
    page = versions[:count]
    path = f"{base}/{resource_type}" + (f"/{resource_id}" if resource_id else "") + "/_history"
    own = "&".join(
        part
        for part in request.url.query.split("&")
        if part and unquote(part.partition("=")[0]) != "_cursor"
    )
    links = [{"relation": "self", "url": path + (f"?{own}" if own else "")}]
    if len(versions) > count and page:
        last = page[-1]
        cursor = Cursor(last.last_updated, f"{last.id}/{last.version_id}").encode()
        separator = "&" if own else ""
        links.append({"relation": "next", "url": f"{path}?{own}{separator}_cursor={quote(cursor)}"})
    bundle: JsonObject = {
        "resourceType": "Bundle",
        "id": new_id(),
        "type": "history",
        "timestamp": format_instant(utc_now()),
        "link": links,
    }
    entries = [_entry(base, v) for v in page if shown is None or shown(v)]
    if entries:
        bundle["entry"] = entries
    return FhirResponse(bundle)


def _tenant_tasks(ctx: IngestContext, who: Caller) -> Shown | None:
    """A tenant sees the versions of Tasks of its organizations (a deletion: what was deleted)."""
    if who.organizations is None:
        return None
    base = ctx.settings.fhir_base
    return lambda version: may_see(who, version.resource, base)


@router.get("/Task/_history", dependencies=[require("Task", "s")])
async def task_type_history(request: Request, ctx: Ctx, who: CallerDep) -> Response:
    """Every version of every Task, newest first."""
    return await _history(ctx, request, "Task", None, _tenant_tasks(ctx, who))


@router.get("/Task/{task_id}/_history", dependencies=[require("Task", "r")])
async def task_history(task_id: str, request: Request, ctx: Ctx, who: CallerDep) -> Response:
    """Every version of one Task (deleted or not), newest first."""
    with contextlib.suppress(ResourceGone):  # a deleted Task keeps its history
        task = await writes.read(ctx, "Task", task_id)
        if not may_see(who, task, ctx.settings.fhir_base):
            raise ResourceNotFound(f"Task/{task_id} is not known")
    return await _history(ctx, request, "Task", task_id, _tenant_tasks(ctx, who))


@router.get("/Subscription/_history", dependencies=[require("Subscription", "s")])
async def subscription_type_history(request: Request, ctx: Ctx, who: CallerDep) -> Response:
    """Every version of every Subscription the caller owns, newest first."""
    shown = None
    if who.client_id is not None:
        async with ctx.database.read() as connection:
            stored = await registry.changed_since(connection, 0)
        own = {s.id for s in stored if owns(who, s.owner)}
        shown = lambda version: version.id in own  # noqa: E731
    return await _history(ctx, request, "Subscription", None, shown)


@router.get("/Subscription/{subscription_id}/_history", dependencies=[require("Subscription", "r")])
async def subscription_history(
    subscription_id: str, request: Request, ctx: Ctx, who: CallerDep
) -> Response:
    """Every version of one Subscription (deleted or not) the caller owns, newest first."""
    async with ctx.database.read() as connection:
        found = await registry.get(connection, subscription_id)
    # Another client's subscription is not known to this one: 404, never 403.
    if found is None or not owns(who, found.owner):
        raise ResourceNotFound(f"Subscription/{subscription_id} is not known")
    return await _history(ctx, request, "Subscription", subscription_id)
