"""A response's head and its body written to the socket together.

uvicorn writes the head of a response (status line and headers) when the app sends
`http.response.start`, and the body when it sends `http.response.body`: two writes, two system
calls and, on the other end, two wake-ups for one small answer. Here the head is held back until
the first body write (which an ASGI app sends right after it, even when empty) and goes out with
it in one write. A `100 Continue` is written before the response starts and is never held.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _HeadWithBody:
    """The transport of one response cycle, holding the head until the body follows."""

    __slots__ = ("_cycle", "_head", "_transport", "_written")

    def __init__(self, transport: asyncio.Transport, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._written = False

    def write(self, data: bytes) -> None:
        """Hold the response's head; write anything after it (joined to the head) at once."""
        if not self._written and self._cycle.response_started:
            self._written = True
            self._head = data
            return
        if self._head is not None:
            data = self._head + data
            self._head = None
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def with_one_write(protocol: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class, writing each response's head and first body part at once
    (httptools only: any other protocol class is returned as it is)."""
    if not issubclass(protocol, HttpToolsProtocol):
        return protocol

    class OneWrite(protocol):  # type: ignore[valid-type,misc]
        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            cycle = self.cycle
            # The cycle's task has not run yet: it writes through the wrapper from the start.
            if cycle is not None and cycle.transport is self.transport:
                cycle.transport = _HeadWithBody(self.transport, cycle)

    return OneWrite
