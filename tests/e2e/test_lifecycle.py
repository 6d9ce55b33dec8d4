"""Against `herald run`: error and recovery, $status, $events, heartbeats, a subscription end."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import StartHerald
from tests.e2e.scenario import BACKPORT, FHIR_JSON, put, subscription, task, wait_status
from tests.support.receiver import Receiver

pytestmark = pytest.mark.e2e


@pytest.fixture
def client(start_herald: StartHerald) -> httpx.Client:
    """A client of a `herald run`."""
    return start_herald(handshake_attempts="1", retry_delays="0.2,0.2")


def _create(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post("/Subscription", json=body, headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _status_parameters(bundle: dict[str, Any]) -> dict[str, Any]:
    assert bundle["type"] == "searchset"
    parameters = bundle["entry"][0]["resource"]
    return {p["name"]: p for p in parameters["parameter"]}


def test_error_then_reactivation_and_recovery_with_events(client: httpx.Client) -> None:
    owner = f"Organization/{uuid.uuid4().hex[:8]}"
    with Receiver() as receiver:
        sub_id = _create(client, subscription(receiver.url, owner, "t"))
        wait_status(client, sub_id, "active")

        receiver.status = 500
        put(client, task("e1", owner))
        wait_status(client, sub_id, "error")
        read = client.get(f"/Subscription/{sub_id}").json()
        assert "500" in read["error"]
        status = _status_parameters(client.get(f"/Subscription/{sub_id}/$status").json())
        assert status["status"]["valueCode"] == "error"
        assert status["type"]["valueCode"] == "query-status"
        assert "500" in status["error"]["valueCodeableConcept"]["text"]

        # Events keep being numbered while in error; the server does not reactivate by itself.
        put(client, task("e2", owner))
        time.sleep(1.5)
        assert client.get(f"/Subscription/{sub_id}").json()["status"] == "error"
        counted = _status_parameters(client.get(f"/Subscription/{sub_id}/$status").json())
        assert counted["events-since-subscription-start"]["valueString"] == "2"

        receiver.status = 200
        read["status"] = "requested"
        assert client.put(f"/Subscription/{sub_id}", json=read).status_code == 200
        wait_status(client, sub_id, "active")
        assert "error" not in client.get(f"/Subscription/{sub_id}").json()

        events = client.get(f"/Subscription/{sub_id}/$events", params={"eventsSinceNumber": 1})
        bundle = events.json()
        assert bundle["type"] == "history"
        parameters = bundle["entry"][0]["resource"]["parameter"]
        assert {p["name"]: p for p in parameters}["type"]["valueCode"] == "query-event"
        numbers = [
            part["valueString"]
            for p in parameters
            if p["name"] == "notification-event"
            for part in p["part"]
            if part["name"] == "event-number"
        ]
        assert numbers == ["1", "2"]
        focus = [e["fullUrl"].rsplit("/", 2)[-1] for e in bundle["entry"][1:]]
        assert focus == ["e1", "e2"]

        only_two = client.post(
            f"/Subscription/{sub_id}/$events",
            json={
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "eventsSinceNumber", "valueString": "2"},
                    {"name": "content", "valueCode": "full-resource"},
                ],
            },
        ).json()
        assert [e["resource"]["id"] for e in only_two["entry"][1:]] == ["e2"]
        bad = client.get(f"/Subscription/{sub_id}/$events", params={"eventsSinceNumber": "x"})
        assert bad.status_code == 400

        # Re-activated: the missed events are not pushed again, new ones flow.
        put(client, task("e3", owner))
        receiver.wait_for(
            lambda r: any(n.event_numbers == [3] for n in r.of_kind("event-notification"))
        )
        assert [n.event_numbers for n in receiver.of_kind("event-notification")][-1] == [3]
        assert not any(n.event_numbers == [2] for n in receiver.of_kind("event-notification"))


def test_type_level_status_filters_by_id_and_status(client: httpx.Client) -> None:
    with Receiver() as receiver:
        active = _create(client, subscription(receiver.url, "Organization/a", "t"))
        wait_status(client, active, "active")
        receiver.status = 500
        failing = _create(client, subscription(receiver.url, "Organization/b", "t"))
        wait_status(client, failing, "error")

        both = client.get("/Subscription/$status", params={"id": f"{active},{failing}"}).json()
        assert both["total"] == 2
        only_error = client.post(
            "/Subscription/$status",
            json={
                "resourceType": "Parameters",
                "parameter": [{"name": "status", "valueCode": "error"}],
            },
        ).json()
        ids = [
            {p["name"]: p for p in e["resource"]["parameter"]}["subscription"]["valueReference"][
                "reference"
            ].rsplit("/", 1)[-1]
            for e in only_error["entry"]
        ]
        assert ids == [failing]
        assert client.get("/Subscription/unknown/$status").status_code == 404


def test_heartbeat_only_when_asked_for(client: httpx.Client) -> None:
    with Receiver() as receiver:
        with_beat = subscription(receiver.url, "Organization/hb", "beat")
        with_beat["channel"]["extension"] = [
            {"url": BACKPORT + "backport-heartbeat-period", "valueUnsignedInt": 10}
        ]
        beating = _create(client, with_beat)
        quiet = _create(client, subscription(receiver.url, "Organization/q", "quiet"))
        wait_status(client, beating, "active")
        receiver.wait_for(lambda r: len(r.of_kind("heartbeat")) >= 1, timeout=30)
        heartbeats = receiver.of_kind("heartbeat")
        assert {h.headers["Authorization"] for h in heartbeats} == {"Bearer beat"}
        assert heartbeats[0].parameters["status"] == "active"
        assert heartbeats[0].parameters["notification-event"] == []
        assert quiet

        # A heartbeat after two events counts them, as $status does.
        put(client, task("hb1", "Organization/hb"))
        put(client, task("hb2", "Organization/hb"))
        receiver.wait_for(lambda r: r.events() >= 2, timeout=30)
        seen = len(receiver.of_kind("heartbeat"))
        receiver.wait_for(lambda r: len(r.of_kind("heartbeat")) > seen, timeout=30)
        latest = receiver.of_kind("heartbeat")[-1].parameters
        assert latest["events-since-subscription-start"] == "2"


def test_subscription_turns_off_at_its_end(client: httpx.Client) -> None:
    with Receiver() as receiver:
        body = subscription(receiver.url, "Organization/end", "t")
        body["end"] = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
        sub_id = _create(client, body)
        wait_status(client, sub_id, "active")
        wait_status(client, sub_id, "off", timeout=20)


def test_an_end_already_past_when_written_is_ignored(client: httpx.Client) -> None:
    # Conformance suites' sample Subscriptions carry dates such as 2020-12-31.
    with Receiver() as receiver:
        body = subscription(receiver.url, "Organization/old", "t")
        body["end"] = "2020-12-31T23:59:59Z"
        sub_id = _create(client, body)
        wait_status(client, sub_id, "active")
        time.sleep(6)  # one dispatcher scan
        assert client.get(f"/Subscription/{sub_id}").json()["status"] == "active"
