"""Task REST: create (conditional with If-None-Exist), read (conditional: 304), vread, update
and delete (also conditional on search criteria), JSON Patch, and history."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import jsonpatch
from fastapi import Request
from starlette.responses import Response

from herald.core.errors import (
    Forbidden,
    InvalidResource,
    MultipleMatches,
    ResourceNotFound,
    UnsupportedMediaType,
)
from herald.core.fhir import FHIR_JSON, utc_now
from herald.core.resources import validate_task
from herald.core.search import Criteria
from herald.core.tenancy import CANVAS_SOURCE, from_canvas
from herald.core.types import JsonObject
from herald.ingest import writes
from herald.ingest.auth.access import CallerDep, may_see, require
from herald.ingest.auth.server import Caller
from herald.ingest.context import Ctx, IngestContext
from herald.ingest.fhirhttp import fhir_router, parse_json, read_body, read_resource, versioned
from herald.ingest.search import IGNORED, parse_search
from herald.ingest.writes import WriteGuard
from herald.runtime.packaged import fhir_xml
from herald.runtime.store.search import search_ids

router = fhir_router()

JSON_PATCH = "application/json-patch+json"
PATCH_TYPES = (JSON_PATCH, "application/merge-patch+json", "application/json", FHIR_JSON)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch: objects merge, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def _criteria(query: str) -> Criteria:
    """The search criteria of a conditional interaction (unknown parameters are an error)."""
    criteria = parse_search("Task", query, strict=True).request.criteria
    if not criteria.conditions:
        raise InvalidResource("a conditional interaction needs search criteria")
    return criteria


async def _matching(ctx: IngestContext, query: str, who: Caller) -> list[str]:
    """The ids of the Tasks a conditional interaction's search criteria select (a tenant's:
    among its organizations' Tasks only)."""
    async with ctx.database.read() as connection:
        return await search_ids(
            connection, _criteria(query), now=utc_now(), organizations=who.organizations
        )


def _criteria_in(query: str) -> bool:
    names = {unquote(part.partition("=")[0]) for part in query.split("&") if part}
    return bool(names - IGNORED)


def _one(found: list[str], interaction: str) -> str | None:
    if len(found) > 1:
        raise MultipleMatches(
            f"the criteria of the conditional {interaction} match {len(found)} Tasks"
        )
    return found[0] if found else None


def _answer(ctx: IngestContext, request: Request, task: JsonObject | None, status: int) -> Response:
    assert task is not None  # only a delete writes no content
    return versioned(ctx.settings.fhir_base, task, status, request, write=True)


def task_guard(ctx: IngestContext, who: Caller, incoming: JsonObject | None) -> WriteGuard:
    """Who may replace a Task: not a client when it came from Canvas; a tenant only its own."""
    base = ctx.settings.fhir_base

    def check(current: JsonObject | None) -> None:
        if who.client_id is None:
            return  # the operator, on a Herald without authentication
        if current is not None and not may_see(who, current, base):
            raise ResourceNotFound(f"Task/{current.get('id')} is not known")
        if from_canvas(current):
            raise Forbidden(
                f"Task/{current.get('id') if current else ''} came from Canvas; it is changed and "
                "deleted only through the Canvas endpoint"
            )
        if from_canvas(incoming):
            raise Forbidden(f"meta.source {CANVAS_SOURCE} is reserved for the Canvas endpoint")
        if incoming is not None and not may_see(who, incoming, base):
            raise Forbidden(
                "a client acting for organizations writes only Tasks whose owner or requester "
                f"is one of them ({', '.join(sorted(who.organizations or ()))})"
            )

    return check


@router.post("/Task", status_code=201, dependencies=[require("Task", "c")])
async def create_task(request: Request, ctx: Ctx, who: CallerDep) -> Response:
    """Create a Task; the server assigns the id. `If-None-Exist`: only if nothing matches."""
    task = validate_task(await read_resource(request), definitions=fhir_xml())
    # The criteria in If-None-Exist, or (as fhirpy's get_or_create sends them) in the URL.
    condition = request.headers.get("if-none-exist")
    if condition is None and _criteria_in(request.url.query):
        condition = request.url.query
    unless = None if condition is None else _criteria(condition.split("?", 1)[-1])
    result = await writes.write(
        ctx,
        task,
        None,
        unless=unless,
        within=who.organizations,
        guard=task_guard(ctx, who, task),
    )
    if result.matched > 1:
        raise MultipleMatches(f"the If-None-Exist criteria match {result.matched} Tasks")
    # A match: FHIR has the server ignore the create and answer 200 with the match.
    return _answer(ctx, request, result.resource, 201 if result.created else 200)


