"""A counting limit for the notification POST path: asyncio.Semaphore's behaviour, fewer steps.

Every notification passes three limits (its origin's concurrency, the dispatcher's in-flight
bound, the HTTP client's connections). asyncio.Semaphore's `async with` costs two coroutines,
an inner acquire coroutine, a scan of its waiters and a loop lookup even when a slot is free;
here a free slot is one comparison (`take`), and only a caller that must wait awaits.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from types import TracebackType


class Slots:
    """At most `count` holders at once; waiters are served first come, first served."""

    __slots__ = ("_count", "_free", "_waiters")

    def __init__(self, count: int) -> None:
        self._count = count
        self._free = count
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def free(self) -> int:
        """Slots not held now."""
        return self._free

    @property
    def held(self) -> int:
        """Slots held now."""
        return self._count - self._free

    def take(self) -> bool:
        """Take a slot if one is free and nobody waits for one; never waits."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def wait(self) -> None:
        """Take a slot, waiting for one if need be (a cancelled wait holds none)."""
        if self.take():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot while being cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back: to the first caller waiting, or to the free ones."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    async def __aenter__(self) -> None:
        if not self.take():
            await self.wait()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
