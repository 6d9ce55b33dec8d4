"""Write docs/subscribing.md from a real session with Herald.

Starts `herald run` on a temporary SQLite file and a subscriber endpoint on loopback, walks through
create → handshake → notification → read-back → $status → an outage → recovery with $events, and
records every request and response as they really were.

    .venv/bin/python scripts/subscribing_example.py > docs/subscribing.md
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.receiver import Receiver

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC = "http://hl7.org/fhir/us/davinci-hrex/SubscriptionTopic/Task"
JSON = {"Content-Type": "application/fhir+json"}
out: list[str] = []


def say(text: str) -> None:
    out.append(text)


def show(title: str, response: httpx.Response, body: Any = None) -> None:
    request = response.request
    say(f"**{title}**\n\n```http\n{request.method} {request.url.raw_path.decode()} HTTP/1.1")
    if body is not None:
        say("Content-Type: application/fhir+json\n\n" + json.dumps(body, indent=2))
    say("```\n\n```http")
    say(f"HTTP/1.1 {response.status_code} {response.reason_phrase}")
    for name in ("content-type", "location", "etag"):
        if name in response.headers:
            say(f"{name.title()}: {response.headers[name]}")
    if "/Task" in request.url.path and request.method in ("POST", "PUT"):
        # The id that the notifications this write causes carry too.
        say(f"X-Request-ID: {response.headers['x-request-id']}")
    if response.content:
        say("\n" + json.dumps(response.json(), indent=2))
    say("```\n")


def show_received(title: str, received: Any) -> None:
    say(f"**{title}**\n\n```http\nPOST /notify HTTP/1.1")
    for name in ("Content-Type", "Authorization", "X-Request-ID"):
        if name in received.headers:
            say(f"{name}: {received.headers[name]}")
    say("\n" + json.dumps(received.body, indent=2) + "\n```\n")


def wait(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.05)


def main() -> None:
    """Run the session and print the document."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tempfile.mkdtemp()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update(
        HERALD_DATABASE_URL=f"sqlite:///{folder}/herald.db",
        HERALD_PORT=str(port),
        HERALD_RETRY_DELAYS="0.5,0.5",
        HERALD_LOG_LEVEL="WARNING",
    )
    herald = subprocess.Popen([sys.executable, "-m", "herald.cli", "run"], env=env)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        wait(lambda: _ready(port))
        with Receiver() as receiver, httpx.Client(base_url=base, timeout=10) as client:
            _session(client, receiver)
    finally:
        herald.terminate()
        herald.wait(30)
    sys.stdout.write(
        "\n".join(out)
        .replace(str(port), "8080")
        .replace(receiver.url.rsplit(":", 1)[1].split("/")[0], "9000")
        + "\n"
    )


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _session(client: httpx.Client, receiver: Receiver) -> None:
    say(INTRO)
    body = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "Tasks the payer Organization/payer-1 owns",
        "criteria": TOPIC,
        "_criteria": {
            "extension": [
                {
                    "url": BACKPORT + "backport-filter-criteria",
                    "valueString": "Task?owner=Organization/payer-1",
                }
            ]
        },
        "channel": {
            "extension": [{"url": BACKPORT + "backport-max-count", "valuePositiveInt": 10}],
            "type": "rest-hook",
            "endpoint": receiver.url,
            "payload": "application/fhir+json",
            "_payload": {
                "extension": [
                    {"url": BACKPORT + "backport-payload-content", "valueCode": "id-only"}
                ]
            },
            "header": ["Authorization: Bearer secret-token-of-the-subscriber"],
        },
    }
    say("## 1. Create the subscription\n")
    say(CREATE)
    created = client.post("/Subscription", json=body, headers=JSON)
    show("Request and answer", created, body)
    sub_id = created.json()["id"]

    say("## 2. The handshake\n")
    say(HANDSHAKE)
    wait(lambda: len(receiver.of_kind("handshake")) == 1)
    show_received("What the endpoint receives", receiver.of_kind("handshake")[0])
    wait(lambda: client.get(f"/Subscription/{sub_id}").json()["status"] == "active")
    say("After a 2xx answer the subscription is `active`.\n")

    say("## 3. A Task changes: the notification\n")
    task = {
        "resourceType": "Task",
        "id": "prior-auth-42",
        "status": "requested",
        "intent": "order",
        "code": {"text": "Attach clinical notes"},
        "owner": {"reference": "Organization/payer-1"},
    }
    show(
        "The source system writes a Task",
        client.put("/Task/prior-auth-42", json=task, headers=JSON),
        task,
    )
    wait(lambda: len(receiver.of_kind("event-notification")) == 1)
    show_received("The id-only notification", receiver.of_kind("event-notification")[0])
    say(NOTIFICATION)

    say("## 4. Read back what changed\n")
    show("Read the Task", client.get("/Task/prior-auth-42"))

    say("## 5. Check the subscription: `$status`\n")
    show("Instance-level $status", client.get(f"/Subscription/{sub_id}/$status"))

    say("## 6. An outage, and recovery with `$events`\n")
    say(OUTAGE)
    receiver.status = 503
    task["status"] = "in-progress"
    client.put("/Task/prior-auth-42", json=task, headers=JSON)
    wait(lambda: client.get(f"/Subscription/{sub_id}").json()["status"] == "error")
    task["status"] = "completed"
    client.put("/Task/prior-auth-42", json=task, headers=JSON)
    time.sleep(1)
    show("$status while in error", client.get(f"/Subscription/{sub_id}/$status"))
    receiver.status = 200
    show(
        "Fetch the missed events",
        client.get(f"/Subscription/{sub_id}/$events", params={"eventsSinceNumber": 2}),
    )
    current = client.get(f"/Subscription/{sub_id}").json()
    current["status"] = "requested"
    show(
        "Ask for re-activation",
        client.put(f"/Subscription/{sub_id}", json=current, headers=JSON),
        current,
    )
    wait(lambda: client.get(f"/Subscription/{sub_id}").json()["status"] == "active")
    say(AFTER)


