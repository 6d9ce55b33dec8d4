"""Keeps the matcher's subscription index as fresh as the changes it matches."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import orjson

from herald.core.errors import HeraldError
from herald.core.matching import SubscriptionIndex
from herald.core.matching_stored import PlanCompiler
from herald.core.states import SubscriptionStatus
from herald.runtime.store import subscriptions as registry
from herald.runtime.store.database import Database
from herald.runtime.store.subscriptions import RegistryRow

log = logging.getLogger(__name__)

# Registry rows read per query: a matcher loading a million subscriptions holds one page of rows
# at a time, not the whole table.
PAGE_ROWS = 5_000


# A first load of more rows than this freezes what it filed (see refresh).
FREEZE_ROWS = 50_000


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while the index grows: a load files a million small
    objects, none of them in cycles, and every full collection would walk all of them again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


async def refresh(index: SubscriptionIndex, database: Database, *, page: int = PAGE_ROWS) -> int:
    """Apply every registry change since the index's revision; return how many were applied."""
    async with database.read() as connection:
        # Every revision up to the counter read first is committed (revisions are handed out
        # under the counter's row lock), so the index is at least that fresh afterwards. A row
        # changed again while the pages are read comes back at its new revision, further on.
        current = await registry.revision(connection)
    compiler = PlanCompiler(index.topics)
    since, after_id = index.revision, None
    applied = 0
    with _collector_paused():
        while True:
            async with database.read() as connection:
                rows = await registry.registry_page(connection, since, after_id, page)
                unfiltered = [row[0] for row in rows if row[5] is None]
                resources = await registry.contents(connection, unfiltered) if unfiltered else {}
            _apply(index, compiler, rows, resources)
            applied += len(rows)
            if rows:
                since, after_id = rows[-1][3], rows[-1][0]
            if len(rows) < page:
                break
        if index.revision == 0 and applied > FREEZE_ROWS:
            # The index is never garbage in cycles; frozen (gc.freeze), no collection walks it
            # again (the first ones after a load of a million would take seconds). Whatever
            # else exists now is frozen too: startup's objects, once.
            gc.freeze()
    index.revision = max(index.revision, current, since)
    return applied


def _apply(
    index: SubscriptionIndex,
    compiler: PlanCompiler,
    rows: Sequence[RegistryRow],
    resources: dict[str, str],
) -> None:
    """File the rows' plans; `resources`: the stored resource of each row without filters."""
    # Names bound once: this loop runs a million times when a matcher starts.
    from_resource, from_filters, loads, put = (
        compiler.plan,
        compiler.plan_of_filters,
        orjson.loads,
        index.put_plan,
    )
    for subscription_id, status, deleted, _, topic, filters in rows:
        if deleted or status == SubscriptionStatus.OFF:
            index.remove(subscription_id)
            continue
        try:
            if filters is not None:
                plan = from_filters(topic, loads(filters))
            else:  # stored before its filters had a column, and they no longer pass
                plan = from_resource(loads(resources.get(subscription_id, "null")))
        except HeraldError as exc:
            log.warning(
                "stored subscription no longer valid; not matched",
                extra={"subscription_id": subscription_id, "reason": str(exc)},
            )
            index.remove(subscription_id)
            continue
        put(subscription_id, status, plan)