@router.put("/Task", dependencies=[require("Task", "u")])
async def conditional_update(request: Request, ctx: Ctx, who: CallerDep) -> Response:
    """Update the one Task the search criteria select, or create it when none does (a tenant's
    criteria select among its organizations' Tasks only)."""
    body = await read_resource(request)
    existing = _one(await _matching(ctx, request.url.query, who), "update")
    if existing is None:
        if "id" in body:
            raise InvalidResource("a conditional update that creates takes no id in the body")
        task = validate_task(body, definitions=fhir_xml())
    else:
        body.setdefault("id", existing)
        task = validate_task(body, definitions=fhir_xml(), url_id=existing)
    result = await writes.write(ctx, task, existing, guard=task_guard(ctx, who, task))
    return _answer(ctx, request, result.resource, 201 if result.created else 200)


@router.put("/Task/{task_id}", dependencies=[require("Task", "u")])
async def update_task(task_id: str, request: Request, ctx: Ctx, who: CallerDep) -> Response:
    """Update a Task, or create it with the client's id."""
    task = validate_task(await read_resource(request), definitions=fhir_xml(), url_id=task_id)
    result = await writes.write(
        ctx,
        task,
        task_id,
        if_match=request.headers.get("if-match"),
        guard=task_guard(ctx, who, task),
    )
    return _answer(ctx, request, result.resource, 201 if result.created else 200)


def _visible(ctx: IngestContext, who: Caller, task: JsonObject, what: str) -> JsonObject:
    if not may_see(who, task, ctx.settings.fhir_base):
        raise ResourceNotFound(f"{what} is not known")
    return task


@router.patch("/Task/{task_id}", dependencies=[require("Task", "u")])
async def patch_task(task_id: str, request: Request, ctx: Ctx, who: CallerDep) -> Response:
    """Change a Task with a JSON Patch (RFC 6902, a list of operations) or a JSON Merge Patch
    (RFC 7386, an object; what fhirpy sends); If-Match honoured."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in PATCH_TYPES:
        raise UnsupportedMediaType(f"PATCH takes {', '.join(PATCH_TYPES)}, not {content_type!r}")
    try:
        operations: Any = parse_json(await read_body(request))
        current = _visible(ctx, who, await writes.read(ctx, "Task", task_id), f"Task/{task_id}")
        if isinstance(operations, dict) and content_type != JSON_PATCH:
            patched = merge_patch(current, operations)
        else:
            patched = jsonpatch.apply_patch(current, operations)
    except (
        jsonpatch.JsonPatchException,
        jsonpatch.JsonPointerException,
    ) as exc:
        raise InvalidResource(f"the JSON Patch cannot be applied: {exc}") from exc
    if not isinstance(patched, dict):
        raise InvalidResource("the JSON Patch must leave a Task")
    if_match = request.headers.get("if-match") or f'W/"{current["meta"]["versionId"]}"'
    task = validate_task(patched, definitions=fhir_xml(), url_id=task_id)
    result = await writes.write(
        ctx, task, task_id, if_match=if_match, guard=task_guard(ctx, who, task)
    )
    return _answer(ctx, request, result.resource, 200)


@router.get("/Task/{task_id}", dependencies=[require("Task", "r")])
async def read_task(task_id: str, request: Request, ctx: Ctx, who: CallerDep) -> Response:
    """The current version of a Task (304 when If-None-Match or If-Modified-Since say so)."""
    task = _visible(ctx, who, await writes.read(ctx, "Task", task_id), f"Task/{task_id}")
    return versioned(ctx.settings.fhir_base, task, 200, request)


@router.get("/Task/{task_id}/_history/{version_id}", dependencies=[require("Task", "r")])
async def vread_task(
    task_id: str, version_id: str, request: Request, ctx: Ctx, who: CallerDep
) -> Response:
    """One version of a Task."""
    task = await writes.vread(ctx, "Task", task_id, version_id)
    what = f"Task/{task_id}/_history/{version_id}"
    return versioned(ctx.settings.fhir_base, _visible(ctx, who, task, what), 200, request)


@router.delete("/Task/{task_id}", status_code=204, dependencies=[require("Task", "d")])
async def delete_task(task_id: str, ctx: Ctx, who: CallerDep) -> Response:
    """Delete a Task (deleting an absent Task succeeds too, as FHIR allows)."""
    await writes.delete(ctx, "Task", task_id, guard=task_guard(ctx, who, None))
    return Response(status_code=204)


@router.delete("/Task", status_code=204, dependencies=[require("Task", "d")])
async def conditional_delete(request: Request, ctx: Ctx, who: CallerDep) -> Response:
    """Delete the one Task the search criteria select (none: nothing to do)."""
    existing = _one(await _matching(ctx, request.url.query, who), "delete")
    if existing is not None:
        await writes.delete(ctx, "Task", existing, guard=task_guard(ctx, who, None))
    return Response(status_code=204)
