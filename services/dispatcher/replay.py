"""Replaying a range of a subscription's events to its endpoint, for operators.

The Bundles are built and sent as the dispatcher builds and sends them (same Bundle, payload
format, channel headers, timeout and sender); each POST is recorded as an attempt of kind
`replay`. They go out in order, one Bundle of up to max-count events at a time, and the replay
stops at the first failure. A subscriber sees replayed events as duplicates of numbers it has
(at-least-once delivery), so a replay can overlap the dispatcher's own deliveries safely.
"""

from __future__ import annotations

from collections.abc import Callable

from herald.core.errors import OperatorRefused
from herald.core.fhir import format_instant, utc_now
from herald.core.notifications import EVENT_NOTIFICATION, SubscriptionState, notification_bundle
from herald.core.states import SubscriptionStatus
from herald.core.subscriptions import STORED_POLICY, parse_subscription
from herald.core.topics import TopicCatalog
from herald.dispatcher.delivery import attempt_of, encode_bundle
from herald.runtime.sender import HttpSender
from herald.runtime.settings import Settings
from herald.runtime.store import attempts
from herald.runtime.store import events as event_log
from herald.runtime.store import subscriptions as registry
from herald.runtime.store.database import Database


async def replay(
    settings: Settings,
    database: Database,
    topics: TopicCatalog,
    sender: HttpSender,
    subscription_id: str,
    since: int,
    until: int | None,
    out: Callable[[str], None],
) -> bool:
    """Re-deliver events `since`..`until` (inclusive) in order; True when all were accepted."""
    async with database.read() as connection:
        stored = await registry.get(connection, subscription_id)
    if stored is None or stored.deleted:
        raise OperatorRefused(f"Subscription/{subscription_id} is not known")
    if stored.status is not SubscriptionStatus.ACTIVE:
        raise OperatorRefused(
            f"Subscription/{subscription_id} is {stored.status}; only an active subscription "
            "is replayed (re-activate it first)"
        )
    subscription = parse_subscription(
        stored.resource, topics, STORED_POLICY, status=SubscriptionStatus.ACTIVE
    )
    last = stored.events_count if until is None else min(until, stored.events_count)
    number, sent = since, 0
    while number <= last:
        async with database.read() as connection:
            logged = await event_log.between(
                connection, subscription_id, number, last, subscription.max_count
            )
            events = await event_log.as_notification_events(
                connection, logged, with_resources=subscription.content == "full-resource"
            )
        if not logged:
            out(f"events from #{number} are no longer in the event log (retention)")
            return False
        if logged[0].number != number:
            out(f"events #{number}..#{logged[0].number - 1} are no longer in the event log")
        state = SubscriptionState(
            stored.id,
            stored.topic,
            SubscriptionStatus.ACTIVE,
            stored.events_count,
            subscription.content,
        )
        bundle = notification_bundle(
            settings.fhir_base,
            state,
            EVENT_NOTIFICATION,
            events,
            timestamp=format_instant(utc_now()),
        )
        outcome, seconds = await sender.post(
            subscription.endpoint,
            encode_bundle(subscription, bundle),
            content_type=subscription.payload,
            headers=subscription.header_pairs(),
            timeout=float(subscription.timeout),
        )
        span = (logged[0].number, logged[-1].number)
        async with database.transaction() as connection:
            await attempts.record_many(
                connection, [attempt_of(subscription_id, "replay", span, outcome, seconds)]
            )
        out(f"#{span[0]}..#{span[1]}: {outcome.outcome}, {outcome.detail} ({seconds:.3f} s)")
        if not outcome.ok:
            return False
        sent += len(logged)
        number = span[1] + 1
    out(f"{sent} event(s) replayed")
    return True
