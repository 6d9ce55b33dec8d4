"""The sender's transport: connect-time vetting (TLS by name, rebinding, literal addresses) and
what it never does (follow redirects, keep cookies, use proxies, quote the URL in errors)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_network
from typing import Any

import aiohttp
import pytest
import trustme

from herald.core.addresses import Address
from herald.core.states import DeliveryResult
from herald.core.subscriptions import EndpointPolicy
from herald.runtime.sender import HttpSender
from herald.runtime.vetting import EndpointRefused, VettingResolver, vetting_connector
from tests.integration.test_sender import OPEN, Server
from tests.support.wire import read_message

# Loopback stands in for a private partner: allowed by network, so every host is vetted.
PARTNER = EndpointPolicy(allow_networks=(ip_network("127.0.0.0/8"),))
STRICT = EndpointPolicy(allow_http=True)


class TlsServer:
    """An HTTPS endpoint on loopback that notes the SNI name, Host header and connections."""

    def _note_sni(self, sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        self.sni.append(name)

    def __init__(self, ca: trustme.CA, *names: str) -> None:
        self.sni: list[str | None] = []
        self.hosts: list[str] = []
        self.connections = 0
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(context)
        context.sni_callback = self._note_sni
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server.hosts.append(self.headers.get("Host", ""))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        class Tls(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[Any, Any]:
                sock, address = super().get_request()
                server.connections += 1
                return context.wrap_socket(sock, server_side=True), address

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that refuses the certificate hangs up mid-handshake

        self.http = Tls(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.port = self.http.server_address[1]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@contextlib.contextmanager
def tls_server(ca: trustme.CA, *names: str) -> Iterator[TlsServer]:
    server = TlsServer(ca, *names)
    try:
        yield server
    finally:
        server.http.shutdown()
        server.http.server_close()


def _trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def _post(sender: HttpSender, url: str) -> Any:
    outcome, _ = await sender.post(
        url, b"{}", content_type="application/fhir+json", headers=[], timeout=5
    )
    return outcome


async def test_tls_runs_against_the_name_on_a_vetted_pooled_connection(ca: trustme.CA) -> None:
    with tls_server(ca, "localhost") as server:
        sender = HttpSender(PARTNER, ssl_context=_trusting(ca))
        try:
            outcomes = [await _post(sender, f"https://localhost:{server.port}/hook") for _ in "abc"]
        finally:
            await sender.aclose()
    assert [o.outcome for o in outcomes] == [DeliveryResult.SUCCESS] * 3
    assert server.sni == ["localhost"]  # one handshake, by name, though connected by number
    assert server.hosts == [f"localhost:{server.port}"] * 3
    assert server.connections == 1


@pytest.mark.parametrize(
    ("name", "trusted"),
    [("partner.example", True), ("localhost", False)],
    ids=["another name", "unknown authority (certifi's only)"],
)
async def test_a_certificate_that_does_not_verify_is_refused(
    ca: trustme.CA, name: str, trusted: bool
) -> None:
    with tls_server(ca, name) as server:
        sender = HttpSender(PARTNER, ssl_context=_trusting(ca) if trusted else None)
        try:
            outcome = await _post(sender, f"https://localhost:{server.port}/hook")
        finally:
            await sender.aclose()
    assert outcome.outcome is DeliveryResult.CONNECTION_ERROR
    assert "certificate" in outcome.detail.lower()
    assert server.hosts == []


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f000001", "[::1]", "[::ffff:7f00:1]", "[::127.0.0.1]", "0.0.0.0"]
)
async def test_every_literal_form_of_a_refused_address_is_refused_before_connecting(
    host: str,
) -> None:
    server = Server(b"")
    sender = HttpSender(STRICT)
    try:
        outcome = await _post(sender, f"http://{host}:{server.port}/hook")
        # The sender keeps what it parsed of the URL; the next POST is refused all the same.
        again = await _post(sender, f"http://{host}:{server.port}/hook")
    finally:
        await sender.aclose()
        server.http.shutdown()
        server.http.server_close()
    assert outcome.outcome is DeliveryResult.REFUSED, outcome
    assert again == outcome
    assert server.connections == 0


class RebindingDns:
    """A name server that answers each lookup of a name with the next of its addresses."""

    def __init__(self, *answers: str) -> None:
        self.answers = [[ipaddress.ip_address(a) for a in answer.split()] for answer in answers]
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int, family: int) -> list[Address]:
        self.lookups.append(host)
        return self.answers[min(len(self.lookups), len(self.answers)) - 1]


async def test_each_connection_goes_to_the_address_vetted_for_it() -> None:
    # The server closes every connection, so each POST resolves and vets again. The name exists
    # in no real DNS: the connection can only have gone to the number the vetting returned.
    server = Server(b"", headers={"Connection": "close"})
    dns = RebindingDns("127.0.0.1", "169.254.169.254 127.0.0.1", "169.254.169.254")
    url = f"http://partner.invalid:{server.port}/hook"
    policy = EndpointPolicy(allow_http=True, allow_networks=(ip_network("127.0.0.0/8"),))
    statuses: list[int | str] = []
    async with aiohttp.ClientSession(connector=vetting_connector(policy, lookup=dns)) as session:
        for _ in range(3):
            try:
                async with session.post(url, data=b"{}") as response:
                    statuses.append(response.status)
            except aiohttp.ClientConnectorError as exc:
                assert isinstance(exc.__cause__, EndpointRefused)
                statuses.append("refused")
    server.http.shutdown()
    server.http.server_close()
    assert statuses == [200, 200, "refused"]
    assert dns.lookups == ["partner.invalid"] * 3
    assert server.hosts == [f"partner.invalid:{server.port}"] * 2
    assert server.connections == 2


async def test_the_resolver_hands_over_only_allowed_addresses_as_numbers() -> None:
    dns = RebindingDns("10.0.0.7 93.184.215.14 ::1 2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    results = await VettingResolver(STRICT, dns).resolve("mixed.example", 443, socket.AF_UNSPEC)
    assert [(r["hostname"], r["host"], r["family"]) for r in results] == [
        ("mixed.example", "93.184.215.14", socket.AF_INET),
        ("mixed.example", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", socket.AF_INET6),
    ]
    assert all(r["flags"] & socket.AI_NUMERICHOST for r in results)
    with pytest.raises(EndpointRefused, match="private"):
        await VettingResolver(STRICT, RebindingDns("10.1.2.3")).resolve("intranet.example", 80)


# --- what the sender never does on its transport ------------------------------------------


@contextlib.asynccontextmanager
async def raw_endpoint(
    answer: bytes, *, drip: float = 0.0
) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A loopback endpoint that answers every request with `answer` (a byte at a time every
    `drip` seconds when set) and notes the request heads it received."""
    heads: list[bytes] = []
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while True:
                head, _ = await read_message(reader)
                heads.append(head)
                for i in range(len(answer)) if drip else [0]:
                    writer.write(answer[i : i + 1] if drip else answer)
                    await writer.drain()
                    await asyncio.sleep(drip)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook?token=SECRET", heads
    finally:
        server.close()
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)


