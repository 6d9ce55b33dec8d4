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
from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.exc import IntegrityError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.responses import Response

from herald.core.canvas import Decision, Outcome, Snapshot, code_systems, decide, parse_snapshot
from herald.core.contracts import ResourceChange, encode
from herald.core.errors import (
    FhirError,
    InvalidResource,
    ResourceNotFound,
    SearchParameterError,
    UnsupportedMediaType,
)
from herald.core.fhir import format_instant, new_id, operation_outcome, utc_now
from herald.core.resources import validate_task, with_version
from herald.core.tenancy import CANVAS_SOURCE
from herald.core.types import JsonObject
from herald.ingest.auth.server import one_time_key
from herald.ingest.context import Ctx, IngestContext
from herald.ingest.fhirhttp import FhirResponse, check_accept, read_body, searchset
from herald.runtime.bus.connect import TASK_CHANGES
from herald.runtime.store import clients as store
from herald.runtime.store import outbox, resources, subscriptions

log = logging.getLogger(__name__)

WEBHOOK_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
OUTCOME_HEADER = "X-Herald-Canvas-Outcome"
# A webhook-id is remembered longer than a timestamp stays acceptable (5 minutes either way).
REPLAY_WINDOW_SECONDS = 15 * 60
_JSON_TYPES = {"application/json", "application/fhir+json", "json", "application/json+fhir"}

router = APIRouter(dependencies=[Depends(check_accept)])


class Unauthorized(FhirError):
    """The snapshot's signature is missing or wrong."""

    status_code = 401
    issue_code = "security"


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
    try:
        return await _apply(ctx, snapshot)
    except IntegrityError:
        # Two first snapshots of one task raced to insert it; the loser decides again on top
        # of the winner (as a later snapshot, an identical one, or a stale one).
        return await _apply(ctx, snapshot)


async def _apply(ctx: IngestContext, snapshot: Snapshot) -> tuple[Outcome, JsonObject]:
    async with ctx.database.transaction() as connection:
        previous = await resources.current(connection, "Task", snapshot.task_id, for_update=True)
        stored = None if previous is None or previous.deleted else previous.resource
        decision: Decision = decide(snapshot, stored, ctx.settings.fhir_base)
        if decision.task is None:
            assert stored is not None
            return decision.outcome, stored
        task = validate_task(decision.task)
        task["meta"] = {**(task.get("meta") or {}), "source": CANVAS_SOURCE}
        version_id = 1 if previous is None else previous.version_id + 1
        now = format_instant(utc_now())
        stamped = with_version(task, snapshot.task_id, version_id, now)
        await resources.save(connection, stamped, previous=previous)
        interaction = "create" if stored is None else "update"
        change = ResourceChange(
            event_id=new_id(),
            resource_type="Task",
            resource_id=snapshot.task_id,
            interaction=interaction,
            version_id=str(version_id),
            occurred_at=now,
            current=stamped,
            previous=stored,
            registry_revision=await subscriptions.revision(connection),
        )
        await outbox.add(
            connection, ctx.settings.topic(TASK_CHANGES), snapshot.task_id, encode(change)
        )
    ctx.outbox_written.set()
    ctx.metrics.resource_writes.labels("Task", interaction).inc()
    return decision.outcome, stamped


def _task_response(ctx: IngestContext, task: JsonObject, outcome: Outcome) -> FhirResponse:
    meta = task["meta"]
    return FhirResponse(
        task,
        status_code=201 if outcome is Outcome.CREATED else 200,
        headers={
            "ETag": f'W/"{meta["versionId"]}"',
            "Location": f"{ctx.settings.fhir_base}/Task/{task['id']}/_history/{meta['versionId']}",
            OUTCOME_HEADER: outcome.value,
        },
    )


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
    return _task_response(ctx, task, outcome)


# -- CodeSystem read and search -------------------------------------------------------------------

_SEARCH_PARAMETERS = {"_id", "url", "name", "status", "_format", "_pretty"}


def _code_systems(ctx: IngestContext) -> dict[str, JsonObject]:
    return {cs["id"]: cs for cs in code_systems(ctx.settings.fhir_base)}


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
