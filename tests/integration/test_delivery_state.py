"""What a dispatcher keeps between POSTs: delivery positions, the registry watch, the cached
subscription; on SQLite and PostgreSQL, with a real loopback subscriber."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from herald.core.resources import with_version
from herald.core.states import DeliveryOutcome, DeliveryResult
from herald.dispatcher.circuit_breakers import CircuitBreakers
from herald.dispatcher.delivery import READ_AHEAD, READ_AHEAD_BUDGET, Deliverer, attempt_of
from herald.dispatcher.progress import Progress
from herald.dispatcher.service import Schedule, Workers, _scan
from herald.dispatcher.watch import RegistryWatch
from herald.runtime.bus.embedded import EmbeddedBus
from herald.runtime.settings import Settings
from herald.runtime.store import attempts, events, resources, subscriptions
from herald.runtime.store.attempts import KEEP
from herald.runtime.store.database import Database
from herald.runtime.store.events import LoggedEvent
from herald.runtime.store.tables import delivery_attempts
from tests.support.delivery import open_deliverer
from tests.support.fhir import BACKPORT, HREX_TOPIC, backport_subscription
from tests.support.receiver import Receiver

NOW = "2026-01-01T00:00:00.000Z"


async def _add_subscription(
    database: Database, sub_id: str, endpoint: str, *, max_count: int = 1, content: str = "id-only"
) -> None:
    extensions = [{"url": BACKPORT + "backport-max-count", "valuePositiveInt": max_count}]
    resource = backport_subscription(
        endpoint, status="active", content=content, channel_extensions=extensions
    )
    async with database.transaction() as connection:
        await subscriptions.insert_new(
            connection, with_version(resource, sub_id, 1, NOW), status="active", topic=HREX_TOPIC
        )


async def _add_events(database: Database, sub_id: str, count: int, first: int = 0) -> None:
    async with database.transaction() as connection:
        for n in range(first, first + count):
            event = LoggedEvent(sub_id, 0, f"{sub_id}:{n}", "Task", f"t{n}", "1", "create", NOW)
            assert await events.record(connection, event, NOW) is not None


async def _delivered_through(database: Database, sub_id: str) -> int:
    async with database.read() as connection:
        stored = await subscriptions.get(connection, sub_id)
    assert stored is not None
    return stored.delivered_through


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A loopback subscriber."""
    with Receiver() as r:
        yield r


@asynccontextmanager
async def _delivering(database: Database, **settings: Any) -> AsyncIterator[Deliverer]:
    """A dispatcher's delivery side on the test database (Deliverer fields as keywords)."""
    breakers = settings.pop("breakers", None)
    config = Settings(database_url="sqlite://", allow_http_endpoints=True, **settings)
    async with open_deliverer(config, database, breakers) as deliverer:
        yield deliverer


@pytest.fixture
async def deliverer(database: Database) -> AsyncIterator[Deliverer]:
    """A dispatcher's delivery side on the test database."""
    async with _delivering(database) as made:
        yield made


def _numbers(receiver: Receiver) -> list[int]:
    return [n for r in receiver.of_kind("event-notification") for n in r.event_numbers]


async def test_positions_are_stored_in_one_flush_and_never_go_back(database: Database) -> None:
    for sub_id in ("a", "b"):
        await _add_subscription(database, sub_id, "http://127.0.0.1:9/")
        await _add_events(database, sub_id, 5)
    progress = Progress(database)
    progress.delivered("a", 3)
    progress.delivered("b", 2)
    progress.delivered("a", 1)  # an older position changes nothing
    assert progress.position("a", 0) == 3 and progress.position("a", 4) == 4
    assert progress.unwritten == 2
    await progress.flush()
    assert progress.unwritten == 0
    assert (await _delivered_through(database, "a"), await _delivered_through(database, "b")) == (
        3,
        2,
    )

    # A client re-activation skips the backlog; a position noted before it must not undo that.
    async with database.transaction() as connection:
        stored = await subscriptions.get(connection, "b")
        assert stored is not None
        await subscriptions.replace(
            connection, stored.stored, status="requested", topic=HREX_TOPIC, skip_backlog=True
        )
    progress.delivered("b", 4)
    await progress.flush()
    assert await _delivered_through(database, "b") == 5


