"""The dispatcher loop: record requests durably, commit offsets, one worker per subscription."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import timedelta
from functools import partial

from sqlalchemy.ext.asyncio import AsyncConnection

from herald.core.contracts import NOTIFICATIONS, decode_request
from herald.core.errors import ContractError
from herald.core.fhir import format_instant, now_instant, utc_now
from herald.core.states import SubscriptionStatus
from herald.dispatcher.delivery import Deliverer
from herald.dispatcher.watch import RegistryWatch
from herald.runtime.bus.base import Consumer, Record
from herald.runtime.bus.connect import Bus
from herald.runtime.lifecycle import retry_until_done
from herald.runtime.logs import logging_request
from herald.runtime.store import events as event_log
from herald.runtime.store import subscriptions as registry
from herald.runtime.store.events import LoggedEvent

log = logging.getLogger(__name__)

# Commits consumed records inside a store transaction (Bus.commit_in, bound to a consumer).
Committer = Callable[[Sequence[Record], AsyncConnection], Awaitable[None]]


# How often the dispatcher looks for work it was not told about (after a restart, a rebalance).
SCAN_INTERVAL = 5.0
# Back-off of a worker that failed unexpectedly: doubles per repeated failure, up to the cap.
WORKER_BACKOFF = 5.0
MAX_WORKER_BACKOFF = 300.0
# How often delivered events older than the retention are dropped from the event log.
PRUNE_INTERVAL = 600.0


class Workers:
    """At most one worker task per subscription; a wake-up during a run makes it run again."""

    def __init__(
        self, deliverer: Deliverer, stop: asyncio.Event, owns: Callable[[str], bool]
    ) -> None:
        self.deliverer = deliverer
        self.stop = stop
        self.owns = owns
        """Whether this dispatcher still owns a subscription (its partition is assigned here)."""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._heartbeat: set[str] = set()
        self._failures: dict[str, int] = {}
        self._resume_at: dict[str, float] = {}
        """After a worker failed unexpectedly, wake-ups before this moment are ignored."""

    def wake(self, subscription_id: str, *, heartbeat: bool = False) -> None:
        """Make sure the subscription's worker runs (again) soon; check its heartbeat if asked."""
        if heartbeat:
            self._heartbeat.add(subscription_id)
        if time.monotonic() < self._resume_at.get(subscription_id, 0.0):
            return  # backing off after a failure; the periodic scan wakes it later
        if subscription_id in self._tasks:
            self._again.add(subscription_id)
            return
        self._tasks[subscription_id] = asyncio.create_task(self._run(subscription_id))

    async def _run(self, subscription_id: str) -> None:
        try:
            while True:
                self._again.discard(subscription_id)
                try:
                    await self.deliverer.handshake(subscription_id, self.stop)
                    await self.deliverer.deliver_pending(
                        subscription_id, self.stop, owned=partial(self.owns, subscription_id)
                    )
                    if subscription_id in self._heartbeat:
                        self._heartbeat.discard(subscription_id)
                        await self.deliverer.heartbeat(subscription_id)
                except Exception:
                    # Not a delivery failure (those are outcomes): the store is away, or a bug.
                    # The worker stops, counted and logged, and is woken again after a back-off
                    # that grows while the failure repeats, so it never spins nor goes silent.
                    failures = self._failures.get(subscription_id, 0) + 1
                    self._failures[subscription_id] = failures
                    backoff = min(WORKER_BACKOFF * 2 ** (failures - 1), MAX_WORKER_BACKOFF)
                    self._resume_at[subscription_id] = time.monotonic() + backoff
                    self.deliverer.metrics.worker_failures.inc()
                    log.exception(
                        "worker failed; retrying after a back-off",
                        extra={"subscription_id": subscription_id, "delay": backoff},
                    )
                    return
                self._failures.pop(subscription_id, None)
                self._resume_at.pop(subscription_id, None)
                if subscription_id not in self._again or self.stop.is_set():
                    return
        finally:
            self._tasks.pop(subscription_id, None)

    async def drain(self, timeout: float) -> None:
        """Wait for running workers (they stop at their next pause), then cancel stragglers."""
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def record(
    deliverer: Deliverer, records: list[Record], commit: Committer | None = None
) -> set[str]:
    """Number and store the events of a batch (and `commit` the records in the same
    transaction, when given); return the subscriptions to wake."""
    requests = []
    for r in records:
        try:
            requests.append((decode_request(r.value), r.request_id))
        except ContractError as exc:
            deliverer.metrics.malformed.labels("dispatcher").inc()
            with logging_request(r.request_id):
                log.error("skipping malformed notification request", extra={"reason": str(exc)})
    # Grouped by subscription (the sort is stable, so each keeps its order): a worker's kept
    # events then come as one run of consecutive numbers (Deliverer.recorded).
    requests.sort(key=lambda pair: pair[0].subscription_id)
    wake = {request.subscription_id for request, _ in requests}
    now = now_instant()
    events = [
        LoggedEvent(
            subscription_id=request.subscription_id,
            number=0,
            request_id=request.request_id,
            resource_type=request.resource_type or "",
            resource_id=request.resource_id or "",
            version_id=request.version_id or "",
            interaction=request.interaction or "",
            occurred_at=request.occurred_at or now,
            origin_request_id=origin,
            method=request.method,
        )
        for request, origin in requests
        if request.kind == "event"
    ]
    if commit is None:
        numbers = await event_log.record_alone(deliverer.database, events, now)
    else:
        async with deliverer.database.transaction() as connection:
            numbers = await event_log.record_many(connection, events, now)
            await commit(records, connection)
    recorded = []
    for event, number in zip(events, numbers, strict=True):
        if number is not None:  # None: a duplicate, recorded before
            event.number = number
            recorded.append(event)
    if len(recorded) < len(events):
        deliverer.metrics.duplicates.labels("dispatcher").inc(len(events) - len(recorded))
    if recorded:
        deliverer.metrics.events_recorded.inc(len(recorded))
    # Committed: the workers may take these from memory instead of reading them back.
    for event in recorded:
        deliverer.recorded(event)
    for request, origin in requests:
        if request.kind == "handshake":  # the subscription changed: read it again
            deliverer.forget(request.subscription_id)
            if origin:
                deliverer.handshake_origins[request.subscription_id] = origin
    return wake


