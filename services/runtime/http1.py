"""A small HTTP/1.1 client for notification POSTs: the request written in one piece, the answer
parsed by httptools, keep-alive connections pooled per origin.

The sender needs one thing from a POST: the status (and Retry-After) of the answer, with at most
a small body read and dropped so the connection can be reused. A general client's request and
response models, cookie jar, tracing hooks and stream readers cost several times that on the
dispatcher's hot path; this one does only what the sender needs.

Connections go only to addresses the endpoint policy allows: a new connection resolves and vets
its host (`vetting.vetted_addresses`) and connects to the allowed addresses by number, so there
is no second lookup a rebinding DNS server could answer differently; TLS still runs against the
host name (SNI and certificate check) and the Host header is the URL's.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass

import certifi
import httptools

from herald.core.subscriptions import EndpointPolicy
from herald.runtime.slots import Slots
from herald.runtime.vetting import vetted_addresses

MAX_HEAD = 256 * 1024
"""Largest status line and header section read (bytes); a larger one is a failed answer."""


class AnswerError(Exception):
    """The endpoint's answer could not be read: malformed, too large, or cut short."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a POST goes and the parts of its request that depend only on the URL."""

    tls: bool
    host: str
    port: int
    prefix: bytes
    """The request line and the fixed headers (Host, User-Agent, Accept), CRLF-terminated."""
    key: tuple[bool, str, int]
    """What the connection pool is kept by: endpoints on one origin share connections."""


def origin_of(scheme: str, host: str, port: int, path: str, user_agent: str) -> Origin:
    """The origin and request prefix of a URL's parts (host without brackets, path with query)."""
    tls = scheme == "https"
    authority = f"[{host}]" if ":" in host else host
    if port != (443 if tls else 80):
        authority = f"{authority}:{port}"
    prefix = (
        f"POST {path or '/'} HTTP/1.1\r\nHost: {authority}\r\n"
        f"User-Agent: {user_agent}\r\nAccept: */*\r\n"
    ).encode("ascii")
    return Origin(tls, host, port, prefix, (tls, host, port))


# Header names (lower case, by length) of the response that matter: Retry-After for the outcome,
# the framing ones to tell a body read to the end of the connection from one cut short.
_RETRY_AFTER = b"retry-after"
_FRAMING = (b"content-length", b"transfer-encoding")


