"""Canvas snapshots posted to `herald run` with authentication on (signed the Standard Webhooks
way), read back as Tasks and as notifications."""

from __future__ import annotations

import base64
import copy
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.scenario import FHIR_JSON, put, subscription, wait_status
from tests.support.herald import herald_env, serving
from tests.support.receiver import Receiver
from tests.support.services import free_port
from tests.support.smart import CANVAS_SECRET, fhir_client, webhook_headers
from tests.unit.test_canvas_mapping import STAFF, example

pytestmark = pytest.mark.e2e

OTHER_SECRET = "whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode()


@pytest.fixture
def herald(tmp_path: Path) -> Iterator[str]:
    """A `herald run` with authentication on and a Canvas secret; yields its root URL."""
    port = free_port()
    env = herald_env(
        database_url=f"sqlite:///{tmp_path / 'herald.db'}",
        port=str(port),
        handshake_delay="0.1",
        canvas_secret=CANVAS_SECRET,
        auth="smart",
    )
    with serving("run", env, tmp_path, port) as root:
        yield root


def send(
    client: httpx.Client, snapshot: Any, *, secret: str = CANVAS_SECRET, **signing: Any
) -> httpx.Response:
    body = orjson.dumps(snapshot)
    return client.post(
        "/canvas/integration-tasks",
        content=body,
        headers=webhook_headers(body, secret=secret, **signing),
    )


def with_task(snapshot: dict[str, Any], task_id: str, **changes: Any) -> dict[str, Any]:
    changed = copy.deepcopy(snapshot)
    changed["integration_task"].update(id=task_id, **changes)
    changed["event"]["target"] = task_id
    return changed


def test_canvas_snapshots_become_tasks_and_notifications(herald: str) -> None:
    task_id = str(uuid.uuid4())
    token = uuid.uuid4().hex
    fhir = fhir_client(f"{herald}/fhir")
    canvas = httpx.Client(base_url=herald, timeout=10)
    with Receiver() as receiver, fhir, canvas:
        created = fhir.post(
            "/Subscription",
            json=subscription(receiver.url, f"Practitioner/{STAFF}", token),
            headers={"Content-Type": FHIR_JSON},
        )
        assert created.status_code == 201, created.text
        sub_id = created.json()["id"]
        wait_status(fhir, sub_id, "active")

        def numbers() -> list[int]:
            return [n for e in receiver.of_kind("event-notification") for n in e.event_numbers]

        def notified(count: int) -> list[int]:
            receiver.wait_for(lambda _: len(numbers()) >= count)
            time.sleep(1.5)  # room for a notification that should not come
            return numbers()

        # New (signed): created and notified as event 1.
        new = with_task(example(), task_id, status="UNR")
        response = send(canvas, new)
        assert response.status_code == 201, response.text
        assert response.headers["X-Herald-Canvas-Outcome"] == "created"
        assert notified(1) == [1]

        # Unsigned, wrongly signed, or signed too long ago: 401, nothing stored.
        unsigned = canvas.post("/canvas/integration-tasks", json=new)
        assert unsigned.status_code == 401
        assert send(canvas, new, secret=OTHER_SECRET).status_code == 401
        assert send(canvas, new, timestamp=time.time() - 400).status_code == 401
        assert send(canvas, new, timestamp=time.time() + 400).status_code == 401

        # A Task from Canvas changes only through the Canvas endpoint.
        stored = fhir.get(f"/Task/{task_id}").json()
        assert stored["meta"]["source"] == "urn:herald:source:canvas"
        assert put(fhir, {**stored, "status": "cancelled"}).status_code == 403
        assert fhir.delete(f"/Task/{task_id}").status_code == 403
        assert fhir.get(f"/Task/{task_id}").json() == stored

        # A delivery sent again with its webhook-id is recognised and changes nothing.
        replay_id = f"msg_{uuid.uuid4().hex}"
        assert (
            send(canvas, new, webhook_id=replay_id).headers["X-Herald-Canvas-Outcome"]
            == "unchanged"
        )
        replayed = send(canvas, new, webhook_id=replay_id)
        assert replayed.status_code == 200
        assert replayed.headers["X-Herald-Canvas-Outcome"] == "replayed"
        assert fhir.get(f"/Task/{task_id}").json()["meta"] == stored["meta"]

        # Repeated: no new version, no notification.
        repeat = send(canvas, new)
        assert (
            repeat.status_code == 200 and repeat.headers["X-Herald-Canvas-Outcome"] == "unchanged"
        )

        # Updated (read), then a stale snapshot (older) that changes nothing.
        read = with_task(example(), task_id, status="REA", modified="2026-08-20T15:10:00+00:00")
        assert send(canvas, read).json()["status"] == "in-progress"
        assert notified(2) == [1, 2]
        stale = send(canvas, new)
        assert stale.headers["X-Herald-Canvas-Outcome"] == "stale"
        assert stale.json()["status"] == "in-progress"

        # Errored, junked, deleted: each one a version and a notification.
        errored = with_task(example(), task_id, status="ERR", modified="2026-08-20T15:20:00+00:00")
        assert send(canvas, errored).json()["status"] == "failed"
        junked = with_task(example(), task_id, status="JUN", modified="2026-08-20T15:30:00+00:00")
        assert send(canvas, junked).json()["status"] == "cancelled"
        deletion = {
            "schema": "canvas-integration-task-snapshot/1",
            "instance": "acme-clinic",
            "event": {"name": "DOCUMENT_DELETED", "target": task_id},
            "integration_task": None,
            "deleted": True,
        }
        deleted = send(canvas, deletion)
        assert deleted.status_code == 200 and deleted.json()["status"] == "entered-in-error"
        assert notified(5) == [1, 2, 3, 4, 5]

        # Malformed: 400 OperationOutcome, nothing changes.
        bad = send(canvas, with_task(example(), task_id, status="NOPE"))
        assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"

        task = fhir.get(f"/Task/{task_id}").json()
        assert task["meta"]["versionId"] == "5"
        assert task["status"] == "entered-in-error"
        assert task["businessStatus"]["coding"][0]["code"] == "JUN"
        assert [
            fhir.get(f"/Task/{task_id}/_history/{v}").json()["status"] for v in range(1, 6)
        ] == [
            "requested",
            "in-progress",
            "failed",
            "cancelled",
            "entered-in-error",
        ]
        focus = receiver.of_kind("event-notification")[-1].parameters["notification-event"][-1]
        assert focus["focus"]["valueReference"]["reference"].endswith(f"Task/{task_id}")
        system = fhir.get("/CodeSystem/canvas-integration-task-status").json()
        assert {c["code"] for c in system["concept"]} == {
            "UNR",
            "UER",
            "REA",
            "ERR",
            "PRO",
            "REV",
            "JUN",
        }
