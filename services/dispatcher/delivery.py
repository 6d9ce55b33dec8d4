"""Delivering to one subscription: handshake first, then its events in order, with retries."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from herald.core.errors import HeraldError
from herald.core.fhir import FHIR_XML, format_instant, utc_now
from herald.core.fhirxml import to_xml
from herald.core.notifications import (
    EVENT_NOTIFICATION,
    HANDSHAKE,
    HEARTBEAT,
    SubscriptionState,
    notification_bundle,
)
from herald.core.subscriptions import STORED_POLICY, Subscription, parse_subscription
from herald.core.topics import TopicRegistry
from herald.runtime.lifecycle import sleep_or_stop
from herald.runtime.metrics import Metrics
from herald.runtime.sender import DeliveryOutcome, HttpSender
from herald.runtime.settings import Settings
from herald.runtime.store import events as event_log
from herald.runtime.store import subscriptions as registry
from herald.runtime.store.database import Database
from herald.runtime.store.subscriptions import StoredSubscription

log = logging.getLogger(__name__)

# Retry-After is honoured up to this many seconds; a larger value falls back to the schedule.
MAX_RETRY_AFTER = 3600.0


@dataclass
class Deliverer:
    """Shared by every subscription worker of one dispatcher."""

    settings: Settings
    database: Database
    topics: TopicRegistry
    sender: HttpSender
    metrics: Metrics
    in_flight: asyncio.Semaphore
    last_contact: dict[str, float] = field(default_factory=dict)
    """Monotonic time of the last accepted POST per subscription (heartbeats are due after it)."""

    async def _load(self, subscription_id: str) -> tuple[StoredSubscription, Subscription] | None:
        async with self.database.read() as connection:
            stored = await registry.get(connection, subscription_id)
        if stored is None or stored.deleted or stored.status in ("off", "error"):
            return None
        try:
            return stored, parse_subscription(
                stored.resource, self.topics, STORED_POLICY, status=stored.status
            )
        except HeraldError as exc:
            log.warning(
                "subscription cannot be served",
                extra={"subscription_id": subscription_id, "reason": str(exc)},
            )
            return None

    async def _post(
        self, subscription: Subscription, bundle: dict[str, object], kind: str
    ) -> DeliveryOutcome:
        xml = subscription.payload.split(";")[0].strip() == FHIR_XML
        body = to_xml(bundle) if xml else orjson.dumps(bundle)
        async with self.in_flight:
            self.metrics.in_flight.inc()
            try:
                outcome, seconds = await self.sender.post(
                    subscription.endpoint,
                    body,
                    content_type=subscription.payload,
                    headers=subscription.header_pairs(),
                    timeout=float(subscription.timeout),
                )
            finally:
                self.metrics.in_flight.dec()
        if outcome.ok:
            self.last_contact[subscription.id] = time.monotonic()
        self.metrics.delivery_attempts.labels(kind, outcome.outcome).inc()
        self.metrics.attempt_duration.labels(kind).observe(seconds)
        return outcome

    def _state(
        self, stored: StoredSubscription, subscription: Subscription, status: str
    ) -> SubscriptionState:
        return SubscriptionState(
            id=stored.id,
            topic_url=stored.topic,
            status=status,
            events_since_start=stored.events_count,
            content=subscription.content,
            error=stored.error,
        )

    async def _fail(self, subscription_id: str, status: str, reason: str, *, expected: str) -> None:
        async with self.database.transaction() as connection:
            await registry.set_status(
                connection, subscription_id, status, error=reason, expected=expected
            )
        log.warning(
            "subscription moved to %s",
            status,
            extra={"subscription_id": subscription_id, "reason": reason},
        )

    async def handshake(self, subscription_id: str, stop: asyncio.Event) -> None:
        """Send the handshake of a requested subscription and move it to active or error."""
        loaded = await self._load(subscription_id)
        if loaded is None or loaded[0].status != "requested":
            return
        # Clients (and conformance suites) are ready for the handshake only after the 201.
        if await sleep_or_stop(stop, self.settings.handshake_delay):
            return
        last = "no attempt was made"
        for attempt in range(self.settings.handshake_attempts):
            loaded = await self._load(subscription_id)
            if loaded is None or loaded[0].status != "requested":
                return
            stored, subscription = loaded
            bundle = notification_bundle(
                self.settings.fhir_base,
                self._state(stored, subscription, "requested"),
                HANDSHAKE,
                timestamp=format_instant(utc_now()),
            )
            outcome = await self._post(subscription, bundle, "handshake")
            if outcome.ok:
                async with self.database.transaction() as connection:
                    await registry.set_status(
                        connection, subscription_id, "active", expected="requested"
                    )
                log.info("handshake accepted", extra={"subscription_id": subscription_id})
                return
            last = outcome.detail
            if outcome.outcome == "gone":
                break
            if await sleep_or_stop(stop, min(2.0 * 2**attempt, 30.0)):
                return
        await self._fail(
            subscription_id, "error", f"handshake failed: {last}", expected="requested"
        )

    async def heartbeat(self, subscription_id: str) -> None:
        """Send a heartbeat when an active subscription has heard nothing for its period."""
        loaded = await self._load(subscription_id)
        if loaded is None or loaded[0].status != "active" or not loaded[1].heartbeat_period:
            return
        stored, subscription = loaded
        quiet = time.monotonic() - self.last_contact.get(subscription_id, 0.0)
        if quiet < subscription.heartbeat_period:  # type: ignore[operator]
            return
        bundle = notification_bundle(
            self.settings.fhir_base,
            self._state(stored, subscription, "active"),
            HEARTBEAT,
            timestamp=format_instant(utc_now()),
        )
        await self._post(subscription, bundle, "heartbeat")
        # A failed heartbeat waits a whole period too; delivery errors surface through events.
        self.last_contact[subscription_id] = time.monotonic()

    async def deliver_pending(self, subscription_id: str, stop: asyncio.Event) -> None:
        """Deliver the undelivered events of an active subscription, oldest first, in batches."""
        schedule = self.settings.retry_schedule
        attempt = 0
        while not stop.is_set():
            loaded = await self._load(subscription_id)
            if loaded is None or loaded[0].status != "active":
                return
            stored, subscription = loaded
            async with self.database.read() as connection:
                pending = await event_log.after(
                    connection, subscription_id, stored.delivered_through, subscription.max_count
                )
                notification_events = await event_log.as_notification_events(
                    connection, pending, with_resources=subscription.content == "full-resource"
                )
            if not pending:
                return
            bundle = notification_bundle(
                self.settings.fhir_base,
                self._state(stored, subscription, "active"),
                EVENT_NOTIFICATION,
                notification_events,
                timestamp=format_instant(utc_now()),
            )
            outcome = await self._post(subscription, bundle, "event")
            if outcome.ok:
                attempt = 0
                async with self.database.transaction() as connection:
                    await event_log.mark_delivered(connection, subscription_id, pending[-1].number)
                now = utc_now()
                for e in pending:
                    self.metrics.latency.observe(
                        max(0.0, (now - datetime.fromisoformat(e.occurred_at)).total_seconds())
                    )
                continue
            if outcome.outcome == "gone":
                await self._fail(subscription_id, "off", outcome.detail, expected="active")
                return
            if attempt >= len(schedule):
                await self._fail(
                    subscription_id,
                    "error",
                    f"delivery failed after {attempt + 1} attempts: {outcome.detail}",
                    expected="active",
                )
                return
            delay = schedule[attempt] * random.uniform(0.8, 1.2)  # jitter spreads retry storms
            if outcome.retry_after is not None and outcome.retry_after <= MAX_RETRY_AFTER:
                delay = max(delay, outcome.retry_after)
            attempt += 1
            log.info(
                "delivery failed; retrying",
                extra={
                    "subscription_id": subscription_id,
                    "reason": outcome.detail,
                    "delay": delay,
                },
            )
            self.metrics.retry_backlog.inc()
            try:
                if await sleep_or_stop(stop, delay):
                    return
            finally:
                self.metrics.retry_backlog.dec()
