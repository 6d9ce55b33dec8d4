"""The Herald plugin on the Canvas SDK's test support: factories on a test database, the sandbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import jsonschema
from canvas_cli.utils.validators.manifest_schema import manifest_schema
from canvas_sdk.events import EventType
from canvas_sdk.test_utils.factories import StaffFactory, TeamFactory
from canvas_sdk.test_utils.factories.integration_task import (
    IntegrationTaskFactory,
    IntegrationTaskReviewFactory,
)
from canvas_sdk.v1.data import IntegrationTask
from plugin_runner.plugin_runner import load_plugin_handlers
from standardwebhooks.webhooks import Webhook

from herald_canvas.handlers.forward import DOCUMENT_EVENTS, ForwardDocumentEvents
from herald_canvas.handlers.reconcile import ReconcileIntegrationTasks
from herald_canvas.pending import PENDING_KEY
from tests.conftest import SECRET, Herald, MemoryCache

PLUGIN = Path(__file__).resolve().parents[1] / "herald_canvas"
SNAPSHOT_SCHEMA = json.loads(
    (
        Path(__file__).resolve().parents[3]
        / "schemas/canvas/canvas-integration-task-snapshot.v1.json"
    ).read_text()
)


def event(name: str, target: str, context: dict[str, Any] | None = None) -> Mock:
    mock = Mock()
    mock.name = name
    mock.type = EventType.Value(name)
    mock.target.id = target
    mock.actor.id = "137"
    mock.context = context if context is not None else {"document": {"id": target}}
    return mock


def signed(herald: Herald) -> list[dict[str, Any]]:
    """The posted snapshots, after checking path, signature and schema of each."""
    for path, headers, body in herald.posts:
        assert path == "/canvas/integration-tasks"
        # The reference implementation of Standard Webhooks verifies what the plugin signed.
        Webhook(SECRET).verify(body, headers, json_parse=False)
        jsonschema.validate(json.loads(body), SNAPSHOT_SCHEMA)
    return herald.bodies()


def test_document_event_posts_the_full_signed_snapshot(
    herald: Herald, secrets: dict[str, str]
) -> None:
    staff = StaffFactory.create(first_name="Youta", last_name="Priti")
    team = TeamFactory.create(name="Front Desk")
    task = IntegrationTaskFactory.create(status="REA", channel="fax", title="Lab results")
    IntegrationTaskReviewFactory.create(
        task=task,
        reviewer=staff,
        team_reviewer=team,
        template_name="Lab Report",
        document_key="lab",
    )
    IntegrationTaskReviewFactory.create(task=task, reviewer=None, junked=True)

    handler = ForwardDocumentEvents(
        event("DOCUMENT_REVIEWER_ASSIGNED", str(task.id)), secrets=secrets
    )
    assert handler.compute() == []

    [snapshot] = signed(herald)
    assert snapshot["schema"] == "canvas-integration-task-snapshot/1"
    assert snapshot["instance"] == "acme-clinic"
    assert snapshot["event"]["name"] == "DOCUMENT_REVIEWER_ASSIGNED"
    assert snapshot["event"]["target"] == str(task.id)
    body = snapshot["integration_task"]
    assert body["id"] == str(task.id) and body["status"] == "REA" and body["channel"] == "fax"
    assert body["patient_id"] == task.patient.id
    assert body["service_provider"]["id"] == str(task.service_provider.id)
    assert datetime.fromisoformat(body["modified"]) == task.modified
    assert len(snapshot["reviews"]) == 2
    active = next(r for r in snapshot["reviews"] if not r["junked"])
    assert active["reviewer_id"] == staff.id and active["reviewer_name"] == "Youta Priti"
    assert active["team_reviewer_id"] == str(team.id)
    assert active["team_reviewer_name"] == "Front Desk"
    assert active["document_key"] == "lab" and active["template_name"] == "Lab Report"


def test_handler_answers_every_document_event() -> None:
    assert set(ForwardDocumentEvents.RESPONDS_TO) == set(DOCUMENT_EVENTS)
    assert "DOCUMENT_RECEIVED" in DOCUMENT_EVENTS and "DOCUMENT_DELETED" in DOCUMENT_EVENTS


def test_deletion_failure_is_remembered_and_resent_by_the_reconciliation(
    herald: Herald, secrets: dict[str, str], cache: MemoryCache
) -> None:
    gone = "d2194110-5c9a-4842-8733-ef09ea5ead11"
    herald.statuses = [503]
    ForwardDocumentEvents(
        event(
            "DOCUMENT_DELETED",
            gone,
            {"document": {"id": gone}, "deleted_at": "2026-08-21T09:00:00+00:00"},
        ),
        secrets=secrets,
    ).compute()
    [deletion] = signed(herald)
    assert deletion["deleted"] is True and deletion["integration_task"] is None
    assert deletion["event"]["target"] == gone
    assert deletion["deleted_at"] == "2026-08-21T09:00:00+00:00"
    assert gone in cache.values[PENDING_KEY]

    ReconcileIntegrationTasks(
        event("CRON", datetime.now(UTC).isoformat()), secrets=secrets
    ).execute()
    assert signed(herald)[1] == deletion
    assert cache.values[PENDING_KEY] == {}


def test_failed_event_post_is_retried_by_the_next_reconciliation(
    herald: Herald, secrets: dict[str, str], cache: MemoryCache
) -> None:
    task = IntegrationTaskFactory.create(status="UNR")
    herald.statuses = [500]
    ForwardDocumentEvents(event("DOCUMENT_RECEIVED", str(task.id)), secrets=secrets).compute()
    assert cache.values[PENDING_KEY] == {str(task.id): None}
    ReconcileIntegrationTasks(
        event("CRON", datetime.now(UTC).isoformat()), secrets=secrets
    ).execute()
    sent = [s["integration_task"]["id"] for s in signed(herald)]
    assert sent[0] == str(task.id) and sent.count(str(task.id)) >= 2
    assert cache.values[PENDING_KEY] == {}


def test_reconciliation_sends_changes_no_event_reports_and_retries_failures(
    herald: Herald, secrets: dict[str, str]
) -> None:
    first = IntegrationTaskFactory.create(status="UNR")
    second = IntegrationTaskFactory.create(status="UNR")

    def run() -> list[dict[str, Any]]:
        before = len(herald.posts)
        ReconcileIntegrationTasks(
            event("CRON", datetime.now(UTC).isoformat()), secrets=secrets
        ).execute()
        return signed(herald)[before:]

    # First run: everything of the look-back window.
    assert {s["integration_task"]["id"] for s in run()} == {str(first.id), str(second.id)}

    # Read (UNR -> REA) and junk raise no Canvas event; the next run finds them. Canvas's
    # auto_now would stamp `modified`; here the test moves it past the cursor's overlap.
    later = datetime.now(UTC) + timedelta(minutes=5)
    IntegrationTask.objects.filter(dbid=first.dbid).update(status="REA", modified=later)
    IntegrationTask.objects.filter(dbid=second.dbid).update(
        status="JUN", modified=later + timedelta(seconds=1)
    )
    herald.statuses = [503]  # the first post fails: nothing past it counts as delivered
    failed = run()
    assert [s["integration_task"]["status"] for s in failed] == ["REA"]
    retried = run()
    assert [(s["integration_task"]["id"], s["integration_task"]["status"]) for s in retried] == [
        (str(first.id), "REA"),
        (str(second.id), "JUN"),
    ]
    assert all(s["event"]["name"] == "RECONCILE" for s in retried)


def test_cron_schedule_and_compute(herald: Herald, secrets: dict[str, str]) -> None:
    IntegrationTaskFactory.create()
    assert ReconcileIntegrationTasks.SCHEDULE == "*/5 * * * *"
    on_time = ReconcileIntegrationTasks(event("CRON", "2026-08-20T15:05:00+00:00"), secrets=secrets)
    assert on_time.compute() == [] and len(herald.posts) == 1
    off_time = ReconcileIntegrationTasks(
        event("CRON", "2026-08-20T15:06:00+00:00"), secrets=secrets
    )
    assert off_time.compute() == [] and len(herald.posts) == 1


def test_unconfigured_plugin_posts_nothing(herald: Herald) -> None:
    task = IntegrationTaskFactory.create()
    ForwardDocumentEvents(event("DOCUMENT_RECEIVED", str(task.id)), secrets={}).compute()
    ReconcileIntegrationTasks(event("CRON", datetime.now(UTC).isoformat()), secrets={}).execute()
    assert herald.posts == []


def test_refused_snapshot_is_not_retried(
    herald: Herald, secrets: dict[str, str], cache: MemoryCache
) -> None:
    task = IntegrationTaskFactory.create()
    herald.statuses = [400]
    ForwardDocumentEvents(event("DOCUMENT_RECEIVED", str(task.id)), secrets=secrets).compute()
    assert len(herald.posts) == 1
    assert cache.values.get(PENDING_KEY, {}) == {}


def test_manifest_is_valid_and_handlers_load_in_the_canvas_sandbox() -> None:
    manifest = json.loads((PLUGIN / "CANVAS_MANIFEST.json").read_text())
    jsonschema.validate(manifest, manifest_schema)
    results = load_plugin_handlers("herald_canvas", PLUGIN, manifest["components"]["handlers"])
    assert [r.error for r in results] == [None, None]
    loaded = {r.handler_class: r.scope for r in results}
    assert set(loaded) == {"ForwardDocumentEvents", "ReconcileIntegrationTasks"}