async def test_attempts_are_stored_with_positions_and_trimmed(database: Database) -> None:
    for sub_id in ("a", "b"):
        await _add_subscription(database, sub_id, "http://127.0.0.1:9/")
    progress = Progress(database)
    outcome = DeliveryOutcome(DeliveryResult.SUCCESS, 200, "accepted")
    for n in range(1, KEEP + 4):
        progress.attempted(attempt_of("a", "event", (n, n), outcome, 0.01))
    failed = DeliveryOutcome(DeliveryResult.HTTP_ERROR, 503, "unavailable")
    progress.attempted(attempt_of("b", "event", None, failed, 0.5))
    progress.delivered("a", KEEP + 3)
    await progress.flush()
    async with database.read() as connection:
        kept = await attempts.recent(connection, "a")
        (other,) = await attempts.recent(connection, "b")
    assert [a.first_event for a in kept] == list(range(KEEP + 3, 3, -1))
    assert (other.first_event, other.status_code, other.outcome) == (None, 503, "http_error")
    assert other.detail == "unavailable" and other.seconds == 0.5
    assert await _delivered_through(database, "a") == KEEP + 3


async def test_old_attempts_are_dropped_once_keep_more_were_stored(database: Database) -> None:
    await _add_subscription(database, "a", "http://127.0.0.1:9/")
    progress = Progress(database)
    outcome = DeliveryOutcome(DeliveryResult.SUCCESS, 200, "accepted")

    async def flush(first: int, count: int) -> tuple[list[int | None], int]:
        for n in range(first, first + count):
            progress.attempted(attempt_of("a", "event", (n, n), outcome, 0.01))
        await progress.flush()
        async with database.read() as connection:
            shown = [a.first_event for a in await attempts.recent(connection, "a")]
            stored = await connection.scalar(select(func.count()).select_from(delivery_attempts))
        return shown, int(stored or 0)

    def newest(last: int) -> list[int | None]:
        return list(range(last, last - KEEP, -1))

    # The first flush after a start prunes (what an earlier process stored is not known).
    assert await flush(1, KEEP + 3) == (newest(KEEP + 3), KEEP)
    # Fewer than KEEP since: nothing dropped yet on SQLite (PostgreSQL's herald_store_progress
    # prunes on every call), the newest KEEP shown.
    unpruned = 2 * KEEP - 1 if database.is_sqlite else KEEP
    assert await flush(KEEP + 4, KEEP - 1) == (newest(2 * KEEP + 2), unpruned)
    # The KEEP-th since the prune: pruned again.
    assert await flush(2 * KEEP + 3, 1) == (newest(2 * KEEP + 3), KEEP)


async def test_positions_wait_in_memory_while_the_database_is_away(
    database: Database, tmp_path: Path
) -> None:
    await _add_subscription(database, "a", "http://127.0.0.1:9/")
    unreachable = Database(f"sqlite:///{tmp_path / 'missing' / 'folder' / 'herald.db'}")
    progress = Progress(unreachable)
    progress.delivered("a", 2)
    with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises
        await progress.flush()
    await unreachable.aclose()
    assert progress.unwritten == 1 and progress.position("a", 0) == 2
    progress.database = database
    await progress.flush()
    assert await _delivered_through(database, "a") == 2


async def test_watch_reports_changed_subscriptions_once(database: Database) -> None:
    await _add_subscription(database, "a", "http://127.0.0.1:9/")
    await _add_subscription(database, "b", "http://127.0.0.1:9/")
    watch = RegistryWatch(database)
    assert await watch.changed() == []  # the first look only sets the starting point
    async with database.transaction() as connection:
        await subscriptions.set_status(connection, "b", "off")
    assert await watch.changed() == ["b"]
    assert await watch.changed() == []


async def test_a_backlog_is_read_ahead_and_sent_in_order(
    database: Database, deliverer: Deliverer, receiver: Receiver
) -> None:
    backlog = READ_AHEAD + 30
    await _add_subscription(database, "s", receiver.url, max_count=7)
    await _add_events(database, "s", backlog)
    await deliverer.deliver_pending("s", asyncio.Event())
    assert _numbers(receiver) == list(range(1, backlog + 1))
    assert max(len(r.event_numbers) for r in receiver.received) == 7
    await deliverer.progress.flush()
    assert await _delivered_through(database, "s") == backlog

    # A later wake sends only what came since, from the position kept in memory.
    await _add_events(database, "s", 3, first=backlog)
    await deliverer.deliver_pending("s", asyncio.Event())
    assert _numbers(receiver) == list(range(1, backlog + 4))
    assert deliverer.held == 0


