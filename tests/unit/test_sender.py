"""The HTTP sender: pooled connections, a small body read at most, connections only to
addresses the endpoint policy allows, and every failure an outcome."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_network
from typing import Any

import pytest

from herald.core.subscriptions import EndpointPolicy
from herald.runtime.sender import DRAIN_LIMIT, DeliveryOutcome, HttpSender
from herald.runtime.settings import Settings

OPEN = EndpointPolicy(allow_http=True, allow_private=True)


class Server:
    def __init__(self, body: bytes) -> None:
        self.peers: set[int] = set()
        self.hosts: list[str] = []
        self.connections = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server.peers.add(self.client_address[1])
                server.hosts.append(self.headers.get("Host", ""))
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

            def verify_request(self, request: Any, client_address: Any) -> bool:
                server.connections += 1
                return True

        self.http = Quiet(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.port = self.http.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"


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
    sender = HttpSender(OPEN)
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
    sender = HttpSender(OPEN)
    try:
        outcome, _ = await sender.post(
            huge.url, b"{}", content_type="application/fhir+json", headers=[], timeout=5
        )
    finally:
        await sender.aclose()
    assert outcome.ok and outcome.status_code == 200


# --- endpoint safety at connect time ------------------------------------------------------

STRICT = EndpointPolicy(allow_http=True)


async def _post(policy: EndpointPolicy, url: str, **headers: str) -> DeliveryOutcome:
    sender = HttpSender(policy)
    try:
        outcome, _ = await sender.post(
            url,
            b"{}",
            content_type="application/fhir+json",
            headers=list(headers.items()),
            timeout=5,
        )
    finally:
        await sender.aclose()
    return outcome


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        socket.gethostname(),  # a name the local hosts file maps to a loopback address
        "127.0.0.1",
        "127.1",
        "[::ffff:127.0.0.1]",
    ],
)
async def test_a_strict_policy_never_connects_to_a_loopback_address(
    small: Server, host: str
) -> None:
    outcome = await _post(STRICT, f"http://{host}:{small.port}/hook")
    assert outcome.outcome == "refused"
    assert "loopback" in outcome.detail
    assert small.connections == 0


async def test_the_allowlist_lets_a_private_partner_through_under_its_name(small: Server) -> None:
    port = small.port
    by_network = EndpointPolicy(allow_http=True, allow_networks=(ip_network("127.0.0.0/8"),))
    by_host = EndpointPolicy(allow_http=True, allow_hosts=frozenset({"localhost"}))
    for policy in (by_network, by_host):
        assert (await _post(policy, f"http://localhost:{port}/hook")).ok
    # The connection went to the vetted address; the Host header still names the host.
    assert small.hosts == [f"localhost:{port}", f"localhost:{port}"]


async def test_an_unsendable_header_is_a_failed_attempt_not_an_exception(small: Server) -> None:
    outcome = await _post(OPEN, small.url, **{"X-Token": "caf\u00e9"})
    assert outcome.outcome == "unsendable"
    assert "UnicodeEncodeError" in outcome.detail
    outcome = await _post(OPEN, small.url, **{"X-Token": "a\r\nInjected: 1"})
    assert outcome.outcome == "unsendable"
    assert small.peers == set()  # h11 refused to write the request


def test_the_allowlist_setting_holds_hosts_and_networks() -> None:
    policy = Settings(
        kafka_bootstrap="k:9092", endpoint_allow="Partner.Internal., 10.20.0.0/16 ,fd00::/8"
    ).endpoint_policy
    assert (policy.allow_http, policy.allow_private) == (False, False)
    assert policy.allow_hosts == frozenset({"partner.internal"})
    assert policy.allow_networks == (ip_network("10.20.0.0/16"), ip_network("fd00::/8"))
