"""A real HTTP subscriber endpoint on loopback that records every notification it receives."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from herald.runtime.packaged import fhir_xml

from_xml = fhir_xml().from_xml


@dataclass(frozen=True)
class Received:
    """One POST the receiver got."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    """The notification as FHIR JSON (converted when it came as XML)."""
    raw: bytes

    @property
    def parameters(self) -> dict[str, Any]:
        """The status Parameters as name -> value (notification-event parts as lists)."""
        status = self.body["entry"][0]["resource"]
        values: dict[str, Any] = {"notification-event": []}
        for p in status["parameter"]:
            if p["name"] == "notification-event":
                values["notification-event"].append({q["name"]: q for q in p["part"]})
            else:
                values[p["name"]] = next(v for k, v in p.items() if k.startswith("value"))
        return values

    @property
    def kind(self) -> str:
        """handshake, heartbeat or event-notification."""
        return str(self.parameters["type"])

    @property
    def event_numbers(self) -> list[int]:
        """The event numbers this notification carries."""
        return [
            int(e["event-number"]["valueString"]) for e in self.parameters["notification-event"]
        ]


class Receiver:
    """Collects notifications; `status` sets the HTTP status it answers with."""

    def __init__(self, bind: str = "127.0.0.1", advertise: str | None = None) -> None:
        """Listen on `bind`; subscribers are given `advertise` (default: `bind`) as the host, for
        a Herald in a container that reaches this host by another name."""
        self.received: list[Received] = []
        self._host = advertise or bind
        self.status = 200
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                xml = "xml" in self.headers.get("Content-Type", "")
                body = from_xml(raw) if xml else json.loads(raw)
                with receiver._lock:
                    receiver.received.append(
                        Received(self.path, dict(self.headers.items()), body, raw)
                    )
                    status = receiver.status
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((bind, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The endpoint URL to subscribe with."""
        port = self._server.server_address[1]
        return f"http://{self._host}:{port}/notify"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def of_kind(self, kind: str) -> list[Received]:
        """What was received of one notification type."""
        with self._lock:
            return [r for r in self.received if r.kind == kind]

    def events(self) -> int:
        """Events received in event notifications (a notification may carry several)."""
        return sum(len(r.event_numbers) for r in self.of_kind("event-notification"))

    def wait_for(self, predicate: Callable[[Receiver], bool], timeout: float = 30.0) -> None:
        """Wait until predicate(self) holds, or fail after timeout seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            time.sleep(0.05)
        raise AssertionError(f"receiver condition not met in {timeout} s; got {self.received}")