async def test_past_its_budget_a_dispatcher_reads_one_bundle_at_a_time(
    database: Database, deliverer: Deliverer, receiver: Receiver
) -> None:
    await _add_subscription(database, "s", receiver.url, max_count=2)
    await _add_events(database, "s", 5)
    deliverer.held = READ_AHEAD_BUDGET  # other workers hold the whole budget
    loaded = await deliverer._load("s")
    assert loaded is not None
    events, complete = await deliverer._read_ahead(*loaded)
    assert ([e.number for e in events], complete) == ([1, 2], False)
    await deliverer.deliver_pending("s", asyncio.Event())
    assert [r.event_numbers for r in receiver.of_kind("event-notification")] == [
        [1, 2],
        [3, 4],
        [5],
    ]
    assert deliverer.held == READ_AHEAD_BUDGET


async def test_full_resource_bundles_carry_the_version_that_triggered_each_event(
    database: Database, deliverer: Deliverer, receiver: Receiver
) -> None:
    await _add_subscription(database, "s", receiver.url, max_count=10, content="full-resource")
    previous = None
    async with database.transaction() as connection:
        for version in (1, 2, 3):
            task = with_version(
                {"resourceType": "Task", "status": "requested", "intent": "order"},
                "t",
                version,
                NOW,
            )
            task["description"] = f"version {version}"
            await resources.save(connection, task, previous=previous)
            previous = await resources.current(connection, "Task", "t")
            event = LoggedEvent("s", 0, f"s:{version}", "Task", "t", str(version), "update", NOW)
            await events.record(connection, event, NOW)
    await deliverer.deliver_pending("s", asyncio.Event())
    (bundle,) = receiver.of_kind("event-notification")
    assert bundle.event_numbers == [1, 2, 3]
    sent = [e["resource"] for e in bundle.body["entry"][1:]]
    assert [(t["meta"]["versionId"], t["description"]) for t in sent] == [
        ("1", "version 1"),
        ("2", "version 2"),
        ("3", "version 3"),
    ]


async def test_a_change_by_another_process_stops_delivery_once_seen(
    database: Database, deliverer: Deliverer, receiver: Receiver
) -> None:
    await _add_subscription(database, "s", receiver.url)
    await _add_events(database, "s", 2)
    await deliverer.deliver_pending("s", asyncio.Event())
    assert _numbers(receiver) == [1, 2]

    watch = RegistryWatch(database)
    await watch.changed()
    async with database.transaction() as connection:  # the client turns it off via the API
        await subscriptions.set_status(connection, "s", "off")
    await _add_events(database, "s", 2, first=2)
    for subscription_id in await watch.changed():
        deliverer.forget(subscription_id)
    await deliverer.deliver_pending("s", asyncio.Event())
    assert _numbers(receiver) == [1, 2]


async def test_a_gone_endpoint_turns_the_subscription_off(
    database: Database, deliverer: Deliverer, receiver: Receiver
) -> None:
    await _add_subscription(database, "s", receiver.url)
    await _add_events(database, "s", 3)
    receiver.status = 410
    await deliverer.deliver_pending("s", asyncio.Event())
    assert _numbers(receiver) == [1]  # no further POST once the endpoint said it is gone
    async with database.read() as connection:
        stored = await subscriptions.get(connection, "s")
    assert stored is not None and stored.status == "off"
    await deliverer.deliver_pending("s", asyncio.Event())  # the cache was dropped with the change
    assert _numbers(receiver) == [1]


async def test_a_subscription_owned_elsewhere_is_not_delivered_here(
    database: Database, deliverer: Deliverer, receiver: Receiver
) -> None:
    await _add_subscription(database, "s", receiver.url)
    await _add_events(database, "s", 3)
    owned = iter([True, False])  # the partition moves away after the first POST
    await deliverer.deliver_pending("s", asyncio.Event(), owned=lambda: next(owned))
    assert _numbers(receiver) == [1]


async def _record(
    database: Database, deliverer: Deliverer, sub_id: str, first: int, count: int
) -> None:
    """Record events as the dispatcher does: committed, then handed to the deliverer."""
    kept = []
    async with database.transaction() as connection:
        for n in range(first, first + count):
            event = LoggedEvent(sub_id, 0, f"{sub_id}:{n}", "Task", f"t{n}", "1", "create", NOW)
            number = await events.record(connection, event, NOW)
            assert number is not None
            kept.append(dataclasses.replace(event, number=number))
    for event in kept:
        deliverer.recorded(event)