async def test_a_malformed_answer_is_a_connection_error_that_never_quotes_the_url() -> None:
    async with raw_endpoint(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n") as (url, _):
        sender = HttpSender(OPEN)
        try:
            outcome = await _post(sender, url)
        finally:
            await sender.aclose()
    assert outcome.outcome is DeliveryResult.CONNECTION_ERROR
    assert "Content-Length" in outcome.detail and "SECRET" not in outcome.detail


async def test_the_timeout_bounds_the_whole_answer_not_each_read() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"
    async with raw_endpoint(answer, drip=0.05) as (url, _):
        sender = HttpSender(OPEN)
        try:
            outcome, seconds = await sender.post(
                url, b"{}", content_type="application/fhir+json", headers=[], timeout=0.5
            )
        finally:
            await sender.aclose()
    assert outcome.outcome is DeliveryResult.TIMEOUT
    assert seconds < 1.5  # each byte came within 0.05 s; the drip would take 2.5 s


async def test_redirects_cookies_and_proxy_settings_are_not_followed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    async with raw_endpoint(b"") as (elsewhere, elsewhere_heads):
        answer = (
            f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {elsewhere}\r\n"
            "Set-Cookie: session=abc; Path=/\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        async with raw_endpoint(answer) as (url, heads):
            sender = HttpSender(OPEN)
            try:
                outcomes = [await _post(sender, url) for _ in range(2)]
            finally:
                await sender.aclose()
    assert [(o.outcome, o.status_code) for o in outcomes] == [(DeliveryResult.HTTP_ERROR, 307)] * 2
    assert elsewhere_heads == []
    assert len(heads) == 2 and all(b"cookie" not in h.lower() for h in heads)
