"""Delivering to one subscription: handshake first, then its events in order, with retries."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from herald.core.errors import HeraldError
from herald.core.fhir import now_instant, utc_now
from herald.core.notifications import (
    EVENT_NOTIFICATION,
    HANDSHAKE,
    HEARTBEAT,
    NotificationEvent,
    SubscriptionState,
    notification_bundle,
)
from herald.core.notifications import encode_bundle as encode_notification
from herald.core.states import DeliveryOutcome, DeliveryResult, SubscriptionStatus
from herald.core.subscriptions import Subscription, parse_subscription
from herald.core.topics import TopicCatalog
from herald.core.types import JsonObject
from herald.dispatcher.circuit_breakers import HALF_OPEN, CircuitBreakers
from herald.dispatcher.progress import Progress
from herald.runtime.lifecycle import sleep_or_stop
from herald.runtime.logs import logging_request
from herald.runtime.metrics import Metrics
from herald.runtime.packaged import fhir_xml
from herald.runtime.sender import HttpSender, describe
from herald.runtime.settings import Settings
from herald.runtime.slots import Slots
from herald.runtime.store import events as event_log
from herald.runtime.store import subscriptions as registry
from herald.runtime.store.attempts import Attempt
from herald.runtime.store.database import Database
from herald.runtime.store.events import LoggedEvent
from herald.runtime.store.subscriptions import StoredSubscription

log = logging.getLogger(__name__)

# A subscription as stored and as parsed.
Loaded = tuple[StoredSubscription, Subscription]

# Retry-After is honoured up to this many seconds; a larger value falls back to the schedule.
MAX_RETRY_AFTER = 3600.0
# Events a worker reads from the event log at once (at least max-count): a backlog then costs
# one read per this many events, not one per POST. Beyond READ_AHEAD_BUDGET events held by all
# workers of a dispatcher (many subscriptions catching up at once), workers read one Bundle's
# worth at a time, so memory stays bounded.
READ_AHEAD = 100
READ_AHEAD_BUDGET = 50_000


def encode_bundle(subscription: Subscription, bundle: JsonObject) -> bytes:
    """A notification Bundle in the subscription's payload format (JSON or XML)."""
    return encode_notification(bundle, subscription.payload, fhir_xml())


# At most this many request ids go into one notification's X-Request-ID header.
MAX_REQUEST_IDS = 20


def with_request_ids(
    headers: Sequence[tuple[str, str]], request_ids: Sequence[str]
) -> Sequence[tuple[str, str]]:
    """The channel headers plus X-Request-ID: the distinct ids of the requests behind the
    Bundle's events, comma-separated (unless the subscription sets that header itself)."""
    distinct = list(dict.fromkeys(request_ids))[:MAX_REQUEST_IDS]
    if not distinct or any(name.lower() == "x-request-id" for name, _ in headers):
        return headers
    return [*headers, ("X-Request-ID", ",".join(distinct))]


def attempt_of(
    subscription_id: str,
    kind: str,
    events: tuple[int, int] | None,
    outcome: DeliveryOutcome,
    seconds: float,
    at: str | None = None,
) -> Attempt:
    """A POST's outcome as the store keeps it; `at` is when it was made (now by default)."""
    first, last = events or (None, None)
    return Attempt(
        subscription_id,
        at or now_instant(),
        kind,
        first,
        last,
        str(outcome.outcome),
        outcome.status_code,
        outcome.detail,
        seconds,
    )


