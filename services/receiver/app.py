"""The receiver's HTTP side: accept notifications, print them, fetch missed events from $events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import orjson
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald.core.errors import AuthorizationFailed, HeraldError
from herald.receiver.tracker import Notification, Tracker, read_notification
from herald.runtime.packaged import fhir_xml

# Events asked for per $events request (Herald answers at most its own page size anyway).
PAGE = 100

Print = Callable[[str], None]


def _now() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]


class Receiver:
    """Prints one line per notification; fetches the events a gap or restart shows missing."""

    def __init__(
        self,
        out: Print,
        *,
        base: str | None = None,
        verbose: bool = False,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.out = out
        self.base = base.rstrip("/") if base else None
        self.verbose = verbose
        self.tracker = Tracker()
        self.client = client or httpx.AsyncClient(timeout=10.0)
        # Lines of one notification, and the events fetched for it, stay together.
        self._lock = asyncio.Lock()

    async def take(self, body: bytes, content_type: str, request_id: str | None) -> None:
        """Handle one POSTed notification (after it was answered)."""
        async with self._lock:
            try:
                bundle = fhir_xml().from_xml(body) if "xml" in content_type else orjson.loads(body)
                note = read_notification(bundle)
            except (HeraldError, ValueError, KeyError, TypeError) as exc:
                self.out(f"{_now()} not a notification ({exc}); answered 200 anyway")
                return
            verdict = self.tracker.see(note)
            suffix = f" request_id={request_id}" if request_id else ""
            self.out(f"{_now()} {verdict.line}{suffix}")
            if self.verbose:
                self.out(json.dumps(bundle, indent=2))
            if verdict.missing is not None:
                await self._recover(note, *verdict.missing)

    async def _recover(self, note: Notification, first: int, last: int) -> None:
        """Fetch events first..last from $events, page by page, and print each."""
        base = self.base or note.base
        url = f"{base}/Subscription/{note.subscription_id}/$events"
        since = first
        while since <= last:
            params = {"eventsSinceNumber": since, "eventsUntilNumber": min(last, since + PAGE - 1)}
            try:
                response = await self.client.get(
                    url, params=params, headers={"Accept": "application/fhir+json"}
                )
                response.raise_for_status()
                events = read_notification(response.json()).events
            except (httpx.HTTPError, ValueError, AuthorizationFailed) as exc:
                self.out(f"{_now()}   could not fetch #{since}..#{last} from {url}: {exc}")
                return
            if not events:
                self.out(f"{_now()}   $events has nothing from #{since} (pruned?)")
                return
            for event in events:
                self.out(f"{_now()}   recovered {event.describe()}")
            since = events[-1].number + 1

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()


def receiver_app(receiver: Receiver) -> Starlette:
    """An app that answers every POST with 200 and hands the body to the receiver afterwards."""

    async def notify(request: Request) -> Response:
        body = await request.body()
        task = BackgroundTask(
            receiver.take,
            body,
            request.headers.get("content-type", ""),
            request.headers.get("x-request-id"),
        )
        return Response(status_code=200, background=task)

    return Starlette(routes=[Route("/{path:path}", notify, methods=["POST"])])


def print_line(line: str) -> None:
    """Print and flush, so that piped output shows each notification at once."""
    print(line, flush=True)
