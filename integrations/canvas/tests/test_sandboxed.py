"""The handlers as the plugin runner runs them: compiled and executed in Canvas's sandbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from canvas_sdk.test_utils.factories.integration_task import (
    IntegrationTaskFactory,
    IntegrationTaskReviewFactory,
)
from plugin_runner.plugin_runner import load_plugin_handlers

from tests.conftest import Herald
from tests.test_plugin import PLUGIN, event, signed


def sandboxed() -> dict[str, Any]:
    manifest = json.loads((PLUGIN / "CANVAS_MANIFEST.json").read_text())
    results = load_plugin_handlers("herald_canvas", PLUGIN, manifest["components"]["handlers"])
    assert [r.error for r in results] == [None, None]
    return {r.handler_class: r.scope[r.handler_class] for r in results if r.scope}


def test_sandboxed_handlers_post_retry_and_reconcile(
    herald: Herald, secrets: dict[str, str]
) -> None:
    handlers = sandboxed()
    task = IntegrationTaskFactory.create(status="UNR")
    IntegrationTaskReviewFactory.create(task=task, junked=True)

    herald.statuses = [503]  # the event's post fails: the task waits in the plugin cache
    forward = handlers["ForwardDocumentEvents"](event("DOCUMENT_RECEIVED", str(task.id)), secrets)
    assert forward.compute() == []
    deletion = handlers["ForwardDocumentEvents"](
        event("DOCUMENT_DELETED", "d2194110-5c9a-4842-8733-ef09ea5ead11"), secrets
    )
    herald.statuses = [503]
    assert deletion.compute() == []

    reconcile = handlers["ReconcileIntegrationTasks"](
        event("CRON", datetime.now(UTC).isoformat()), secrets
    )
    assert reconcile.execute() == []
    sent = signed(herald)
    assert [s["event"]["name"] for s in sent[:2]] == ["DOCUMENT_RECEIVED", "DOCUMENT_DELETED"]
    resent = {(s["event"]["name"], s["event"]["target"]) for s in sent[2:]}
    assert ("RECONCILE", str(task.id)) in resent
    assert ("DOCUMENT_DELETED", "d2194110-5c9a-4842-8733-ef09ea5ead11") in resent
    assert sent[0]["reviews"][0]["junked"] is True