async def test_just_recorded_events_are_sent_from_memory_in_order(
    database: Database, deliverer: Deliverer, receiver: Receiver
) -> None:
    await _add_subscription(database, "s", receiver.url, max_count=2)
    await _record(database, deliverer, "s", 0, 5)
    statements = database.statements
    await deliverer.deliver_pending("s", asyncio.Event())
    assert _numbers(receiver) == [1, 2, 3, 4, 5]
    # The subscription was read; the events were not read back.
    assert database.statements - statements == 1

    # Events recorded elsewhere (a gap in what this dispatcher kept) are read from the log.
    await _add_events(database, "s", 2, first=5)
    await _record(database, deliverer, "s", 7, 2)
    await deliverer.deliver_pending("s", asyncio.Event())
    assert _numbers(receiver) == list(range(1, 10))
    assert deliverer.held == 0


async def test_what_is_kept_in_memory_is_bounded(database: Database, deliverer: Deliverer) -> None:
    await _add_subscription(database, "s", "http://127.0.0.1:9/")
    await _record(database, deliverer, "s", 0, READ_AHEAD + 5)
    assert len(deliverer._recent["s"]) <= READ_AHEAD
    deliverer.forget("s")
    assert deliverer._recent_count == 0


async def test_a_handshake_origin_is_dropped_once_no_handshake_is_pending(
    database: Database, deliverer: Deliverer
) -> None:
    # The scan woke the worker and the handshake was sent before the bus record naming the
    # Subscription write arrived: nothing will take its origin, so it is not kept.
    await _add_subscription(database, "s", "http://127.0.0.1:9/")  # active
    deliverer.handshake_origins["s"] = "r1"
    deliverer.handshake_origins["gone"] = "r2"
    await deliverer.handshake("s", asyncio.Event())
    await deliverer.handshake("gone", asyncio.Event())
    assert deliverer.handshake_origins == {}


async def test_an_endpoint_that_comes_back_is_found_by_a_probe_long_before_the_retry(
    database: Database, receiver: Receiver
) -> None:
    await _add_subscription(database, "s", receiver.url)
    await _add_events(database, "s", 3)
    receiver.status = 503
    breakers = CircuitBreakers(failures=1, cooldown=0.1, max_cooldown=0.2)
    async with _delivering(database, retry_delays="3600", breakers=breakers) as deliverer:
        worker = asyncio.create_task(deliverer.deliver_pending("s", asyncio.Event()))
        await asyncio.to_thread(receiver.wait_for, lambda r: bool(r.received))
        await asyncio.sleep(0.5)  # a probe or two fail meanwhile
        assert not worker.done()
        receiver.status = 200
        # The retry is an hour away; the probe of the open circuit delivers within a moment.
        await asyncio.wait_for(worker, 60)
        await deliverer.progress.flush()
    assert _numbers(receiver)[-3:] == [1, 2, 3]
    assert await _delivered_through(database, "s") == 3


class _NotedWorkers(Workers):
    """Workers that note which subscriptions were woken."""

    def __init__(self, deliverer: Deliverer) -> None:
        super().__init__(deliverer, asyncio.Event(), lambda _: True)
        self.woken: list[str] = []

    def wake(self, subscription_id: str, *, heartbeat: bool = False) -> None:
        """Note the wake-up, then wake as usual."""
        self.woken.append(subscription_id)
        super().wake(subscription_id, heartbeat=heartbeat)


async def test_the_scan_wakes_only_subscriptions_behind_what_was_delivered_here(
    database: Database, deliverer: Deliverer, receiver: Receiver
) -> None:
    # Both look behind in the registry (no position stored yet); "caught" was delivered here
    # through its last event, and only the flush that stores it is still to come.
    for sub_id in ("behind", "caught"):
        await _add_subscription(database, sub_id, receiver.url, max_count=10)
        await _add_events(database, sub_id, 2)
    deliverer.progress.delivered("caught", 2)
    workers = _NotedWorkers(deliverer)
    consumer = EmbeddedBus(database).consumer("dispatcher", "notifications")
    await _scan(deliverer, consumer, workers, Schedule())
    await workers.drain(timeout=30.0)
    assert workers.woken == ["behind"]
    assert _numbers(receiver) == [1, 2]

    # An event numbered elsewhere afterwards (another dispatcher, before a rebalance) puts
    # "caught" behind again: the next scan wakes it.
    await _add_events(database, "caught", 1, first=2)
    await _scan(deliverer, consumer, workers, Schedule())
    await workers.drain(timeout=30.0)
    assert workers.woken == ["behind", "caught"]
    assert _numbers(receiver) == [1, 2, 3]
