"""Snapshots of IntegrationTasks (canvas-integration-task-snapshot/1), signed and posted to Herald.

Runs inside Canvas's plugin sandbox: only allowed imports, and no names starting with "_".
"""

from __future__ import annotations

from base64 import b64decode, b64encode
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from hmac import new as hmac_new
from json import dumps
from typing import Any
from uuid import uuid4

from canvas_sdk.utils import Http
from canvas_sdk.v1.data.integration_task import IntegrationTask, IntegrationTaskReview
from logger import log

SCHEMA = "canvas-integration-task-snapshot/1"
ENDPOINT_PATH = "/canvas/integration-tasks"
SECRET_PREFIX = "whsec_"

# Variables (CANVAS_MANIFEST.json "variables"), configured per installation.
URL_VARIABLE = "HERALD_URL"
SECRET_VARIABLE = "HERALD_SECRET"
INSTANCE_VARIABLE = "CANVAS_INSTANCE"


def instant(value: datetime | None) -> str | None:
    """An ISO 8601 timestamp with offset (naive values are taken as UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def text(value: Any) -> str:
    """A string field that may be null."""
    return "" if value is None else str(value)


def task_body(task: IntegrationTask) -> dict[str, Any]:
    """The integration_task part of a snapshot."""
    provider = task.service_provider
    return {
        "id": str(task.id),
        "dbid": task.dbid,
        "status": task.status,
        "channel": task.channel,
        "type": text(task.type),
        "title": text(task.title),
        "patient_id": task.patient.id if task.patient_id else None,
        "service_provider": None
        if provider is None
        else {
            "id": str(provider.id),
            "first_name": text(provider.first_name),
            "last_name": text(provider.last_name),
            "practice_name": text(provider.practice_name),
            "npi": text(provider.npi),
        },
        "created": instant(task.created),
        "modified": instant(task.modified),
    }


def review_body(review: IntegrationTaskReview) -> dict[str, Any]:
    """One entry of a snapshot's reviews (junked ones included: Herald ignores them)."""
    reviewer = review.reviewer
    team = review.team_reviewer
    return {
        "id": str(review.id),
        "dbid": review.dbid,
        "junked": bool(review.junked),
        "template_name": text(review.template_name),
        "document_key": text(review.document_key),
        "reviewer_id": None if reviewer is None else str(reviewer.id),
        "reviewer_name": ""
        if reviewer is None
        else " ".join(p for p in (text(reviewer.first_name), text(reviewer.last_name)) if p),
        "team_reviewer_id": None if team is None else str(team.id),
        "team_reviewer_name": "" if team is None else text(team.name),
        "created": instant(review.created),
        "modified": instant(review.modified),
    }


def load_task(task_id: str) -> IntegrationTask | None:
    """The IntegrationTask with what the snapshot needs, or None when it is gone."""
    return (
        IntegrationTask.objects.select_related("patient", "service_provider")
        .filter(id=task_id)
        .first()
    )


def reviews_of(task: IntegrationTask) -> list[IntegrationTaskReview]:
    """All reviews of a task, junked ones too."""
    return list(
        IntegrationTaskReview.objects.select_related("reviewer", "team_reviewer")
        .filter(task=task)
        .order_by("dbid")
    )


def build_snapshot(
    instance: str,
    event_name: str,
    task_id: str,
    task: IntegrationTask | None,
    *,
    actor: str | None = None,
    deleted: bool = False,
    deleted_at: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A snapshot: the task as it is now with all its reviews, or a deletion."""
    snapshot: dict[str, Any] = {
        "schema": SCHEMA,
        "instance": instance,
        "event": {
            "name": event_name,
            "target": str(task_id),
            "actor": actor,
            "received_at": instant(now or datetime.now(UTC)),
        },
        "integration_task": None if task is None else task_body(task),
        "reviews": [] if task is None else [review_body(r) for r in reviews_of(task)],
    }
    if deleted:
        snapshot["deleted"] = True
        if deleted_at:
            snapshot["deleted_at"] = deleted_at
    return snapshot


def encode(snapshot: dict[str, Any]) -> bytes:
    """The exact bytes posted (and signed)."""
    return dumps(snapshot, separators=(",", ":"), sort_keys=True).encode("utf-8")


def signature_headers(
    secret: str, body: bytes, message_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    """Standard Webhooks headers: webhook-id, webhook-timestamp (Unix seconds) and
    webhook-signature `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed with the
    base64-decoded part of the `whsec_` secret."""
    message_id = message_id or f"msg_{uuid4().hex}"
    timestamp = int(datetime.now(UTC).timestamp()) if timestamp is None else timestamp
    key = b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = b64encode(hmac_new(key, signed, sha256).digest()).decode("ascii")
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{digest}",
    }


class Settings:
    """The plugin's configuration, from its variables (secrets) and the Canvas environment."""

    def __init__(self, secrets: dict[str, Any], environment: dict[str, Any]) -> None:
        self.url = text(secrets.get(URL_VARIABLE)).strip().rstrip("/")
        self.secret = text(secrets.get(SECRET_VARIABLE))
        self.instance = text(secrets.get(INSTANCE_VARIABLE)).strip() or text(
            environment.get("CUSTOMER_IDENTIFIER")
        )
        self.lookback = timedelta(hours=int(text(secrets.get("RECONCILE_LOOKBACK_HOURS")) or 24))
        self.batch_size = int(text(secrets.get("RECONCILE_BATCH_SIZE")) or 200)

    @property
    def configured(self) -> bool:
        """True when there is somewhere to send snapshots to."""
        return bool(self.url and self.instance)


def post_snapshot(settings: Settings, snapshot: dict[str, Any]) -> bool:
    """Post a snapshot; True when Herald took it (or refused it for good), False to retry.

    2xx: taken. 400, 413, 415, 422: the snapshot itself is wrong, and sending it again would
    not help; it is logged and counted as done. Anything else (401 with a wrong secret, 5xx,
    network errors): False, so the reconciliation sends it again later.
    """
    body = encode(snapshot)
    headers = {"Content-Type": "application/json"}
    if settings.secret:
        try:
            headers.update(signature_headers(settings.secret, body))
        except ValueError:
            log.error("[herald] HERALD_SECRET is not a whsec_<base64> secret; nothing was sent")
            return False
    target = snapshot["event"]["target"]
    try:
        response = Http().post(settings.url + ENDPOINT_PATH, data=body, headers=headers)
    except Exception as error:  # noqa: BLE001 - network errors of any kind: retry later
        log.warning(f"[herald] posting IntegrationTask {target} failed: {error}")
        return False
    if 200 <= response.status_code < 300:
        return True
    if response.status_code in (400, 413, 415, 422):
        log.error(
            f"[herald] Herald refused IntegrationTask {target} ({response.status_code}): "
            f"{response.text[:500]}"
        )
        return True
    log.warning(f"[herald] Herald answered {response.status_code} for IntegrationTask {target}")
    return False
