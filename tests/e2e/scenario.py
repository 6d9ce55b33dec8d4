"""The backbone scenario, run against Herald however it was started."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from tests.support.fhir import BACKPORT, FHIR_JSON, HREX_TOPIC, backport_subscription
from tests.support.receiver import Receiver
from tests.support.smart import fhir_client

__all__ = ["BACKPORT", "FHIR_JSON", "HREX_TOPIC"]


def subscription(endpoint: str, owner: str, token: str) -> dict[str, Any]:
    """A backport Subscription to the HRex Task topic, filtered by owner, id-only."""
    return backport_subscription(
        endpoint,
        f"Task?owner={owner}",
        reason="end-to-end test",
        headers=[f"Authorization: Bearer {token}"],
    )


def task(task_id: str, owner: str, status: str = "requested") -> dict[str, Any]:
    """A Task as a client writes it."""
    return {
        "resourceType": "Task",
        "id": task_id,
        "status": status,
        "intent": "order",
        "owner": {"reference": owner},
    }


def put(client: httpx.Client, resource: dict[str, Any]) -> httpx.Response:
    """PUT a resource to its URL."""
    return client.put(
        f"/{resource['resourceType']}/{resource['id']}",
        json=resource,
        headers={"Content-Type": FHIR_JSON},
    )


def wait_status(
    client: httpx.Client, subscription_id: str, status: str, timeout: float = 30
) -> None:
    """Poll until the subscription reaches a status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get(f"/Subscription/{subscription_id}").json()["status"] == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"Subscription/{subscription_id} did not become {status}")


def run_backbone(base_url: str, receiver: Receiver) -> None:
    """Subscription, handshake, active, a matching Task notified once as event 1, others not."""
    token = uuid.uuid4().hex
    owner = f"Organization/{uuid.uuid4().hex[:8]}"
    with fhir_client(base_url) as client:
        created = client.post(
            "/Subscription",
            json=subscription(receiver.url, owner, token),
            headers={"Content-Type": FHIR_JSON},
        )
        assert created.status_code == 201, created.text
        body = created.json()
        sub_id = body["id"]
        assert body["status"] == "requested"
        assert body["channel"]["header"] == [f"Authorization: Bearer {token}"]
        assert body["channel"]["payload"] == FHIR_JSON
        assert created.headers["Location"].startswith(f"{base_url}/Subscription/{sub_id}")

        receiver.wait_for(lambda r: len(r.of_kind("handshake")) == 1)
        handshake = receiver.of_kind("handshake")[0]
        assert handshake.parameters["status"] == "requested"
        assert handshake.parameters["events-since-subscription-start"] == "0"
        wait_status(client, sub_id, "active")

        matching = task(f"match-{uuid.uuid4().hex[:8]}", owner)
        assert put(client, matching).status_code == 201
        receiver.wait_for(lambda r: len(r.of_kind("event-notification")) >= 1)

        other = task(f"other-{uuid.uuid4().hex[:8]}", "Organization/someone-else")
        draft = task(f"draft-{uuid.uuid4().hex[:8]}", owner, status="draft")
        assert put(client, other).status_code == 201
        assert put(client, draft).status_code == 201
        time.sleep(3)  # time for a wrong notification to arrive, if Herald were to send one

        events = receiver.of_kind("event-notification")
        assert len(events) == 1, [e.body for e in events]
        note = events[0]
        assert note.headers["Authorization"] == f"Bearer {token}"
        assert note.headers["Content-Type"].startswith(FHIR_JSON)
        assert note.body["type"] == "history"
        assert note.parameters["status"] == "active"
        assert note.parameters["events-since-subscription-start"] == "1"
        assert note.event_numbers == [1]
        focus = note.parameters["notification-event"][0]["focus"]["valueReference"]["reference"]
        assert focus.endswith(f"Task/{matching['id']}")
        status_entry = note.body["entry"][0]
        assert status_entry["request"]["url"].endswith(f"Subscription/{sub_id}/$status")
        for entry in note.body["entry"]:
            assert "request" in entry and "response" in entry
        for entry in note.body["entry"][1:]:
            assert "resource" not in entry
            assert entry["fullUrl"].endswith(f"Task/{matching['id']}")

        read = client.get(f"/Task/{matching['id']}")
        assert read.status_code == 200
        assert read.json()["meta"]["versionId"] == "1"
        assert read.json()["owner"] == {"reference": owner}


def run_bad_input(base_url: str) -> None:
    """Malformed bodies get a 400 OperationOutcome and store nothing."""
    task_id = f"bad-{uuid.uuid4().hex[:8]}"
    headers = {"Content-Type": FHIR_JSON}
    cases = [
        b'{"resourceType": "Task", ',
        b'{"resourceType": "Patient", "id": "%s"}' % task_id.encode(),
        b'{"resourceType": "Task", "id": "not-%s", "status": "requested", "intent": "order"}'
        % task_id.encode(),
        b'{"resourceType": "Task", "id": "%s", "status": "bogus", "intent": "order"}'
        % task_id.encode(),
    ]
    with fhir_client(base_url) as client:
        for body in cases:
            response = client.put(f"/Task/{task_id}", content=body, headers=headers)
            assert response.status_code == 400, (body, response.text)
            outcome = response.json()
            assert outcome["resourceType"] == "OperationOutcome"
            assert outcome["issue"][0]["diagnostics"]
        assert client.get(f"/Task/{task_id}").status_code == 404
        created = client.post("/Task", content=cases[3], headers=headers)
        assert created.status_code == 400