INTRO = """# Subscribing to Herald: a worked example

This page was produced by `scripts/subscribing_example.py` against a real Herald (`herald run`)
and a real subscriber endpoint on loopback: every request and answer below is what Herald said.
Hosts are shown as `127.0.0.1:8080` (Herald) and `127.0.0.1:9000` (the subscriber); ids, times and
UUIDs change from run to run (`tests/e2e/test_docs.py` runs it again and compares, but for those).
Every answer carries an `X-Request-ID` (the caller's own, or one Herald makes), and a notification
carries those of the requests behind its events: a write can be followed to every notification it
caused, here and in Herald's logs.

Herald implements the [Subscriptions R5 Backport IG](http://hl7.org/fhir/uv/subscriptions-backport/)
for FHIR R4 and serves the Da Vinci HRex Task topic. The topic fires when a Task that is not a
draft and has `intent=order` is created, or updated while it was and stays so (`requireBoth`).
Filters are FHIR search expressions on the Task: `owner`, `requester`, `status`, `code` and
`_lastUpdated`; `Task?owner=X`, `Task.owner=X` and `owner=X` mean the same.
Everything here works in XML too: send `Content-Type: application/fhir+xml`, ask with
`Accept: application/fhir+xml` or `_format=xml`, and set `channel.payload` to
`application/fhir+xml` to receive XML notifications.
"""

CREATE = """The topic goes in `criteria`, each filter in a `backport-filter-criteria` extension on
`_criteria` (several filters are ANDed; a comma inside a value is OR), the content level in
`backport-payload-content` (`empty`, `id-only`, `full-resource`). Each `channel.header` is sent with
every notification, verbatim. Herald answers 201 with the whole resource and status `requested`;
anything it cannot honour is refused with a 400 OperationOutcome saying why.
"""

HANDSHAKE = """Right after answering, Herald sends a handshake to the endpoint (status `requested`,
`events-since-subscription-start` 0). Any 2xx accepts it; the body of the answer is never read.
"""

NOTIFICATION = """The first entry is always the status Parameters; `event-number` counts every event
of this subscription (1, 2, 3… without gaps, also across restarts), `focus` names the Task. An
`id-only` entry has `fullUrl`, `request` and `response` but no `resource`: read it back.
"""

OUTAGE = """The endpoint now answers 503. Herald retries with backoff (`HERALD_RETRY_DELAYS`, hours
by default; here shortened), then moves the subscription to `error` with the reason. Events keep
being numbered and stored while in error; the server never re-activates by itself.
"""

AFTER = """After the handshake succeeds the subscription is `active` again and new events flow.
Events missed while in error are not pushed again: fetch them with `$events` (they stay available
for `HERALD_EVENT_RETENTION_DAYS`), or search `Task?owner=…&_lastUpdated=gt…`.
"""


if __name__ == "__main__":
    main()
