"""uvicorn's protocol as Herald serves it: a response's head and body leave in one socket write
(a 100 Continue is never held back); a connection without a whole request head in time is
closed, one that keeps sending requests is not."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from herald.runtime.lifecycle import with_head_timeout
from herald.runtime.response_writes import with_one_write
from tests.support.services import free_port

WRITES: list[bytes] = []


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = b"got " + body
    status = 204 if scope["path"] == "/empty" else 200
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [] if status == 204 else [(b"content-length", b"%d" % len(answer))],
        }
    )
    await send({"type": "http.response.body", "body": b"" if status == 204 else answer})


def _counting(protocol: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    class Counting(protocol):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: Any) -> None:
            class Recorder:
                def write(self, data: bytes) -> None:
                    WRITES.append(data)
                    transport.write(data)

                def __getattr__(self, name: str) -> Any:
                    return getattr(transport, name)

            super().connection_made(Recorder())

    return Counting


async def _serving(port: int, client: Any, head_timeout: float | None = None) -> Any:
    config = uvicorn.Config(_app, host="127.0.0.1", port=port, log_config=None, http="httptools")
    config.load()
    config.http_protocol_class = with_one_write(_counting(config.http_protocol_class))
    if head_timeout is not None:
        config.http_protocol_class = with_head_timeout(config.http_protocol_class, head_timeout)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        return await asyncio.to_thread(client)
    finally:
        server.should_exit = True
        await task


def _connect(port: int) -> socket.socket:
    deadline = time.monotonic() + 5
    while True:  # until the server listens
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _read_until(connection: socket.socket, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = connection.recv(65536)
        assert chunk, data
        data += chunk
    return data


def test_head_and_body_leave_in_one_write_on_a_kept_alive_connection() -> None:
    port = free_port()
    WRITES.clear()

    def client() -> list[bytes]:
        answers = []
        with _connect(port) as connection:
            for path, body in (("/a", b"one"), ("/empty", b""), ("/b", b"two")):
                connection.sendall(
                    b"PUT %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                    % (path.encode(), len(body), body)
                )
                answers.append(_read_until(connection, body or b"\r\n\r\n"))
        return answers

    answers = asyncio.run(_serving(port, client))
    assert answers[0].startswith(b"HTTP/1.1 200 OK\r\n") and answers[0].endswith(b"\r\ngot one")
    assert answers[1].startswith(b"HTTP/1.1 204 No Content\r\n")
    assert answers[2].endswith(b"\r\ngot two")
    # One write per response, each holding the whole response.
    assert len(WRITES) == 3
    assert [w.split(b"\r\n\r\n", 1)[1] for w in WRITES] == [b"got one", b"", b"got two"]


def test_a_100_continue_is_written_before_the_body_is_sent() -> None:
    port = free_port()
    WRITES.clear()

    def client() -> bytes:
        with _connect(port) as connection:
            connection.sendall(
                b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            )
            # The server must answer 100 now: the body is only sent after it.
            assert _read_until(connection, b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            connection.sendall(b"hello")
            return _read_until(connection, b"got hello")

    answer = asyncio.run(_serving(port, client))
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert WRITES[0] == b"HTTP/1.1 100 Continue\r\n\r\n" and len(WRITES) == 2


@pytest.mark.parametrize("http", ["h11"])
def test_other_protocol_classes_are_left_as_they_are(http: str) -> None:
    config = uvicorn.Config(_app, http=http, log_config=None)
    config.load()
    assert with_one_write(config.http_protocol_class) is config.http_protocol_class


def _closed(connection: socket.socket, within: float) -> bool:
    connection.settimeout(within)
    try:
        return connection.recv(1) == b""
    except TimeoutError:
        return False


def test_a_connection_without_a_request_head_in_time_is_closed() -> None:
    port = free_port()

    def client() -> tuple[bool, bool, bool]:
        with _connect(port) as idle, _connect(port) as partial, _connect(port) as served:
            partial.sendall(b"PUT /a HTTP/1.1\r\nHost: x\r\n")  # the head never ends
            served.sendall(b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            _read_until(served, b"got ")
            # After its response, a kept-alive connection has the same time for the next head.
            return _closed(idle, 2), _closed(partial, 2), _closed(served, 2)

    assert asyncio.run(_serving(port, client, head_timeout=0.3)) == (True, True, True)


def test_a_connection_sending_requests_in_time_stays_open() -> None:
    port = free_port()

    def client() -> int:
        answered = 0
        with _connect(port) as connection:
            started = time.monotonic()
            while time.monotonic() - started < 1.0:  # past three timeouts of 0.3 s
                connection.sendall(b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz")
                _read_until(connection, b"got z")
                answered += 1
                time.sleep(0.1)
        return answered

    assert asyncio.run(_serving(port, client, head_timeout=0.3)) >= 8
