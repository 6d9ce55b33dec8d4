"""The plugin against a real `herald run` (from the repository's environment, when it exists)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from canvas_sdk.test_utils.factories import StaffFactory
from canvas_sdk.test_utils.factories.integration_task import (
    IntegrationTaskFactory,
    IntegrationTaskReviewFactory,
)

from herald_canvas.handlers.forward import ForwardDocumentEvents
from herald_canvas.handlers.reconcile import ReconcileIntegrationTasks
from tests.conftest import SECRET
from tests.test_plugin import event

REPO = Path(__file__).resolve().parents[3]
HERALD_PYTHON = Path(os.environ.get("HERALD_PYTHON", REPO / ".venv/bin/python"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def herald_url(tmp_path: Path) -> Iterator[str]:
    if not HERALD_PYTHON.exists():
        pytest.skip(f"no Herald environment at {HERALD_PYTHON} (run `make` in the repository)")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "DJANGO"))}
    env.update(
        HERALD_PORT=str(port),
        HERALD_DATABASE_URL=f"sqlite:///{tmp_path / 'herald.db'}",
        HERALD_CANVAS_SECRET=SECRET,
        HERALD_LOG_FORMAT="text",
    )
    log = (tmp_path / "herald.log").open("wb")
    process = subprocess.Popen(
        [str(HERALD_PYTHON), "-m", "herald.cli", "run"], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert process.poll() is None, (tmp_path / "herald.log").read_text()
            assert time.monotonic() < deadline, "herald run did not get ready"
            time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        log.close()


def test_plugin_snapshots_become_herald_tasks(herald_url: str) -> None:
    secrets = {"HERALD_URL": herald_url, "HERALD_SECRET": SECRET, "CANVAS_INSTANCE": "acme"}
    staff = StaffFactory.create(first_name="Youta", last_name="Priti")
    task = IntegrationTaskFactory.create(status="UNR", channel="document_upload", type="")
    IntegrationTaskReviewFactory.create(task=task, reviewer=staff, document_key="lab")

    ForwardDocumentEvents(event("DOCUMENT_RECEIVED", str(task.id)), secrets=secrets).compute()
    read = requests.get(f"{herald_url}/fhir/Task/{task.id}", timeout=10)
    assert read.status_code == 200, read.text
    fhir = read.json()
    assert fhir["status"] == "requested" and fhir["intent"] == "order"
    assert fhir["owner"]["reference"] == f"Practitioner/{staff.id}"
    assert fhir["for"]["reference"] == f"Patient/{task.patient.id}"
    assert fhir["code"]["coding"][0]["code"] == "document_upload"
    assert fhir["meta"]["versionId"] == "1"

    # The reconciliation re-sends the same state: Herald keeps one version.
    ReconcileIntegrationTasks(event("CRON", "2026-08-20T15:05:00+00:00"), secrets=secrets).execute()
    assert (
        requests.get(f"{herald_url}/fhir/Task/{task.id}", timeout=10).json()["meta"]["versionId"]
        == "1"
    )

    # Deleted in Canvas: entered-in-error in Herald.
    ForwardDocumentEvents(
        event("DOCUMENT_DELETED", str(task.id), {"document": {"id": str(task.id)}}),
        secrets=secrets,
    ).compute()
    deleted = requests.get(f"{herald_url}/fhir/Task/{task.id}", timeout=10).json()
    assert deleted["status"] == "entered-in-error" and deleted["meta"]["versionId"] == "2"

    # A wrong secret is refused (401) and the task is kept for the next run.
    wrong = {**secrets, "HERALD_SECRET": "whsec_d3Jvbmctc2VjcmV0LW9mLWF0LWxlYXN0LTE2"}
    other = IntegrationTaskFactory.create()
    ForwardDocumentEvents(event("DOCUMENT_RECEIVED", str(other.id)), secrets=wrong).compute()
    assert requests.get(f"{herald_url}/fhir/Task/{other.id}", timeout=10).status_code == 404
