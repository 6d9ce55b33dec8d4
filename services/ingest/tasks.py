"""Task REST: create (conditional with If-None-Exist), read (conditional: 304), vread, update
and delete (also conditional on search criteria), JSON Patch, and history."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import jsonpatch
import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from herald.core.errors import InvalidResource, MultipleMatches, UnsupportedMediaType
from herald.core.fhir import FHIR_JSON, utc_now
from herald.core.resources import validate_task
from herald.core.search import Criteria
from herald.core.types import JsonObject
from herald.ingest import writes
from herald.ingest.context import Ctx, IngestContext
from herald.ingest.fhirhttp import check_accept, read_body, read_resource, versioned
from herald.ingest.search import IGNORED, parse_search
from herald.runtime.packaged import fhir_xml
from herald.runtime.store.search import search_ids

router = APIRouter(dependencies=[Depends(check_accept)])

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


async def _matching(ctx: IngestContext, query: str) -> list[str]:
    """The ids of the Tasks a conditional interaction's search criteria select."""
    async with ctx.database.read() as connection:
        return await search_ids(connection, _criteria(query), now=utc_now())


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


@router.post("/Task", status_code=201)
async def create_task(request: Request, ctx: Ctx) -> Response:
    """Create a Task; the server assigns the id. `If-None-Exist`: only if nothing matches."""
    task = validate_task(await read_resource(request), definitions=fhir_xml())
    # The criteria in If-None-Exist, or (as fhirpy's get_or_create sends them) in the URL.
    condition = request.headers.get("if-none-exist")
    if condition is None and _criteria_in(request.url.query):
        condition = request.url.query
    unless = None if condition is None else _criteria(condition.split("?", 1)[-1])
    result = await writes.write(ctx, task, None, unless=unless)
    if result.matched > 1:
        raise MultipleMatches(f"the If-None-Exist criteria match {result.matched} Tasks")
    # A match: FHIR has the server ignore the create and answer 200 with the match.
    return _answer(ctx, request, result.resource, 201 if result.created else 200)


@router.put("/Task")
async def conditional_update(request: Request, ctx: Ctx) -> Response:
    """Update the one Task the search criteria select, or create it when none does."""
    body = await read_resource(request)
    existing = _one(await _matching(ctx, request.url.query), "update")
    if existing is None:
        if "id" in body:
            raise InvalidResource("a conditional update that creates takes no id in the body")
        result = await writes.write(ctx, validate_task(body, definitions=fhir_xml()), None)
    else:
        body.setdefault("id", existing)
        task = validate_task(body, definitions=fhir_xml(), url_id=existing)
        result = await writes.write(ctx, task, existing)
    return _answer(ctx, request, result.resource, 201 if result.created else 200)


@router.put("/Task/{task_id}")
async def update_task(task_id: str, request: Request, ctx: Ctx) -> Response:
    """Update a Task, or create it with the client's id."""
    task = validate_task(await read_resource(request), definitions=fhir_xml(), url_id=task_id)
    result = await writes.write(ctx, task, task_id, if_match=request.headers.get("if-match"))
    return _answer(ctx, request, result.resource, 201 if result.created else 200)


@router.patch("/Task/{task_id}")
async def patch_task(task_id: str, request: Request, ctx: Ctx) -> Response:
    """Change a Task with a JSON Patch (RFC 6902, a list of operations) or a JSON Merge Patch
    (RFC 7386, an object; what fhirpy sends); If-Match honoured."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in PATCH_TYPES:
        raise UnsupportedMediaType(f"PATCH takes {', '.join(PATCH_TYPES)}, not {content_type!r}")
    try:
        operations: Any = orjson.loads(await read_body(request))
        current = await writes.read(ctx, "Task", task_id)
        if isinstance(operations, dict) and content_type != JSON_PATCH:
            patched = merge_patch(current, operations)
        else:
            patched = jsonpatch.apply_patch(current, operations)
    except (
        orjson.JSONDecodeError,
        jsonpatch.JsonPatchException,
        jsonpatch.JsonPointerException,
    ) as exc:
        raise InvalidResource(f"the JSON Patch cannot be applied: {exc}") from exc
    if not isinstance(patched, dict):
        raise InvalidResource("the JSON Patch must leave a Task")
    if_match = request.headers.get("if-match") or f'W/"{current["meta"]["versionId"]}"'
    task = validate_task(patched, definitions=fhir_xml(), url_id=task_id)
    result = await writes.write(ctx, task, task_id, if_match=if_match)
    return _answer(ctx, request, result.resource, 200)


@router.get("/Task/{task_id}")
async def read_task(task_id: str, request: Request, ctx: Ctx) -> Response:
    """The current version of a Task (304 when If-None-Match or If-Modified-Since say so)."""
    task = await writes.read(ctx, "Task", task_id)
    return versioned(ctx.settings.fhir_base, task, 200, request)


@router.get("/Task/{task_id}/_history/{version_id}")
async def vread_task(task_id: str, version_id: str, request: Request, ctx: Ctx) -> Response:
    """One version of a Task."""
    task = await writes.vread(ctx, "Task", task_id, version_id)
    return versioned(ctx.settings.fhir_base, task, 200, request)


@router.delete("/Task/{task_id}", status_code=204)
async def delete_task(task_id: str, ctx: Ctx) -> Response:
    """Delete a Task (deleting an absent Task succeeds too, as FHIR allows)."""
    await writes.delete(ctx, "Task", task_id)
    return Response(status_code=204)


@router.delete("/Task", status_code=204)
async def conditional_delete(request: Request, ctx: Ctx) -> Response:
    """Delete the one Task the search criteria select (none: nothing to do)."""
    existing = _one(await _matching(ctx, request.url.query), "delete")
    if existing is not None:
        await writes.delete(ctx, "Task", existing)
    return Response(status_code=204)
