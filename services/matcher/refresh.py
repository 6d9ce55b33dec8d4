"""Keeps the matcher's subscription index as fresh as the changes it matches."""

from __future__ import annotations

import logging

from herald.core.errors import HeraldError
from herald.core.matching import SubscriptionIndex
from herald.core.states import SubscriptionStatus
from herald.core.subscriptions import STORED_POLICY, parse_subscription
from herald.runtime.store import subscriptions as registry
from herald.runtime.store.database import Database

log = logging.getLogger(__name__)


async def refresh(index: SubscriptionIndex, database: Database) -> int:
    """Apply every registry change since the index's revision; return how many were applied."""
    async with database.read() as connection:
        # Every revision up to the counter read first is committed (revisions are handed out
        # under the counter's row lock), so the index is at least that fresh afterwards.
        current = await registry.revision(connection)
        changed = await registry.changed_since(connection, index.revision)
    for stored in changed:
        if stored.deleted or stored.status is SubscriptionStatus.OFF:
            index.remove(stored.id)
            continue
        try:
            subscription = parse_subscription(
                stored.resource, index.topics, STORED_POLICY, status=stored.status
            )
        except HeraldError as exc:
            log.warning(
                "stored subscription no longer valid; not matched",
                extra={"subscription_id": stored.id, "reason": str(exc)},
            )
            index.remove(stored.id)
            continue
        index.put(subscription)
    index.revision = max(index.revision, current, *(s.revision for s in changed[-1:]))
    return len(changed)
