"""The HTTP sender: outcomes in Herald's words, pooled connections, never more than a small body."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from herald.core.states import DeliveryOutcome, DeliveryResult
from herald.runtime.sender import DRAIN_LIMIT, HttpSender


class Server:
    def __init__(
        self,
        body: bytes,
        status: int = 200,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        self.peers: set[int] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server.peers.add(self.client_address[1])
                time.sleep(delay)
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the client stopped reading: fine
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that hangs up mid-body resets the connection: expected here

        self.http = Quiet(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"


@pytest.fixture
def small() -> Iterator[Server]:
    server = Server(b'{"ignored": true}')
    yield server
    server.http.shutdown()
    server.http.server_close()


@pytest.fixture
def huge() -> Iterator[Server]:
    server = Server(b"x" * (DRAIN_LIMIT * 40))
    yield server
    server.http.shutdown()
    server.http.server_close()


async def test_connections_are_reused(small: Server) -> None:
    sender = HttpSender()
    try:
        for _ in range(10):
            outcome, _ = await sender.post(
                small.url, b"{}", content_type="application/fhir+json", headers=[], timeout=5
            )
            assert outcome.ok
    finally:
        await sender.aclose()
    assert len(small.peers) == 1


async def test_a_huge_body_is_not_read(huge: Server) -> None:
    sender = HttpSender()
    try:
        outcome, _ = await sender.post(
            huge.url, b"{}", content_type="application/fhir+json", headers=[], timeout=5
        )
    finally:
        await sender.aclose()
    assert outcome.ok and outcome.status_code == 200


async def _post(url: str, timeout: float = 5) -> DeliveryOutcome:
    sender = HttpSender()
    try:
        outcome, _ = await sender.post(
            url, b"{}", content_type="application/fhir+json", headers=[], timeout=timeout
        )
    finally:
        await sender.aclose()
    return outcome


@pytest.mark.parametrize(
    ("status", "headers", "expected", "retry_after"),
    [
        (200, {}, DeliveryResult.SUCCESS, None),
        (204, {}, DeliveryResult.SUCCESS, None),
        (410, {"Retry-After": "5"}, DeliveryResult.GONE, None),
        (400, {}, DeliveryResult.HTTP_ERROR, None),
        (503, {"Retry-After": "7"}, DeliveryResult.HTTP_ERROR, 7.0),
        (429, {"Retry-After": "soon"}, DeliveryResult.HTTP_ERROR, None),
    ],
)
async def test_answers_map_to_outcomes(
    status: int, headers: dict[str, str], expected: DeliveryResult, retry_after: float | None
) -> None:
    server = Server(b"", status, headers)
    try:
        outcome = await _post(server.url)
    finally:
        server.http.shutdown()
        server.http.server_close()
    assert (outcome.outcome, outcome.status_code, outcome.retry_after) == (
        expected,
        status,
        retry_after,
    )


async def test_a_slow_answer_is_a_timeout() -> None:
    server = Server(b"", delay=1.0)
    try:
        outcome = await _post(server.url, timeout=0.2)
    finally:
        server.http.shutdown()
        server.http.server_close()
    assert outcome.outcome is DeliveryResult.TIMEOUT and outcome.status_code is None
    assert outcome.is_failure and outcome.retriable


async def test_a_closed_port_is_a_connection_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        outcome = await _post(f"http://127.0.0.1:{port}/hook")
    assert outcome.outcome is DeliveryResult.CONNECTION_ERROR and outcome.status_code is None
    assert outcome.is_failure and outcome.retriable