class Schedule:
    """What the periodic scan found: heartbeat periods of owned active subscriptions."""

    def __init__(self) -> None:
        self.heartbeats: dict[str, int] = {}
        self.pruned_at = 0.0

    def due(self, last_contact: dict[str, float]) -> list[str]:
        """Subscriptions whose heartbeat period passed without contact."""
        now = time.monotonic()
        for subscription_id in self.heartbeats:
            last_contact.setdefault(subscription_id, now)
        return [
            subscription_id
            for subscription_id, period in self.heartbeats.items()
            if now - last_contact[subscription_id] >= period
        ]


async def _scan(
    deliverer: Deliverer, consumer: Consumer, workers: Workers, schedule: Schedule
) -> None:
    now = utc_now()
    async with deliverer.database.read() as connection:
        todo = await registry.with_work(connection)
        ended = await registry.past_end(connection, format_instant(now))
        heartbeats = await registry.heartbeat_periods(connection)
        counts = await registry.count_by_status(connection)
    for each in SubscriptionStatus:
        deliverer.metrics.subscriptions.labels(each).set(counts.get(each, 0))
    for subscription_id, status, events_count in todo:
        if not consumer.owns(subscription_id):
            continue
        # The stored position lags what this dispatcher delivered by up to one progress flush,
        # so nearly every busy subscription looks behind in the registry. One whose position
        # here reached the counter just read has nothing undelivered as of that read (events
        # numbered since wake their worker when recorded here, and show up in the next scan
        # when recorded elsewhere); waking it would only read the event log for nothing.
        if (
            status == SubscriptionStatus.ACTIVE
            and deliverer.progress.position(subscription_id, 0) >= events_count
        ):
            continue
        workers.wake(subscription_id)
    for subscription_id, status in ended:
        if not consumer.owns(subscription_id):
            continue
        async with deliverer.database.transaction() as connection:
            await registry.set_status(
                connection,
                subscription_id,
                SubscriptionStatus.OFF,
                error="the subscription reached its end",
                expected=status,
            )
        deliverer.forget(subscription_id)
    schedule.heartbeats = {s: p for s, p in heartbeats.items() if consumer.owns(s)}
    if time.monotonic() - schedule.pruned_at > PRUNE_INTERVAL:
        schedule.pruned_at = time.monotonic()
        cutoff = now - timedelta(days=deliverer.settings.event_retention_days)
        async with deliverer.database.transaction() as connection:
            pruned = await event_log.prune(connection, format_instant(cutoff))
        if pruned:
            log.info("pruned delivered events past retention", extra={"events": pruned})
    deliverer.metrics.consumer_lag.labels("dispatcher").set(await consumer.lag() or 0)


