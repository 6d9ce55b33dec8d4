"""How each process is put together: embedded (all in one) or one service per process."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from herald import __version__
from herald.core.topics import TopicCatalog
from herald.runtime.bus.connect import Bus
from herald.runtime.health import health_app
from herald.runtime.lifecycle import Component, http_component, run_components
from herald.runtime.metrics import Metrics
from herald.runtime.packaged import load_topics
from herald.runtime.settings import Settings
from herald.runtime.store.database import Database

if TYPE_CHECKING:
    from herald.ingest.auth.server import AuthServer

log = logging.getLogger(__name__)
# Allocations between two collections of the youngest generation (see run_process).
GEN0_THRESHOLD = 10_000


@dataclass
class Parts:
    """What every service of a process shares."""

    settings: Settings
    database: Database
    bus: Bus
    topics: TopicCatalog
    metrics: Metrics


@asynccontextmanager
async def open_parts(settings: Settings) -> AsyncIterator[Parts]:
    """Connect the store (migrated) and the bus, load topics; close all on exit."""
    topics = load_topics(settings.topics_dir)
    database = Database(settings.database_url)
    try:
        await database.migrate()
        bus = Bus(settings, database)
        await bus.prepare()
        metrics = Metrics()
        metrics.watch_database(database)
        yield Parts(settings, database, bus, topics, metrics)
    finally:
        await database.aclose()


async def _readiness(parts: Parts) -> dict[str, bool]:
    return {"database": await parts.database.ping(), "bus": await parts.bus.ping()}


def _ingest(parts: Parts, auth: AuthServer | None) -> list[Component]:
    # Imported here: a matcher or dispatcher restarted after a crash starts a third faster
    # without the FHIR API's modules, and its partitions wait for it meanwhile.
    from herald.ingest.app import create_app
    from herald.ingest.context import IngestContext
    from herald.ingest.relay import relay_once, run_relay
    from herald.runtime.store.outbox import Outbox

    # The embedded bus writes in the write's own transaction: changes go straight into its log.
    # Only on SQLite, whose single writer makes the log's ids follow commit order (readers
    # resume after an id); concurrent PostgreSQL transactions may commit a later id first.
    direct = parts.bus.embedded if parts.database.is_sqlite else None
    ctx = IngestContext(
        parts.settings,
        parts.database,
        parts.topics,
        parts.metrics,
        auth=auth,
        outbox=Outbox(direct),
    )
    app = create_app(ctx, lambda: _readiness(parts))

    async def relay(stop: asyncio.Event) -> None:
        async with parts.bus.publisher() as publisher:
            await run_relay(ctx, publisher, stop)

    settings = parts.settings
    server = http_component(
        app,
        settings.host,
        settings.port,
        max_connections=settings.max_connections,
        keep_alive_timeout=settings.keep_alive_timeout,
        head_timeout=settings.header_timeout,
    )
    if ctx.outbox.relayed:
        return [server, relay]

    async def drained_then_served(stop: asyncio.Event) -> None:
        # Rows an older version left in the outbox reach the bus before any new write does:
        # a Task's next change must not overtake its previous one.
        async with parts.bus.publisher() as publisher:
            while await relay_once(ctx, publisher):
                pass
        await server(stop)

    return [drained_then_served]


def _matcher(parts: Parts) -> Component:
    from herald.matcher.service import run_matcher

    async def matcher(stop: asyncio.Event) -> None:
        await run_matcher(
            parts.settings, parts.database, parts.bus, parts.topics, parts.metrics, stop
        )

    return matcher


def _dispatcher(parts: Parts, stack: AsyncExitStack) -> Component:
    # Imported here, as the FHIR API's modules are: the HTTP client and the delivery machinery
    # are a fifth of a matcher's start, which its partitions wait for after a crash.
    from herald.dispatcher.circuit_breakers import CircuitBreakers
    from herald.dispatcher.delivery import Deliverer
    from herald.dispatcher.service import run_dispatcher
    from herald.runtime.sender import HttpSender
    from herald.runtime.slots import Slots

    sender = HttpSender(parts.settings.endpoint_policy)
    stack.push_async_callback(sender.aclose)
    deliverer = Deliverer(
        parts.settings,
        parts.database,
        parts.topics,
        sender,
        parts.metrics,
        Slots(parts.settings.max_in_flight),
        CircuitBreakers(
            concurrency=parts.settings.endpoint_concurrency,
            failures=parts.settings.circuit_failures,
            cooldown=parts.settings.circuit_cooldown_seconds,
            max_cooldown=parts.settings.circuit_max_cooldown,
            on_change=parts.metrics.circuit_open.set,
        ),
    )

    async def dispatcher(stop: asyncio.Event) -> None:
        await run_dispatcher(deliverer, parts.bus, stop)

    return dispatcher


def _health(parts: Parts, role: str) -> Component:
    app = health_app(parts.metrics, lambda: _readiness(parts))
    return http_component(app, parts.settings.host, parts.settings.health_port_of(role))


async def run_process(settings: Settings, role: str) -> None:
    """Run one role: run (embedded, everything), ingest, matcher or dispatcher."""
    async with AsyncExitStack() as stack:
        parts = await stack.enter_async_context(open_parts(settings))
        parts.metrics.build_info.labels(version=__version__, role=role).set(1)
        components: list[Component] = []
        smart = settings.auth_mode(role) == "smart"
        if role in ("run", "ingest"):
            from herald.ingest.auth.server import AuthServer

            auth = AuthServer(settings, parts.database) if smart else None
            if auth is not None:
                stack.push_async_callback(auth.aclose)
            components += _ingest(parts, auth)
        if role in ("run", "matcher"):
            components.append(_matcher(parts))
        if role in ("run", "dispatcher"):
            components.append(_dispatcher(parts, stack))
        if role in ("matcher", "dispatcher") or smart:
            components.append(_health(parts, role))
        log.info(
            "herald %s starting",
            role,
            extra={
                "mode": "embedded" if settings.embedded else "distributed",
                "auth": settings.auth_mode(role),
            },
        )
        # What start-up built (modules, the app, settings, topics) lives as long as the process:
        # frozen, the collector stops tracing it at every older-generation collection, which
        # under load cost about 5 % of the process's CPU. (No collection first: it would add
        # tens of milliseconds to a restarted matcher's or dispatcher's start.)
        gc.freeze()
        # A request makes a few hundred container objects, nearly all freed by their reference
        # counts as it ends: collecting the youngest generation every 700 allocations (Python's
        # default) walked objects still in flight and promoted them to older generations, whose
        # collections then walked them again. Every GEN0_THRESHOLD allocations, most are gone.
        gc.set_threshold(GEN0_THRESHOLD, *gc.get_threshold()[1:])
        await run_components(components)