@dataclass
class Deliverer:
    """Shared by every subscription worker of one dispatcher.

    It keeps each subscription it serves as last read (stored and parsed) so that a worker does
    not read the registry before every POST. The copy is dropped (`forget`) when this
    dispatcher changes the subscription, when a handshake request arrives for it, and when the
    registry watch sees another process change it; until then a client's `off` or delete takes
    effect here within one registry poll (HERALD_REGISTRY_REFRESH).
    """

    settings: Settings
    database: Database
    topics: TopicCatalog
    sender: HttpSender
    metrics: Metrics
    in_flight: Slots
    """The dispatcher's bound on POSTs in flight (HERALD_MAX_IN_FLIGHT)."""
    breakers: CircuitBreakers = field(default_factory=CircuitBreakers)
    """Per-origin concurrency limits and circuit breakers (see circuit_breakers.py)."""
    last_contact: dict[str, float] = field(default_factory=dict)
    """Monotonic time of the last accepted POST per subscription (heartbeats are due after it)."""
    progress: Progress = field(init=False)
    """Delivered positions, stored in batches (see progress.py)."""
    _known: dict[str, Loaded] = field(default_factory=dict)
    _generation: dict[str, int] = field(default_factory=dict)
    """Bumped by `forget`: a read that started before it must not fill the cache."""
    held: int = 0
    """Events read ahead and not yet delivered, all workers together."""
    handshake_origins: dict[str, str] = field(default_factory=dict)
    """The request id of the Subscription write that asked for each pending handshake."""
    _recent: dict[str, list[LoggedEvent]] = field(default_factory=dict)
    """Events this dispatcher just recorded, per subscription, not yet taken by its worker."""
    _recent_count: int = 0

    retry_schedule: tuple[float, ...] = field(init=False)
    """The settings' retry delays, parsed once."""

    def __post_init__(self) -> None:
        self.progress = Progress(self.database)
        self.retry_schedule = self.settings.retry_schedule
        # Read when scraped, rather than counted up and down (under a lock) around every POST.
        self.metrics.in_flight.set_function(lambda: self.in_flight.held)

    def forget(self, subscription_id: str) -> None:
        """Drop what is cached of a subscription that changed; it is read again when needed."""
        self._known.pop(subscription_id, None)
        self._generation[subscription_id] = self._generation.get(subscription_id, 0) + 1
        self._recent_count -= len(self._recent.pop(subscription_id, ()))

    async def _load(self, subscription_id: str, *, fresh: bool = False) -> Loaded | None:
        """The subscription if it can be served (not deleted, off or in error); cached unless
        `fresh`."""
        if not fresh and (known := self._known.get(subscription_id)) is not None:
            return known
        generation = self._generation.get(subscription_id, 0)
        async with self.database.read() as connection:
            stored = await registry.get(connection, subscription_id)
        loaded = await self._parse(subscription_id, stored)
        if self._generation.get(subscription_id, 0) == generation:
            if loaded is None:
                self._known.pop(subscription_id, None)
            else:
                self._known[subscription_id] = loaded
        return loaded

    def recorded(self, event: LoggedEvent) -> None:
        """Keep a just-committed event for its worker, so that it need not be read back.

        Only a run of consecutive numbers is kept, at most READ_AHEAD per subscription and
        READ_AHEAD_BUDGET in all; whatever does not fit is read from the event log as before.
        """
        events = self._recent.setdefault(event.subscription_id, [])
        if events and (events[-1].number + 1 != event.number or len(events) >= READ_AHEAD):
            self._recent_count -= len(events)
            events.clear()
        if self._recent_count < READ_AHEAD_BUDGET:
            events.append(event)
            self._recent_count += 1

    def _take_recent(self, subscription_id: str, position: int) -> list[LoggedEvent] | None:
        """The kept events right after `position`, or None when they do not start there."""
        events = self._recent.pop(subscription_id, None)
        if not events:
            return None
        self._recent_count -= len(events)
        events = [e for e in events if e.number > position]
        return events if events and events[0].number == position + 1 else None

    async def _parse(
        self, subscription_id: str, stored: StoredSubscription | None
    ) -> Loaded | None:
        """The stored subscription, checked again against today's rules (endpoint policy,
        header rules): one that no longer passes moves to `error` and says why."""
        if (
            stored is None
            or stored.deleted
            or stored.status in (SubscriptionStatus.OFF, SubscriptionStatus.ERROR)
        ):
            return None
        try:
            subscription = parse_subscription(
                stored.resource, self.topics, self.settings.endpoint_policy, status=stored.status
            )
        except HeraldError as exc:
            await self._fail(
                subscription_id,
                SubscriptionStatus.ERROR,
                f"the subscription can no longer be served: {exc}",
                expected=stored.status,
            )
            return None
        return stored, subscription

    async def _post(
        self,
        subscription: Subscription,
        bundle: dict[str, object],
        kind: str,
        *,
        last_chance: bool = False,
        events: tuple[int, int] | None = None,
        request_ids: Sequence[str] = (),
    ) -> DeliveryOutcome:
        """POST once. An open circuit skips it, except the last chance before `error`.

        `events` (first and last number) are what the Bundle carries, noted with the attempt;
        `request_ids` those of the requests that caused them, sent as X-Request-ID. A Bundle
        that cannot be encoded is a failed attempt (`unsendable`), never an exception.
        """
        try:
            body = encode_bundle(subscription, bundle)
        except Exception as exc:  # noqa: BLE001 -- a poisoned event is a failed attempt
            outcome = DeliveryOutcome(
                DeliveryResult.UNSENDABLE,
                None,
                f"the notification could not be encoded: {describe(exc)}",
            )
            self._count(subscription, kind, outcome, 0.0, events, bundle)
            return outcome
        endpoint = self.breakers.get(subscription.endpoint)
        # The origin's slot first: a slow origin then holds at most its own share of the
        # global slots while its POSTs queue. (Taken and released by hand: `async with` costs
        # two coroutines per limit and notification.)
        slot = self.breakers.slot(endpoint)
        if not slot.take():
            await slot.wait()
        try:
            admitted = self.breakers.admit(endpoint)
            if not admitted and not last_chance:
                self.metrics.attempts_skipped.labels(kind).inc()
                return self.breakers.skipped(endpoint)
            probe = admitted and endpoint.state == HALF_OPEN
            reported = False
            try:
                in_flight = self.in_flight
                if not in_flight.take():
                    await in_flight.wait()
                try:
                    outcome, seconds = await self.sender.post(
                        subscription.endpoint,
                        body,
                        content_type=subscription.payload,
                        headers=with_request_ids(subscription.header_pairs(), request_ids),
                        timeout=float(subscription.timeout),
                    )
                finally:
                    in_flight.release()
                if outcome.outcome.reached_endpoint:
                    self.breakers.report(endpoint, outcome, probe=probe)
                else:  # says nothing about the endpoint's health
                    endpoint.probing = endpoint.probing and not probe
                reported = True
            finally:
                if probe and not reported:  # cancelled: let another POST probe
                    endpoint.probing = False
        finally:
            slot.release()
        if outcome.ok:
            self.last_contact[subscription.id] = time.monotonic()
        self._count(subscription, kind, outcome, seconds, events, bundle)
        return outcome

    def _count(
        self,
        subscription: Subscription,
        kind: str,
        outcome: DeliveryOutcome,
        seconds: float,
        events: tuple[int, int] | None,
        bundle: dict[str, object],
    ) -> None:
        """The metrics of an attempt, and its note in the attempt history (made when its
        Bundle was stamped)."""
        self.metrics.delivery_attempts.labels(kind, outcome.outcome).inc()
        self.metrics.attempt_duration.labels(kind).observe(seconds)
        if kind != "heartbeat":
            at = str(bundle.get("timestamp") or "") or None
            note = attempt_of(subscription.id, kind, events, outcome, seconds, at)
            self.progress.attempted(note)

    def _state(
        self, stored: StoredSubscription, subscription: Subscription, status: str, through: int = 0
    ) -> SubscriptionState:
        return SubscriptionState(
            id=stored.id,
            topic_url=stored.topic,
            status=status,
            # The row may have been read before the events being sent were numbered.
            events_since_start=max(stored.events_count, through),
            content=subscription.content,
            error=stored.error,
        )

    async def _fail(self, subscription_id: str, status: str, reason: str, *, expected: str) -> None:
        async with self.database.transaction() as connection:
            await registry.set_status(
                connection, subscription_id, status, error=reason, expected=expected
            )
        self.forget(subscription_id)
        log.warning(
            "subscription moved to %s",
            status,
            extra={"subscription_id": subscription_id, "reason": reason},
        )

    async def handshake(self, subscription_id: str, stop: asyncio.Event) -> None:
        """Send the handshake of a requested subscription and move it to active or error."""
        noted = self.handshake_origins.get(subscription_id)
        loaded = await self._load(subscription_id)
        if loaded is None or loaded[0].status is not SubscriptionStatus.REQUESTED:
            # No handshake is pending (sent already after a scan's wake-up, or the subscription
            # is gone): the origin noted before this read would otherwise stay forever. One
            # noted during the read is kept: the read may predate the write that asked for it.
            if noted is not None and self.handshake_origins.get(subscription_id) == noted:
                del self.handshake_origins[subscription_id]
            return
        # Clients (and conformance suites) are ready for the handshake only after the 201.
        if await sleep_or_stop(stop, self.settings.handshake_delay):
            return
        # Taken after the delay: the scan or registry watch may wake the worker before the bus
        # record naming the Subscription write has arrived.
        origin = self.handshake_origins.pop(subscription_id, None)
        with logging_request(origin):
            await self._handshake(subscription_id, stop, [origin] if origin else [])

    async def _handshake(
        self, subscription_id: str, stop: asyncio.Event, request_ids: Sequence[str]
    ) -> None:
        last = "no attempt was made"
        for attempt in range(self.settings.handshake_attempts):
            loaded = await self._load(subscription_id, fresh=True)
            if loaded is None or loaded[0].status is not SubscriptionStatus.REQUESTED:
                return
            stored, subscription = loaded
            bundle = notification_bundle(
                self.settings.fhir_base,
                self._state(stored, subscription, SubscriptionStatus.REQUESTED),
                HANDSHAKE,
                timestamp=now_instant(),
            )
            outcome = await self._post(
                subscription,
                bundle,
                "handshake",
                last_chance=attempt == self.settings.handshake_attempts - 1,
                request_ids=request_ids,
            )
            if outcome.ok:
                async with self.database.transaction() as connection:
                    await registry.set_status(
                        connection,
                        subscription_id,
                        SubscriptionStatus.ACTIVE,
                        expected=SubscriptionStatus.REQUESTED,
                    )
                self.forget(subscription_id)
                log.info("handshake accepted", extra={"subscription_id": subscription_id})
                return
            last = outcome.detail
            if not outcome.retriable:
                break
            if await sleep_or_stop(stop, min(2.0 * 2**attempt, 30.0)):
                return
        await self._fail(
            subscription_id,
            SubscriptionStatus.ERROR,
            f"handshake failed: {last}",
            expected=SubscriptionStatus.REQUESTED,
        )

    async def heartbeat(self, subscription_id: str) -> None:
        """Send a heartbeat when an active subscription has heard nothing for its period."""
        loaded = await self._load(subscription_id)
        if (
            loaded is None
            or loaded[0].status is not SubscriptionStatus.ACTIVE
            or not loaded[1].heartbeat_period
        ):
            return
        stored, subscription = loaded
        quiet = time.monotonic() - self.last_contact.get(subscription_id, 0.0)
        if quiet < subscription.heartbeat_period:  # type: ignore[operator]
            return
        # The cached row's events_count is as old as the cache; a heartbeat reports the count
        # now, as $status does.
        loaded = await self._load(subscription_id, fresh=True)
        if loaded is None or loaded[0].status is not SubscriptionStatus.ACTIVE:
            return
        stored, subscription = loaded
        bundle = notification_bundle(
            self.settings.fhir_base,
            self._state(stored, subscription, SubscriptionStatus.ACTIVE),
            HEARTBEAT,
            timestamp=now_instant(),
        )
        await self._post(subscription, bundle, "heartbeat")
        # A failed heartbeat waits a whole period too; delivery errors surface through events.
        self.last_contact[subscription_id] = time.monotonic()

    async def _read_ahead(
        self, stored: StoredSubscription, subscription: Subscription
    ) -> tuple[list[LoggedEvent], bool]:
        """The subscription's next undelivered events, oldest first, and whether they are all
        that is committed so far (the read came back short)."""
        position = self.progress.position(stored.id, stored.delivered_through)
        # Events this dispatcher recorded and committed since: nothing else of this
        # subscription is committed after them (a record by another dispatcher after a
        # rebalance is found by the periodic scan, as after a short read).
        recent = self._take_recent(stored.id, position)
        if recent is not None:
            return recent, True
        ahead = READ_AHEAD if self.held < READ_AHEAD_BUDGET else 0
        limit = max(subscription.max_count, ahead)
        events = await event_log.read_after(self.database, stored.id, position, limit)
        return events, len(events) < limit

    async def _notification_events(
        self, subscription: Subscription, logged: list[LoggedEvent]
    ) -> list[NotificationEvent]:
        if subscription.content != "full-resource":
            return [event_log.as_notification_event(e) for e in logged]
        async with self.database.read() as connection:
            return await event_log.as_notification_events(connection, logged, with_resources=True)

    async def deliver_pending(
        self,
        subscription_id: str,
        stop: asyncio.Event,
        owned: Callable[[], bool] = lambda: True,
    ) -> None:
        """Deliver the undelivered events of an active subscription, oldest first, in batches.

        Stops once `owned()` is false: after a rebalance the subscription's new dispatcher
        delivers it, and two senders would only duplicate each other.
        """
        queue: list[LoggedEvent] = []
        try:
            await self._deliver_queue(subscription_id, stop, owned, queue)
        finally:
            self.held -= len(queue)

    async def _deliver_queue(
        self,
        subscription_id: str,
        stop: asyncio.Event,
        owned: Callable[[], bool],
        queue: list[LoggedEvent],
    ) -> None:
        """The loop of `deliver_pending`; `queue` holds the events read ahead (counted in
        `held`)."""
        schedule = self.retry_schedule
        attempt = 0
        retry_due: float | None = None  # monotonic time the pending retry is due
        queued_for: Loaded | None = None
        complete = False
        while not stop.is_set() and owned():
            loaded = await self._load(subscription_id)
            if loaded is None or loaded[0].status is not SubscriptionStatus.ACTIVE:
                return
            stored, subscription = loaded
            if loaded is not queued_for:  # read again after any change of the subscription
                events, complete = await self._read_ahead(stored, subscription)
                self.held += len(events) - len(queue)
                queue[:], queued_for = events, loaded
                # After a short read, events recorded later wake the worker again
                # (Workers.wake), so an emptied queue needs no confirming read.
            if not queue:
                return
            batch = queue[: subscription.max_count]
            bundle = notification_bundle(
                self.settings.fhir_base,
                self._state(stored, subscription, SubscriptionStatus.ACTIVE, batch[-1].number),
                EVENT_NOTIFICATION,
                await self._notification_events(subscription, batch),
                timestamp=now_instant(),
            )
            # The attempt after which the subscription would move to error is always made: a
            # subscription never ends in error without a real failed POST.
            outcome = await self._post(
                subscription,
                bundle,
                "event",
                last_chance=attempt >= len(schedule),
                events=(batch[0].number, batch[-1].number),
                request_ids=[e.origin_request_id for e in batch if e.origin_request_id],
            )
            if outcome.ok:
                attempt, retry_due = 0, None
                del queue[: len(batch)]
                self.held -= len(batch)
                self.progress.delivered(subscription_id, batch[-1].number)
                if not queue and not complete:
                    queued_for = None  # the read-ahead is used up: read what follows
                now = utc_now()
                for e in batch:
                    self.metrics.latency.observe(
                        max(0.0, (now - datetime.fromisoformat(e.occurred_at)).total_seconds())
                    )
                continue
            if outcome.outcome is DeliveryResult.GONE:
                await self._fail(
                    subscription_id,
                    SubscriptionStatus.OFF,
                    outcome.detail,
                    expected=SubscriptionStatus.ACTIVE,
                )
                return
            if outcome.outcome is DeliveryResult.REFUSED:  # retrying cannot change the policy
                await self._fail(
                    subscription_id,
                    SubscriptionStatus.ERROR,
                    outcome.detail,
                    expected=SubscriptionStatus.ACTIVE,
                )
                return
            # A POST made before the retry was due (the circuit's probe, or a recovery that did
            # not last) is not one of the subscription's attempts: its schedule never runs
            # faster than time passes.
            if retry_due is None or time.monotonic() >= retry_due:
                if attempt >= len(schedule):
                    await self._fail(
                        subscription_id,
                        SubscriptionStatus.ERROR,
                        f"delivery failed after {attempt + 1} attempts: {outcome.detail}",
                        expected=SubscriptionStatus.ACTIVE,
                    )
                    return
                delay = schedule[attempt] * random.uniform(0.8, 1.2)  # jitter spreads storms
                if outcome.retry_after is not None and outcome.retry_after <= MAX_RETRY_AFTER:
                    delay = max(delay, outcome.retry_after)
                attempt += 1
                retry_due = time.monotonic() + delay
                log.info(
                    "delivery failed; retrying",
                    extra={
                        "subscription_id": subscription_id,
                        "events": f"{batch[0].number}..{batch[-1].number}",
                        "request_ids": ",".join(
                            dict.fromkeys(e.origin_request_id or "" for e in batch)
                        ).strip(","),
                        "reason": outcome.detail,
                        "delay": round(delay, 3),
                    },
                )
            self.metrics.retry_backlog.inc()
            try:
                if await self._wait_retry(
                    subscription.endpoint, stop, retry_due - time.monotonic()
                ):
                    return
            finally:
                self.metrics.retry_backlog.dec()

    async def _wait_retry(self, url: str, stop: asyncio.Event, delay: float) -> bool:
        """Wait out a retry delay, or less when the endpoint's circuit closes meanwhile or this
        worker takes the probe of its open circuit.

        True when stopped.
        """
        circuit = self.breakers.get(url)
        if circuit.recovered.is_set():
            return await sleep_or_stop(stop, delay)
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            waiters = {
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(circuit.recovered.wait()),
                asyncio.ensure_future(circuit.probe_due.wait()),
            }
            try:
                await asyncio.wait(waiters, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if stop.is_set() or circuit.recovered.is_set() or self.breakers.take_probe(circuit):
                break
        return stop.is_set()