class _Connection(asyncio.Protocol):
    """One connection to an origin: at most one exchange at a time, reusable after a complete
    answer the endpoint did not ask to close."""

    def __init__(self, drain_limit: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._drain_limit = drain_limit
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, str | None]] | None = None
        self._answered = True  # no exchange pending: any byte that arrives is unexpected
        self._reusable = False
        self._head = self._fields = 0
        self._headers_done = False
        self._framed = False
        self._body = 0
        self._retry_after: str | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport; small requests go out at once (no Nagle delay)."""
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        """Feed the parser; bytes outside an exchange make the connection unusable."""
        if self._answered:
            self.close()
            return
        if not self._headers_done:
            self._head += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(AnswerError("the endpoint switched protocols"))
            return
        except httptools.HttpParserError as exc:
            self._fail(AnswerError(f"malformed answer: {exc}"))
            return
        if self._answered:
            if not self._reusable:
                self.close()
        elif not self._headers_done and self._head > MAX_HEAD:
            self._fail(AnswerError(f"the answer's header section exceeds {MAX_HEAD} bytes"))

    def eof_received(self) -> bool | None:
        """The endpoint closed its side: the connection goes (connection_lost decides)."""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """An answer whose body runs to the end of the connection is complete now; any other
        pending exchange failed."""
        self.closed = True
        if self._answered:
            return
        if self._headers_done and not self._framed:
            self._answer(reusable=False)
        else:
            error = AnswerError("the endpoint closed the connection before its answer was complete")
            error.__cause__ = exc
            self._fail(error)

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        """A second answer (nothing was asked for it) makes the connection unusable."""
        if self._answered:
            self._reusable = False

    def on_header(self, name: bytes, value: bytes) -> None:
        """Note Retry-After and whether the body is framed."""
        self._fields += len(name) + len(value) + 4
        if len(name) == 11 and name.lower() == _RETRY_AFTER:
            self._retry_after = value.decode("latin-1")
        elif len(name) in (14, 17) and name.lower() in _FRAMING:
            self._framed = True

    def on_headers_complete(self) -> None:
        """The head is read; the body follows (and is counted, not kept)."""
        self._headers_done = True
        if self._fields > MAX_HEAD:
            self._fail(AnswerError(f"the answer's header section exceeds {MAX_HEAD} bytes"))

    def on_body(self, body: bytes) -> None:
        """Count the body; past the drain limit the answer is taken as is and the connection
        closed rather than read further."""
        if self._answered:
            return
        self._body += len(body)
        if self._body > self._drain_limit:
            self._answer(reusable=False)

    def on_message_complete(self) -> None:
        """An informational (1xx) answer is skipped; a final one completes the exchange."""
        if self._answered:
            return
        if self._parser.get_status_code() < 200:
            self._headers_done = self._framed = False
            self._head = self._fields = self._body = 0
            self._retry_after = None
            return
        self._answer(reusable=self._parser.should_keep_alive())

    # -- the exchange

    def _answer(self, *, reusable: bool) -> None:
        self._answered = True
        self._reusable = reusable and not self.closed
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result((self._parser.get_status_code(), self._retry_after))

    def _fail(self, exc: BaseException) -> None:
        self._answered = True
        self._reusable = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    @property
    def reusable(self) -> bool:
        """Whether the last exchange left the connection ready for another."""
        return self._reusable and not self.closed

    async def exchange(self, head: bytes, body: bytes) -> tuple[int, str | None]:
        """Send one request; the answer's status and Retry-After once it is complete or its
        body passed the drain limit (TimeoutError once `time_out` is called first)."""
        assert self.transport is not None
        self._answered = self._reusable = self._headers_done = self._framed = False
        self._head = self._fields = self._body = 0
        self._retry_after = None
        self._waiter = asyncio.get_running_loop().create_future()
        if len(body) <= 16 * 1024:
            self.transport.write(head + body)
        else:
            self.transport.write(head)
            self.transport.write(body)
        try:
            return await self._waiter
        finally:
            self._waiter = None

    def time_out(self) -> None:
        """End a pending exchange with TimeoutError (the connection is closed)."""
        if self._waiter is not None and not self._waiter.done():
            self._fail(TimeoutError())

    def close(self) -> None:
        """Close the connection (the transport's close is idempotent)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Http1Client:
    """POSTs over pooled keep-alive connections; at most `max_connections` exchanges at once.

    A connection idle for `keepalive` seconds is closed. No cookies, no redirects, no proxies,
    no environment settings.

    A POST's time-out is kept without a timer of its own: asyncio.timeout arms and cancels an
    event-loop timer per POST, several times the CPU of the rest of the client when the answer
    comes at once. A POST that finds a free slot and a pooled connection (nearly all of them)
    only notes its deadline; one alarm, set for the earliest deadline noted, ends the
    exchanges that are overdue when it goes off. Waiting for a slot and connecting (rare) are
    bounded by asyncio.timeout_at.
    """

    def __init__(
        self,
        policy: EndpointPolicy,
        *,
        ssl_context: ssl.SSLContext | None = None,
        drain_limit: int,
        max_connections: int = 200,
        keepalive: float = 5.0,
    ) -> None:
        self.policy = policy
        self._ssl = ssl_context
        self._drain_limit = drain_limit
        self._keepalive = keepalive
        self._slots = Slots(max_connections)
        self._idle: dict[tuple[bool, str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self._deadlines: dict[_Connection, float] = {}
        """The exchanges in progress and when each must be over (the loop's clock)."""
        self._alarm: asyncio.TimerHandle | None = None
        self._alarm_at = 0.0

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            # Certifi's CA bundle (what Herald's clients always used), not the system's.
            self._ssl = ssl.create_default_context(cafile=certifi.where())
        return self._ssl

    async def post(
        self, origin: Origin, head: bytes, body: bytes, timeout: float
    ) -> tuple[int, str | None]:
        """Send a request (`head` is everything after the prefix up to the blank line, which
        it includes) and return the answer's status and Retry-After; TimeoutError when
        `timeout` seconds pass first, the wait for a slot and for a connection included."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        held = self._slots.take()
        connection = self._pooled(origin) if held else None
        if connection is None:
            async with asyncio.timeout_at(deadline):
                connection = await self._connection(origin, held=held)
        try:
            self._deadlines[connection] = deadline
            if self._alarm is None or deadline < self._alarm_at:
                self._set_alarm(loop, deadline)
            try:
                answer = await connection.exchange(origin.prefix + head, body)
            finally:
                del self._deadlines[connection]
        except BaseException:
            self._discard(connection)
            self._slots.release()
            raise
        if connection.reusable:
            self._release(origin, connection)
        else:
            self._discard(connection)
        self._slots.release()
        return answer

    async def _connection(self, origin: Origin, *, held: bool) -> _Connection:
        """A pooled or a new connection, once a slot is taken (`post` may hold one already)."""
        if not held:
            await self._slots.wait()
        try:
            return self._pooled(origin) or await self._connect(origin)
        except BaseException:
            self._slots.release()
            raise

    def _set_alarm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
        self._alarm_at = when
        self._alarm = loop.call_at(when, self._overdue)

    def _overdue(self) -> None:
        """End the exchanges past their deadline; set the alarm for the next one."""
        self._alarm = None
        loop = asyncio.get_running_loop()
        # A timer may go off a hair before its time (asyncio allows its clock's resolution).
        now = loop.time() + 0.001
        earliest: float | None = None
        for connection, deadline in list(self._deadlines.items()):
            if deadline <= now:
                connection.time_out()
            elif earliest is None or deadline < earliest:
                earliest = deadline
        if earliest is not None:
            self._set_alarm(loop, earliest)

    def _pooled(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin.key)
        if not idle:
            return None
        expired = asyncio.get_running_loop().time() - self._keepalive
        while idle:
            connection = idle.pop()
            if (
                not connection.closed
                and connection.idle_since > expired
                and connection.transport is not None
                and not connection.transport.is_closing()
            ):
                return connection
            self._discard(connection)
        return None

    async def _connect(self, origin: Origin) -> _Connection:
        """A new connection to the first allowed address of the origin's host that answers."""
        loop = asyncio.get_running_loop()
        addresses = await vetted_addresses(self.policy, origin.host, origin.port)
        tls = self._context() if origin.tls else None
        failure: OSError | None = None
        for address in addresses:
            try:
                _, connection = await loop.create_connection(
                    lambda: _Connection(self._drain_limit),
                    str(address),
                    origin.port,
                    ssl=tls,
                    # A fully qualified name's final dot is no part of its certificate's name.
                    server_hostname=origin.host.rstrip(".") if tls is not None else None,
                )
            except OSError as exc:
                failure = exc
                continue
            self._open.add(connection)
            return connection
        raise failure or OSError(f"cannot resolve {origin.host}: no address")

    def _release(self, origin: Origin, connection: _Connection) -> None:
        loop = asyncio.get_running_loop()
        connection.idle_since = loop.time()
        self._idle.setdefault(origin.key, []).append(connection)
        if self._sweep is None:
            self._sweep = loop.call_later(self._keepalive, self._expire)

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)

    def _expire(self) -> None:
        """Close the connections idle for the keep-alive time; come back for the others."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        expired = loop.time() - self._keepalive
        oldest: float | None = None
        for key, idle in list(self._idle.items()):
            kept = []
            for connection in idle:
                if connection.closed or connection.idle_since <= expired:
                    self._discard(connection)
                else:
                    kept.append(connection)
                    oldest = min(oldest or connection.idle_since, connection.idle_since)
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]
        if oldest is not None:
            self._sweep = loop.call_later(max(0.0, oldest - expired), self._expire)

    async def aclose(self) -> None:
        """Close every connection."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None
        for connection in list(self._open):
            self._discard(connection)
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports run their close
