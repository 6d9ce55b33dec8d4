"""asyncpg as Herald uses it: counted round trips, and a ping only for connections left idle.

Every request asyncpg makes of the server waits for the server's answer before the next one
can go (one round trip): preparing a statement, running it (once, or pipelined for many sets of
parameters), a simple query such as BEGIN or COMMIT, closing a statement. Herald counts them
(herald_database_round_trips_total) by wrapping the protocol object of each connection, so
that the figure is what was sent, whichever layer (SQLAlchemy, asyncpg's prepared statements,
store/direct.py) sent it.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine

# A connection back from the pool after this long unused is pinged before it is handed out
# (a server restart meanwhile would otherwise fail the request that gets it). One used more
# recently is trusted: a ping on every checkout cost three round trips per transaction
# (BEGIN, the ping, ROLLBACK), about a fifth of a Task write's. A connection that fails
# anyway makes SQLAlchemy discard every pooled connection as old as it.
IDLE_PING_AFTER = 1.0

_IDLE_SINCE = "herald_idle_since"


class Counts:
    """What the connections of one database handle sent."""

    __slots__ = ("direct_statements", "round_trips")

    def __init__(self) -> None:
        self.round_trips = 0
        self.direct_statements = 0
        """Statements store/direct.py ran on asyncpg itself (SQLAlchemy counts its own)."""


class _CountingProtocol:
    """An asyncpg protocol whose requests are counted; everything else passes through."""

    __slots__ = ("_counts", "_protocol")

    def __init__(self, protocol: Any, counts: Counts) -> None:
        self._protocol = protocol
        self._counts = counts

    def __getattr__(self, name: str) -> Any:
        return getattr(self._protocol, name)


# The protocol's requests that wait for the server's answer: prepare (Parse, Describe), run a
# prepared statement once or pipelined for many sets of parameters, a cursor's bind and
# fetch, a simple query (BEGIN, COMMIT...), close a statement, COPY.
_REQUESTS = (
    "prepare",
    "bind_execute",
    "bind_execute_many",
    "bind",
    "execute",
    "query",
    "close_statement",
    "copy_in",
    "copy_out",
)


def _counted(name: str) -> Any:
    def request(self: _CountingProtocol, *args: Any, **kwargs: Any) -> Any:
        self._counts.round_trips += 1
        return getattr(self._protocol, name)(*args, **kwargs)

    request.__name__ = name
    return request


for _name in _REQUESTS:
    setattr(_CountingProtocol, _name, _counted(_name))


class CountedConnection(asyncpg.Connection):  # type: ignore[misc]
    """An asyncpg connection that counts its round trips in `herald_counts`."""

    __slots__ = ()
    herald_counts: Counts

    def __init__(self, protocol: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(_CountingProtocol(protocol, self.herald_counts), *args, **kwargs)


def connection_class(counts: Counts) -> type[CountedConnection]:
    """A connection class (asyncpg.connect's `connection_class`) counting into `counts`."""
    return type("CountedConnection", (CountedConnection,), {"herald_counts": counts})


def ping_when_idle(engine: AsyncEngine) -> None:
    """Ping a pooled connection at checkout only when it was unused for IDLE_PING_AFTER."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop(_IDLE_SINCE, None)
        if since is None or time.monotonic() - since < IDLE_PING_AFTER:
            return  # new, or in use a moment ago
        try:
            dbapi_connection.ping()
        except Exception as exc:
            # The pool discards this connection and tries another (or a new one).
            raise DisconnectionError("pooled connection did not answer a ping") from exc
