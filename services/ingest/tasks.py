"""Task REST: create, update, read, vread, delete."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from herald.core.resources import validate_task
from herald.ingest import writes
from herald.ingest.context import Ctx
from herald.ingest.fhirhttp import check_accept, read_resource, versioned
from herald.runtime.packaged import fhir_xml

router = APIRouter(dependencies=[Depends(check_accept)])


@router.post("/Task", status_code=201)
async def create_task(request: Request, ctx: Ctx) -> Response:
    """Create a Task; the server assigns the id."""
    task = validate_task(await read_resource(request), definitions=fhir_xml())
    result = await writes.write(ctx, task, None)
    assert result.resource is not None
    return versioned(ctx.settings.fhir_base, result.resource, 201)


@router.put("/Task/{task_id}")
async def update_task(task_id: str, request: Request, ctx: Ctx) -> Response:
    """Update a Task, or create it with the client's id."""
    task = validate_task(await read_resource(request), definitions=fhir_xml(), url_id=task_id)
    result = await writes.write(ctx, task, task_id, if_match=request.headers.get("if-match"))
    assert result.resource is not None
    return versioned(ctx.settings.fhir_base, result.resource, 201 if result.created else 200)


@router.get("/Task/{task_id}")
async def read_task(task_id: str, ctx: Ctx) -> Response:
    """The current version of a Task."""
    return versioned(ctx.settings.fhir_base, await writes.read(ctx, "Task", task_id), 200)


@router.get("/Task/{task_id}/_history/{version_id}")
async def vread_task(task_id: str, version_id: str, ctx: Ctx) -> Response:
    """One version of a Task."""
    return versioned(
        ctx.settings.fhir_base, await writes.vread(ctx, "Task", task_id, version_id), 200
    )


@router.delete("/Task/{task_id}", status_code=204)
async def delete_task(task_id: str, ctx: Ctx) -> Response:
    """Delete a Task (deleting an absent Task succeeds too, as FHIR allows)."""
    await writes.delete(ctx, "Task", task_id)
    return Response(status_code=204)
