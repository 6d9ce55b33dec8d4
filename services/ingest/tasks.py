"""Task REST: create, update, read, vread, delete."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from herald.core.errors import Forbidden, ResourceNotFound
from herald.core.resources import validate_task
from herald.core.tenancy import CANVAS_SOURCE, from_canvas
from herald.core.types import JsonObject
from herald.ingest import writes
from herald.ingest.auth.access import CallerDep, may_see, require
from herald.ingest.auth.server import Caller
from herald.ingest.context import Ctx, IngestContext
from herald.ingest.fhirhttp import check_accept, read_resource, versioned
from herald.ingest.writes import WriteGuard

router = APIRouter(dependencies=[Depends(check_accept)])


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
    """Create a Task; the server assigns the id."""
    task = validate_task(await read_resource(request))
    result = await writes.write(ctx, task, None, guard=task_guard(ctx, who, task))
    assert result.resource is not None
    return versioned(ctx.settings.fhir_base, result.resource, 201)


@router.put("/Task/{task_id}", dependencies=[require("Task", "u")])
async def update_task(task_id: str, request: Request, ctx: Ctx, who: CallerDep) -> Response:
    """Update a Task, or create it with the client's id."""
    task = validate_task(await read_resource(request), url_id=task_id)
    result = await writes.write(
        ctx,
        task,
        task_id,
        if_match=request.headers.get("if-match"),
        guard=task_guard(ctx, who, task),
    )
    assert result.resource is not None
    return versioned(ctx.settings.fhir_base, result.resource, 201 if result.created else 200)


def _visible(ctx: IngestContext, who: Caller, task: JsonObject, what: str) -> JsonObject:
    if not may_see(who, task, ctx.settings.fhir_base):
        raise ResourceNotFound(f"{what} is not known")
    return task


@router.get("/Task/{task_id}", dependencies=[require("Task", "r")])
async def read_task(task_id: str, ctx: Ctx, who: CallerDep) -> Response:
    """The current version of a Task."""
    task = await writes.read(ctx, "Task", task_id)
    return versioned(ctx.settings.fhir_base, _visible(ctx, who, task, f"Task/{task_id}"), 200)


@router.get("/Task/{task_id}/_history/{version_id}", dependencies=[require("Task", "r")])
async def vread_task(task_id: str, version_id: str, ctx: Ctx, who: CallerDep) -> Response:
    """One version of a Task."""
    task = await writes.vread(ctx, "Task", task_id, version_id)
    return versioned(
        ctx.settings.fhir_base,
        _visible(ctx, who, task, f"Task/{task_id}/_history/{version_id}"),
        200,
    )


@router.delete("/Task/{task_id}", status_code=204, dependencies=[require("Task", "d")])
async def delete_task(task_id: str, ctx: Ctx, who: CallerDep) -> Response:
    """Delete a Task (deleting an absent Task succeeds too, as FHIR allows)."""
    await writes.delete(ctx, "Task", task_id, guard=task_guard(ctx, who, None))
    return Response(status_code=204)
