"""Keeps the matcher's subscription index as fresh as the changes it matches."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import orjson
from sqlalchemy import Row

from herald.core.errors import HeraldError
from herald.core.matching import SubscriptionIndex
from herald.core.matching_stored import PlanCompiler
from herald.core.states import SubscriptionStatus
from herald.runtime.store import subscriptions as registry
from herald.runtime.store.database import Database

log = logging.getLogger(__name__)

# Registry rows read per query: a matcher loading a million subscriptions holds one page of rows
# at a time, not the whole table.
PAGE_ROWS = 5_000


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
            _apply(index, compiler, rows)
            applied += len(rows)
            if rows:
                since, after_id = rows[-1].revision, rows[-1].id
            if len(rows) < page:
                break
    index.revision = max(index.revision, current, since)
    return applied


def _apply(
    index: SubscriptionIndex, compiler: PlanCompiler, rows: Sequence[Row[str, str, bool, int, str]]
) -> None:
    plan_of, loads, put = compiler.plan, orjson.loads, index.put_plan  # a million times over
    for subscription_id, status, deleted, _, content in rows:
        if deleted or status == SubscriptionStatus.OFF:
            index.remove(subscription_id)
            continue
        try:
            plan = plan_of(loads(content))
        except HeraldError as exc:
            log.warning(
                "stored subscription no longer valid; not matched",
                extra={"subscription_id": subscription_id, "reason": str(exc)},
            )
            index.remove(subscription_id)
            continue
        put(subscription_id, status, plan)
