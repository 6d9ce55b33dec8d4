"""A FHIR Subscriptions (R4 backport) rest-hook subscriber, in FastAPI.

Run:   pip install fastapi uvicorn httpx
       uvicorn app:app --port 9000
Then subscribe with the endpoint http://127.0.0.1:9000/notify. README.md explains each step.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
from fastapi import BackgroundTasks, FastAPI, Request, Response

log = logging.getLogger("subscriber")
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

app = FastAPI()

# (1) The last event number handled, per subscription (its absolute URL). Keep it in your
#     database in production: it is what tells you, after a restart, where you were.
last_seen: dict[str, int] = {}
lock = asyncio.Lock()


def status_of(bundle: dict[str, Any]) -> dict[str, Any]:
    """(2) The first entry of every notification is a Parameters resource: its status."""
    parameters = bundle["entry"][0]["resource"]["parameter"]
    status: dict[str, Any] = {"events": []}
    for p in parameters:
        if p["name"] == "notification-event":
            parts = {q["name"]: q for q in p["part"]}
            focus = parts.get("focus", {}).get("valueReference", {}).get("reference", "")
            status["events"].append((int(parts["event-number"]["valueString"]), focus))
        elif p["name"] == "subscription":
            status["subscription"] = p["valueReference"]["reference"]
        elif p["name"] == "type":
            status["type"] = p["valueCode"]
        elif p["name"] == "events-since-subscription-start":
            status["since_start"] = int(p["valueString"])
    return status


async def fetch_missed(subscription: str, first: int, last: int) -> None:
    """(5) Ask Herald for the events we missed: $events, from `first` to `last`."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            f"{subscription}/$events",
            params={"eventsSinceNumber": first, "eventsUntilNumber": last},
            headers={"Accept": "application/fhir+json"},
        )
    response.raise_for_status()
    for number, focus in status_of(response.json())["events"]:
        log.info("recovered #%d %s", number, focus)  # (6) handle it like any other event


async def handle(bundle: dict[str, Any]) -> None:
    """(4) Compare each notification with what we saw before: in order, duplicate, or gap."""
    status = status_of(bundle)
    subscription = status["subscription"]
    async with lock:
        last = last_seen.get(subscription, 0)
        if status["since_start"] < last:  # (7) the server counts fewer events than we saw
            log.info(
                "restart: %s counts %d events, we saw %d", subscription, status["since_start"], last
            )
            last = 0
        if status["type"] in ("handshake", "heartbeat"):
            log.info("%s %s", status["type"], subscription)
            numbers = [status["since_start"]] if status["since_start"] > last else []
            missed_until = status["since_start"]
        else:
            numbers = [n for n, _ in status["events"]]
            missed_until = min(numbers) - 1 if numbers else last
        if missed_until > last:
            log.info("gap: missed #%d..#%d, fetching", last + 1, missed_until)
            await fetch_missed(subscription, last + 1, missed_until)
        for number, focus in status["events"]:
            if number <= last:
                log.info("duplicate #%d %s (already handled)", number, focus)
            else:
                log.info("event #%d %s", number, focus)  # (6) your work goes here
        last_seen[subscription] = max([last, *numbers])


@app.post("/notify")
async def notify(request: Request, background: BackgroundTasks) -> Response:
    """(3) Answer at once with 200; do the work after the answer."""
    background.add_task(handle, await request.json())
    return Response(status_code=200)
