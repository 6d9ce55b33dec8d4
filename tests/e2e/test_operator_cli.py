"""The operator's commands against a running Herald: list, show, replay, off, reactivate."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import shlex

import httpx
import orjson
import pytest

from herald.cli import main
from herald.core.notifications import HEARTBEAT, SubscriptionState, notification_bundle
from herald.receiver.app import Receiver
from tests.e2e.conftest import Running, wait

TOPIC = "http://hl7.org/fhir/us/davinci-hrex/SubscriptionTopic/Task"


def _subscribe(client: httpx.Client, name: str, endpoint: str) -> str:
    body = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "operator test",
        "criteria": TOPIC,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "header": ["Authorization: Bearer never-shown"],
        },
    }
    answer = client.post("/Subscription", json=body, headers={"X-Request-ID": f"create-{name}"})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


async def _take(receiver: Receiver, body: bytes) -> None:
    try:
        await receiver.take(body, "application/fhir+json", None)
    finally:
        await receiver.aclose()


def _status(client: httpx.Client, sid: str) -> str:
    return str(client.get(f"/Subscription/{sid}").json()["status"])


def test_operator_commands_act_as_the_api_does(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in running.env.items():
        if name.startswith("HERALD_"):
            monkeypatch.setenv(name, value)

    def herald(command: str) -> str:
        """`herald <command>` in this process (the same code as the console script)."""
        out = io.StringIO()
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level  # main() sets up logging for a process
        try:
            with contextlib.redirect_stdout(out):
                assert main(shlex.split(command)) == 0, out.getvalue()
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
        return out.getvalue()

    fhir = f"http://127.0.0.1:{running.port}/fhir"
    with httpx.Client(base_url=fhir, timeout=10) as client:
        good = _subscribe(client, "good", f"http://127.0.0.1:{running.receiver_port}/notify")
        bad = _subscribe(client, "bad", "http://127.0.0.1:9/notify?token=tok")  # nothing listens
        wait(lambda: _status(client, good) == "active", "the handshake")
        wait(lambda: _status(client, bad) == "error", "the failed handshake")
        for n in (1, 2):
            task = {"resourceType": "Task", "id": f"t{n}", "status": "requested", "intent": "order"}
            written = client.put(f"/Task/t{n}", json=task, headers={"X-Request-ID": f"write-{n}"})
            assert written.headers["X-Request-ID"] == f"write-{n}"
        wait(lambda: "#2 Task/t2 create" in running.received(), "event #2")
        # The request id of each write reached the subscriber with its notification.
        assert re.search(
            rf"handshake Subscription/{good} .* request_id=create-good", running.received()
        )
        # The two writes may reach it in one notification or in two (whichever the dispatcher
        # found committed when it sent); each carries the request ids of its events.
        assert re.search(
            r"#1 Task/t1 create( status=active request_id=write-1\n"
            r"|, #2 Task/t2 create status=active request_id=write-1,write-2\n)",
            running.received(),
        )

        # A receiver that missed the start of the subscription fetches it from $events.
        lines: list[str] = []
        late = Receiver(lines.append)
        handshake = notification_bundle(
            fhir, SubscriptionState(good, TOPIC, "active", 2), HEARTBEAT, timestamp="2026-01-01"
        )
        asyncio.run(_take(late, orjson.dumps(handshake)))
        assert [line.split(" ", 1)[1] for line in lines[1:]] == [
            "  recovered #1 Task/t1 create",
            "  recovered #2 Task/t2 create",
        ]
        assert "gap: missed #1..#2, fetching from $events" in lines[0]

        errors = herald("subscriptions list --status error")
        assert bad in errors and good not in errors
        assert "token=***" in errors and "token=tok" not in errors

        shown = herald(f"subscriptions show {bad}")
        assert "  status       error\n  error        handshake failed: could not connect" in shown
        assert re.search(r"handshake\s+connection_error: could not connect", shown)
        assert "never-shown" not in shown and "headers      1 (values not shown)" in shown
        # The dispatcher stores delivered positions and attempts in batches, just after the POST.
        wait(
            lambda: "delivered through #2;" in herald(f"subscriptions show {good}"),
            "delivered position #2 stored",
        )
        shown = herald(f"subscriptions show {good}")
        assert "events       2 (delivered through #2; 0 undelivered)" in shown
        assert re.search(r"event #[12]\.\.#2\s+success: HTTP 200", shown)

        replayed = herald(f"subscriptions replay {good} --since 1 --until 2")
        assert replayed.splitlines() == [
            replayed.splitlines()[0],
            "2 event(s) replayed",
        ] and replayed.startswith("#1..#2: success, HTTP 200")
        wait(lambda: "(duplicate), #2 Task/t2 create (duplicate)" in running.received(), "replay")

        assert herald(f"subscriptions off {good}") == (f"Subscription/{good}: active -> off\n")
        assert _status(client, good) == "off"
        assert herald("subscriptions reactivate --all-in-error") == (
            f"Subscription/{bad}: error -> requested\n"
        )
        # The API's path: a new handshake (it fails again: nothing listens there). Version 3:
        # the server's move to error after the first handshake was version 2.
        assert client.get(f"/Subscription/{bad}").json()["meta"]["versionId"] == "3"
        wait(lambda: _status(client, bad) == "error", "the second failed handshake")
        history = herald(f"subscriptions show {bad}")
        assert len(re.findall(r"handshake\s+connection_error", history)) == 2