async def _watch(
    deliverer: Deliverer, consumer: Consumer, workers: Workers, watch: RegistryWatch
) -> None:
    for subscription_id in await watch.changed():
        deliverer.forget(subscription_id)
        if consumer.owns(subscription_id):
            workers.wake(subscription_id)


async def run_dispatcher(deliverer: Deliverer, bus: Bus, stop: asyncio.Event) -> None:
    """Consume requests until stopped, then let workers finish their current POST."""
    progress = asyncio.create_task(deliverer.progress.run(stop))
    try:
        group = deliverer.settings.topic("dispatcher")
        async with bus.consumer(group, NOTIFICATIONS) as consumer:
            workers = Workers(deliverer, stop, consumer.owns)
            try:
                await _consume(deliverer, bus, consumer, workers, stop)
            finally:
                stop.set()
                await workers.drain(timeout=30.0)
    finally:
        stop.set()
        await progress
        # What the workers delivered last is stored before the process goes; if the database
        # is away, those notifications are only sent again after the restart.
        with _logged_failure("final store of delivery positions"):
            await retry_until_done(deliverer.progress.flush, stop)


async def _consume(
    deliverer: Deliverer, bus: Bus, consumer: Consumer, workers: Workers, stop: asyncio.Event
) -> None:
    schedule = Schedule()
    watch = RegistryWatch(deliverer.database)
    scanned = watched = 0.0
    while not stop.is_set():
        records = await consumer.fetch(timeout=0.5, max_records=500)
        if records:
            # Offsets move only once the events are committed in the event log: in the same
            # transaction when the bus keeps them in the store, after it otherwise.
            commit = partial(bus.commit_in, consumer) if bus.in_store else None
            to_wake = await retry_until_done(partial(record, deliverer, records, commit), stop)
            if commit is None:
                await consumer.commit(records)
            for subscription_id in sorted(to_wake):
                workers.wake(subscription_id)
        # Housekeeping fails while the database is away; it is simply done next time.
        with _logged_failure("registry watch"):
            if time.monotonic() - watched > deliverer.settings.registry_refresh:
                watched = time.monotonic()
                await _watch(deliverer, consumer, workers, watch)
        with _logged_failure("scan"):
            if time.monotonic() - scanned > SCAN_INTERVAL:
                scanned = time.monotonic()
                await _scan(deliverer, consumer, workers, schedule)
        for subscription_id in schedule.due(deliverer.last_contact):
            workers.wake(subscription_id, heartbeat=True)


@contextlib.contextmanager
def _logged_failure(what: str) -> Iterator[None]:
    try:
        yield
    except Exception:
        log.warning("dispatcher %s failed", what, exc_info=True)
