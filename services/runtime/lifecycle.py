"""Process lifecycle: components that run until SIGTERM/SIGINT, then drain and stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from typing import Any, TypeVar

import uvicorn
from starlette.types import ASGIApp

from herald.runtime.response_writes import with_one_write
from herald.runtime.retriable import is_retriable

log = logging.getLogger(__name__)

T = TypeVar("T")

Component = Callable[[asyncio.Event], Awaitable[None]]
"""A long-running part of a service: runs until the event is set, then finishes its work."""


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a process's main coroutine on uvloop (asyncio's own loop where uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # not built for this platform
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process lifecycle owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


# h11 refuses a request head (request line and headers) larger than this: 16 KB.
MAX_HEAD_BYTES = 16 * 1024


def with_head_timeout(protocol: type[asyncio.Protocol], seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class, closing connections that take longer than `seconds` to
    send a complete request head, counted from the connection's start or its previous response.

    uvicorn has no such timeout of its own: without it a client that trickles a header byte now
    and then (slowloris) holds a connection for as long as it likes.
    """

    class HeadTimeout(protocol):  # type: ignore[valid-type,misc]
        # One timer per connection at most, re-armed when it fires early: a request that comes
        # in time moves the deadline (or clears it) without a timer created and cancelled.
        _timer: asyncio.TimerHandle | None = None
        _deadline: float | None = None
        _served: object = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._start_deadline()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._deadline is not None and self._request_started():
                self._deadline = None

        def on_response_complete(self) -> None:
            self._served = self.cycle
            super().on_response_complete()
            if not self.transport.is_closing() and not self._request_started():
                self._start_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._deadline = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            super().connection_lost(exc)

        def _request_started(self) -> bool:
            return self.cycle is not None and self.cycle is not self._served

        def _start_deadline(self) -> None:
            self._deadline = self.loop.time() + seconds
            if self._timer is None:
                self._timer = self.loop.call_at(self._deadline, self._check)

        def _check(self) -> None:
            self._timer = None
            if self._deadline is None:
                return  # a request head came in time; the next response sets a new deadline
            if self.loop.time() < self._deadline:
                self._timer = self.loop.call_at(self._deadline, self._check)
                return
            self._deadline = None
            if not self._request_started() and not self.transport.is_closing():
                self.transport.close()

    return HeadTimeout


def http_component(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    max_connections: int | None = None,
    keep_alive_timeout: float = 5.0,
    head_timeout: float | None = None,
) -> Component:
    """Serve an ASGI app until stopped (in-flight requests finish first).

    Beyond `max_connections` concurrent connections or requests, uvicorn answers 503; a
    connection that has not sent a whole request head within `head_timeout` seconds is closed.
    A response's head and body leave in one write (`herald.runtime.response_writes`).
    """

    async def serve(stop: asyncio.Event) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
            limit_concurrency=max_connections,
            timeout_keep_alive=int(max(1, keep_alive_timeout)),
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        )
        config.load()
        config.http_protocol_class = with_one_write(config.http_protocol_class)
        if head_timeout is not None:
            config.http_protocol_class = with_head_timeout(config.http_protocol_class, head_timeout)
        server = _Server(config)
        task = asyncio.create_task(server.serve())
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await task
        stopped.cancel()
        if task in done and not stop.is_set():
            raise RuntimeError(f"HTTP server on {host}:{port} stopped unexpectedly")

    return serve


async def run_components(components: Sequence[Component]) -> None:
    """Run components together until a signal arrives or one of them fails."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with asyncio.TaskGroup() as group:
            for component in components:
                group.create_task(_guard(component, stop))
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _guard(component: Component, stop: asyncio.Event) -> None:
    try:
        await component(stop)
    except BaseException:
        stop.set()  # let the other components drain before the group cancels them
        raise


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True when stopped meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def retry_until_done(work: Callable[[], Awaitable[T]], stop: asyncio.Event) -> T:
    """Retry work that failed on a passing outage (a database or broker restart), with backoff.

    Only retriable failures (`herald.runtime.retriable`) are retried; any other error is raised
    at once. Once stopping, it gives up after a few more tries so that shutdown is not held up
    forever.
    """
    failures = 0
    while True:
        try:
            return await work()
        except Exception as exc:
            if not is_retriable(exc):
                raise
            failures += 1
            if stop.is_set() and failures > 3:
                raise
            log.exception("work failed; retrying", extra={"failures": failures})
            await asyncio.sleep(min(5.0, 0.1 * 2**failures))
