"""The Canvas source: `POST /canvas/integration-tasks` and Herald's CodeSystems at /fhir/CodeSystem.

A snapshot (`canvas-integration-task-snapshot/1`) is mapped to a Task by `herald.core.canvas`
and applied in one transaction that reads the current Task with its row locked (PostgreSQL) or
under the single-writer lock (SQLite), decides (created, updated, unchanged, stale), and writes
the new version together with its change event (the outbox), as every Task write does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Annotated

import orjson
from fastapi import Query, Request
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
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
from herald.core.fhir import is_valid_id, operation_outcome
from herald.core.resources import validate_task
from herald.core.tenancy import CANVAS_SOURCE
from herald.core.types import JsonObject
from herald.ingest import writes
from herald.ingest.auth.server import one_time_key
from herald.ingest.context import Ctx, IngestContext
from herald.ingest.fhirhttp import FhirResponse, fhir_router, read_body, searchset, versioned
from herald.runtime.packaged import fhir_xml
from herald.runtime.store import clients as store
from herald.runtime.store.resources import StoredResource

log = logging.getLogger(__name__)

WEBHOOK_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
OUTCOME_HEADER = "X-Herald-Canvas-Outcome"
# A webhook-id is remembered longer than a timestamp stays acceptable (5 minutes either way).
REPLAY_WINDOW_SECONDS = 15 * 60
_JSON_TYPES = {"application/json", "application/fhir+json", "json", "application/json+fhir"}

router = fhir_router("")


def check_signature(secret: str | None, body: bytes, headers: Mapping[str, str]) -> str | None:
    """Verify a Standard Webhooks delivery (when a secret is set); its webhook-id.

    The signature is v1,<base64 HMAC-SHA256 of "id.timestamp.body">, compared in constant time,
    and the timestamp must be within 5 minutes of now (the standardwebhooks library's checks).
    """
    if not secret:
        return None
    given = {name: headers[name] for name in WEBHOOK_HEADERS if name in headers}
    missing = [name for name in WEBHOOK_HEADERS if name not in given]
    if missing:
        raise Unauthorized(f"the Standard Webhooks header(s) {', '.join(missing)} are missing")
    try:
        Webhook(secret).verify(body, given, json_parse=False)
    except (WebhookVerificationError, ValueError) as exc:
        # ValueError: malformed base64 or signature lists, a body that is not UTF-8.
        reason = str(exc) if isinstance(exc, WebhookVerificationError) else "malformed"
        raise Unauthorized(f"the webhook signature is not valid: {reason}") from exc
    return given["webhook-id"]


async def _seen(ctx: IngestContext, webhook_id: str) -> bool:
    async with ctx.database.read() as connection:
        return await store.seen(connection, "webhook", one_time_key(webhook_id))


async def _remember(ctx: IngestContext, webhook_id: str) -> None:
    now = int(time.time())
    async with ctx.database.transaction() as connection:
        await store.first_sighting(
            connection,
            "webhook",
            one_time_key(webhook_id),
            expires_at=now + REPLAY_WINDOW_SECONDS,
            now=now,
        )


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
        if decision.task is None:
            return None
        task = validate_task(decision.task, definitions=fhir_xml())
        # The mark that makes this Task writable only through this endpoint (see tasks.py).
        return {**task, "meta": {**(task.get("meta") or {}), "source": CANVAS_SOURCE}}

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
    webhook_id = check_signature(ctx.settings.canvas_secret, body, request.headers)
    if webhook_id is not None and await _seen(ctx, webhook_id):
        ctx.metrics.canvas_snapshots.labels("replayed").inc()
        return FhirResponse(
            operation_outcome(
                f"webhook-id {webhook_id!r} was delivered before; nothing changed",
                severity="information",
                code="informational",
            ),
            headers={OUTCOME_HEADER: "replayed"},
        )
    if not body:
        raise InvalidResource("the request has no body")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidResource(f"the body is not valid JSON: {exc}") from exc
    snapshot = parse_snapshot(document)
    outcome, task = await apply_snapshot(ctx, snapshot)
    if webhook_id is not None:
        await _remember(ctx, webhook_id)
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
