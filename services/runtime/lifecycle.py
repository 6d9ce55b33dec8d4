"""Process lifecycle: components that run until SIGTERM/SIGINT, then drain and stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import TypeVar

import uvicorn
from starlette.types import ASGIApp

from herald.runtime.retriable import is_retriable

log = logging.getLogger(__name__)

T = TypeVar("T")

Component = Callable[[asyncio.Event], Awaitable[None]]
"""A long-running part of a service: runs until the event is set, then finishes its work."""


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process lifecycle owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def http_component(app: ASGIApp, host: str, port: int) -> Component:
    """Serve an ASGI app until stopped (in-flight requests finish first)."""

    async def serve(stop: asyncio.Event) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, lifespan="on"
        )
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
