"""The Canvas source: `POST /canvas/integration-tasks` and Herald's CodeSystems at /fhir/CodeSystem.

A snapshot (`canvas-integration-task-snapshot/1`) is mapped to a Task by `herald.core.canvas`
and applied in one transaction that reads the current Task with its row locked (PostgreSQL) or
under the single-writer lock (SQLite), decides (created, updated, unchanged, stale), and writes
the new version together with its change event (the outbox), as every Task write does.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from herald.core.canvas import (
    Decision,
    Outcome,
    Snapshot,
    code_systems,
    decide,
    document_type_code_system,
    parse_snapshot,
)
from herald.core.errors import (
    InvalidResource,
    ResourceNotFound,
    SearchParameterError,
    Unauthorized,
    UnsupportedMediaType,
)
from herald.core.fhir import is_valid_id
from herald.core.resources import validate_task
from herald.core.types import JsonObject
from herald.ingest import writes
from herald.ingest.context import Ctx, IngestContext
from herald.ingest.fhirhttp import FhirResponse, check_accept, read_body, searchset, versioned
from herald.runtime.packaged import fhir_xml
from herald.runtime.store.resources import StoredResource

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Herald-Signature"
OUTCOME_HEADER = "X-Herald-Canvas-Outcome"
_JSON_TYPES = {"application/json", "application/fhir+json", "json", "application/json+fhir"}

router = APIRouter(dependencies=[Depends(check_accept)])


def signature(secret: str, body: bytes) -> str:
    """The X-Herald-Signature value of a body: sha256=<hex HMAC-SHA256>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_signature(secret: str | None, body: bytes, header: str | None) -> None:
    """Refuse the request unless it carries the body's signature (when a secret is set)."""
    if not secret:
        return
    if not header:
        raise Unauthorized(f"the {SIGNATURE_HEADER} header is missing")
    expected = signature(secret, body)
    if not hmac.compare_digest(expected.encode(), header.strip().lower().encode()):
        raise Unauthorized(f"the {SIGNATURE_HEADER} header does not match the body")


async def apply_snapshot(ctx: IngestContext, snapshot: Snapshot) -> tuple[Outcome, JsonObject]:
    """Apply a snapshot; the outcome and the Task now current."""
    decision: Decision | None = None
    stored: JsonObject | None = None

    def plan(previous: StoredResource | None) -> JsonObject | None:
        # Runs again when two first snapshots of one task raced: the loser decides on top of
        # the winner (as a later snapshot, an identical one, or a stale one).
        nonlocal decision, stored
        stored = None if previous is None or previous.deleted else previous.resource
        decision = decide(snapshot, stored, ctx.settings.fhir_base)
        return (
            None if decision.task is None else validate_task(decision.task, definitions=fhir_xml())
        )

    written = await writes.write_version(ctx, "Task", snapshot.task_id, plan)
    assert decision is not None
    if written is None:
        assert stored is not None
        return decision.outcome, stored
    assert written.resource is not None
    return decision.outcome, written.resource


@router.post("/canvas/integration-tasks")
@router.post("/fhir/canvas/integration-tasks", include_in_schema=False)
async def post_snapshot(request: Request, ctx: Ctx) -> Response:
    """Take a Canvas IntegrationTask snapshot; answer with the Task now current.

    201 when it created the Task, 200 otherwise; the X-Herald-Canvas-Outcome header says
    created, updated, unchanged (same content, no new version) or stale (older than the stored
    Task, or the task was deleted in Canvas; nothing changed).
    """
    content_type = request.headers.get("content-type", "application/json")
    if content_type.split(";")[0].strip().lower() not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {content_type!r}; a snapshot is application/json"
        )
    body = await read_body(request)
    check_signature(ctx.settings.canvas_secret, body, request.headers.get(SIGNATURE_HEADER))
    if not body:
        raise InvalidResource("the request has no body")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidResource(f"the body is not valid JSON: {exc}") from exc
    snapshot = parse_snapshot(document)
    outcome, task = await apply_snapshot(ctx, snapshot)
    ctx.metrics.canvas_snapshots.labels(outcome.value).inc()
    log.info(
        "canvas snapshot %s",
        outcome.value,
        extra={
            "task_id": snapshot.task_id,
            "canvas_event": snapshot.event_name,
            "version_id": task["meta"]["versionId"],
        },
    )
    return versioned(
        ctx.settings.fhir_base,
        task,
        201 if outcome is Outcome.CREATED else 200,
        headers={OUTCOME_HEADER: outcome.value},
    )


# -- CodeSystem read and search -------------------------------------------------------------------

_SEARCH_PARAMETERS = {"_id", "url", "name", "status", "_format", "_pretty"}


def _code_systems(ctx: IngestContext) -> dict[str, JsonObject]:
    return {cs["id"]: cs for cs in code_systems(ctx.settings.fhir_base)}


@router.get("/fhir/CodeSystem/canvas/{instance}/document-type")
async def read_document_types(instance: str, ctx: Ctx) -> Response:
    """The document-type CodeSystem of a Canvas instance, at its canonical URL."""
    if not is_valid_id(instance):
        raise ResourceNotFound(f"CodeSystem/canvas/{instance}/document-type is not known")
    return FhirResponse(document_type_code_system(ctx.settings.fhir_base, instance))


@router.get("/fhir/CodeSystem/{code_system_id}")
async def read_code_system(code_system_id: str, ctx: Ctx) -> Response:
    """One of Herald's CodeSystems."""
    found = _code_systems(ctx).get(code_system_id)
    if found is None:
        raise ResourceNotFound(f"CodeSystem/{code_system_id} is not known")
    return FhirResponse(found)


@router.get("/fhir/CodeSystem")
async def search_code_systems(
    request: Request,
    ctx: Ctx,
    _id: Annotated[str | None, Query(alias="_id")] = None,
    url: str | None = None,
    name: str | None = None,
    status: str | None = None,
) -> Response:
    """Search Herald's CodeSystems by _id, url, name (starts with, any case) or status."""
    unknown = sorted(set(request.query_params) - _SEARCH_PARAMETERS)
    if unknown:
        raise SearchParameterError(
            f"unsupported CodeSystem search parameter(s): {', '.join(unknown)}; "
            "supported: _id, url, name, status"
        )

    def matches(cs: JsonObject) -> bool:
        return (
            (_id is None or cs["id"] in _id.split(","))
            and (url is None or cs["url"] in url.split(","))
            and (
                name is None
                or any(cs["name"].lower().startswith(n.lower()) for n in name.split(","))
            )
            and (status is None or cs["status"] in status.split(","))
        )

    found = [cs for cs in _code_systems(ctx).values() if matches(cs)]
    return FhirResponse(searchset(ctx.settings.fhir_base, str(request.url), found))
