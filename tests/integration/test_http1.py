"""The sender's HTTP/1.1 client on the wire: the request it writes, the answers it reads (framed,
chunked, to the end of the connection, after 1xx) and when it reuses a connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from herald.core.states import DeliveryOutcome, DeliveryResult
from herald.runtime.http1 import MAX_HEAD, Http1Client, origin_of
from herald.runtime.sender import HttpSender
from tests.integration.test_sender import OPEN
from tests.support.wire import read_message


@dataclass
class Endpoint:
    url: str
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)
    connections: int = 0


@contextlib.asynccontextmanager
async def endpoint(
    answer: bytes, *, close: bool = False, delay: float = 0.0
) -> AsyncIterator[Endpoint]:
    """A loopback endpoint answering every request with `answer`, closing the connection after
    each answer when `close`; a request to a path starting /slow is answered after `delay`."""
    handlers: set[asyncio.Task[None]] = set()
    noted = Endpoint("")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        noted.connections += 1
        try:
            while True:
                noted.requests.append(request := await read_message(reader))
                if request[0].startswith(b"POST /slow"):
                    await asyncio.sleep(delay)
                writer.write(answer)
                await writer.drain()
                if close:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    noted.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook?a=1"
    try:
        yield noted
    finally:
        server.close()
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)


async def _posts(
    url: str, count: int = 2, headers: list[tuple[str, str]] | None = None
) -> list[DeliveryOutcome]:
    sender = HttpSender(OPEN)
    try:
        return [
            (
                await sender.post(
                    url,
                    b'{"resourceType": "Bundle"}',
                    content_type="application/fhir+json",
                    headers=headers or [],
                    timeout=5,
                )
            )[0]
            for _ in range(count)
        ]
    finally:
        await sender.aclose()


async def test_the_request_is_one_well_formed_post() -> None:
    async with endpoint(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") as server:
        await _posts(server.url, 1, [("Authorization", "Bearer x"), ("X-Request-ID", "r1")])
    [(head, body)] = server.requests
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /hook?a=1 HTTP/1.1"
    fields = dict(line.split(": ", 1) for line in lines[1:] if line)
    assert fields["Host"] == server.url.split("/")[2]
    assert fields["Content-Type"] == "application/fhir+json"
    assert fields["Content-Length"] == str(len(body))
    assert fields["Authorization"] == "Bearer x" and fields["X-Request-ID"] == "r1"
    assert fields["User-Agent"].startswith("Herald/")
    assert body == b'{"resourceType": "Bundle"}'


async def test_a_chunked_answer_is_read_and_the_connection_reused() -> None:
    answer = b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    async with endpoint(answer) as server:
        outcomes = await _posts(server.url, 3)
    assert [(o.outcome, o.status_code) for o in outcomes] == [(DeliveryResult.SUCCESS, 202)] * 3
    assert server.connections == 1


async def test_an_answer_read_to_the_end_of_the_connection_is_complete() -> None:
    async with endpoint(b"HTTP/1.1 200 OK\r\n\r\nsome body", close=True) as server:
        outcomes = await _posts(server.url, 2)
    assert [o.outcome for o in outcomes] == [DeliveryResult.SUCCESS] * 2
    assert server.connections == 2


async def test_an_informational_answer_is_skipped() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    async with endpoint(answer) as server:
        outcomes = await _posts(server.url, 2)
    assert [(o.outcome, o.status_code) for o in outcomes] == [(DeliveryResult.SUCCESS, 204)] * 2
    assert server.connections == 1


async def test_connection_close_is_honoured() -> None:
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    async with endpoint(answer) as server:
        outcomes = await _posts(server.url, 2)
    assert all(o.ok for o in outcomes)
    assert server.connections == 2


async def test_a_connection_closed_before_the_answer_is_a_connection_error() -> None:
    async with endpoint(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", close=True) as server:
        [cut] = await _posts(server.url, 1)
    async with endpoint(b"", close=True) as server:
        [silent] = await _posts(server.url, 1)
    for outcome in (cut, silent):
        assert outcome.outcome is DeliveryResult.CONNECTION_ERROR and outcome.retriable
        assert "closed the connection" in outcome.detail


async def test_an_endless_header_section_is_a_connection_error() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"y" * MAX_HEAD + b"\r\nContent-Length: 0\r\n\r\n"
    )
    async with endpoint(answer) as server:
        [outcome] = await _posts(server.url, 1)
    assert outcome.outcome is DeliveryResult.CONNECTION_ERROR
    assert "header section" in outcome.detail


async def test_a_header_herald_frames_the_request_with_is_never_sent() -> None:
    async with endpoint(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") as server:
        for name in ("Content-Length", "transfer-encoding", "Host"):
            [outcome] = await _posts(server.url, 1, [(name, "5")])
            assert outcome.outcome is DeliveryResult.UNSENDABLE
    assert server.connections == 0


async def test_endpoints_on_one_origin_share_connections() -> None:
    async with endpoint(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") as server:
        sender = HttpSender(OPEN)
        try:
            for path in ("/a", "/b", "/a?x=1"):
                url = server.url.split("/hook")[0] + path
                outcome, _ = await sender.post(
                    url, b"{}", content_type="application/fhir+json", headers=[], timeout=5
                )
                assert outcome.ok
        finally:
            await sender.aclose()
    assert server.connections == 1
    assert [head.split(b" ")[1] for head, _ in server.requests] == [b"/a", b"/b", b"/a?x=1"]


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


async def _post(sender: HttpSender, url: str, timeout: float = 5) -> DeliveryOutcome:
    outcome, _ = await sender.post(
        url, b"{}", content_type="application/fhir+json", headers=[], timeout=timeout
    )
    return outcome


async def test_a_post_on_a_pooled_connection_ends_at_its_own_time_out() -> None:
    async with endpoint(OK, delay=2.0) as server:
        base = server.url.split("/hook")[0]
        sender = HttpSender(OPEN)
        try:
            # Two kept-alive connections, then a slow POST with a long time-out on one of them:
            # a shorter time-out on the other still ends its POST on time.
            assert all(o.ok for o in await asyncio.gather(*(_post(sender, base) for _ in "ab")))
            longer = asyncio.create_task(_post(sender, base + "/slow", timeout=5))
            await asyncio.sleep(0.05)
            started = asyncio.get_running_loop().time()
            outcome = await _post(sender, base + "/slow", timeout=0.2)
            elapsed = asyncio.get_running_loop().time() - started
            assert outcome.outcome is DeliveryResult.TIMEOUT, outcome
            assert 0.15 < elapsed < 1.0
            longer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await longer
            # Neither the timed-out nor the cancelled POST keeps a slot or a broken connection.
            assert all(o.ok for o in await asyncio.gather(*(_post(sender, base) for _ in "abc")))
        finally:
            await sender.aclose()
    assert server.connections == 5  # the two cut short are not reused


async def test_posts_beyond_the_client_limit_wait_for_a_slot_within_their_time_out() -> None:
    async with endpoint(OK, delay=0.3) as server:
        port = int(server.url.split("/")[2].split(":")[1])
        client = Http1Client(OPEN, drain_limit=1024, max_connections=1)
        slow = origin_of("http", "127.0.0.1", port, "/slow", "test")
        fast = origin_of("http", "127.0.0.1", port, "/", "test")
        head = b"Content-Length: 2\r\n\r\n"
        try:
            answers = await asyncio.gather(*(client.post(slow, head, b"{}", 5) for _ in "abc"))
            assert answers == [(200, None)] * 3
            assert server.connections == 1  # one at a time, on one connection
            waited = asyncio.create_task(client.post(slow, head, b"{}", 5))
            await asyncio.sleep(0.05)
            with pytest.raises(TimeoutError):
                await client.post(fast, head, b"{}", 0.1)  # still waiting for the slot
            assert await waited == (200, None)
            assert await client.post(fast, head, b"{}", 1) == (200, None)
        finally:
            await client.aclose()
