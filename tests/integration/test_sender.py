"""The HTTP sender: outcomes in Herald's words, pooled connections, never more than a small body."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_network
from typing import Any

import pytest

from herald.core.states import DeliveryOutcome, DeliveryResult
from herald.core.subscriptions import EndpointPolicy
from herald.runtime.sender import DRAIN_LIMIT, HttpSender
from herald.runtime.settings import Settings

OPEN = EndpointPolicy(allow_http=True, allow_private=True)


class Server:
    def __init__(
        self,
        body: bytes,
        status: int = 200,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
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


async def _post(
    url: str,
    timeout: float = 5,
    policy: EndpointPolicy | None = None,
    headers: dict[str, str] | None = None,
) -> DeliveryOutcome:
    sender = HttpSender(policy or OPEN)
    try:
        outcome, _ = await sender.post(
            url,
            b"{}",
            content_type="application/fhir+json",
            headers=list((headers or {}).items()),
            timeout=timeout,
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
        # A long header line (a cookie, a Link list) is still an answer.
        (200, {"Set-Cookie": "c=" + "x" * 30_000}, DeliveryResult.SUCCESS, None),
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


# --- endpoint safety at connect time ------------------------------------------------------

STRICT = EndpointPolicy(allow_http=True)


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
    outcome = await _post(f"http://{host}:{small.port}/hook", policy=STRICT)
    assert outcome.outcome is DeliveryResult.REFUSED and not outcome.retriable
    assert "loopback" in outcome.detail
    assert small.connections == 0


async def test_the_allowlist_lets_a_private_partner_through_under_its_name(small: Server) -> None:
    port = small.port
    by_network = EndpointPolicy(allow_http=True, allow_networks=(ip_network("127.0.0.0/8"),))
    by_host = EndpointPolicy(allow_http=True, allow_hosts=frozenset({"localhost"}))
    for policy in (by_network, by_host):
        assert (await _post(f"http://localhost:{port}/hook", policy=policy)).ok
    # The connection went to the vetted address; the Host header still names the host.
    assert small.hosts == [f"localhost:{port}", f"localhost:{port}"]


async def test_an_unsendable_header_is_a_failed_attempt_not_an_exception(small: Server) -> None:
    outcome = await _post(small.url, headers={"X-Token": "caf\u00e9"})
    assert outcome.outcome is DeliveryResult.UNSENDABLE
    assert "UnicodeEncodeError" in outcome.detail
    outcome = await _post(small.url, headers={"X-Token": "a\r\nInjected: 1"})
    assert outcome.outcome is DeliveryResult.UNSENDABLE
    assert small.peers == set()  # h11 refused to write the request


def test_the_allowlist_setting_holds_hosts_and_networks() -> None:
    policy = Settings(
        kafka_bootstrap="k:9092", endpoint_allow="Partner.Internal., 10.20.0.0/16 ,fd00::/8"
    ).endpoint_policy
    assert (policy.allow_http, policy.allow_private) == (False, False)
    assert policy.allow_hosts == frozenset({"partner.internal"})
    assert policy.allow_networks == (ip_network("10.20.0.0/16"), ip_network("fd00::/8"))
