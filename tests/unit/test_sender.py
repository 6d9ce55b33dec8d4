"""The HTTP sender reuses pooled connections and never reads more than a small body."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from herald.runtime.sender import DRAIN_LIMIT, HttpSender


class Server:
    def __init__(self, body: bytes) -> None:
        self.peers: set[int] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server.peers.add(self.client_address[1])
                self.send_response(200)
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
