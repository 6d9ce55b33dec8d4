"""Delivery attempts: the newest few per subscription, so an operator can see why one fails."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.runtime.store import direct
from herald.runtime.store.direct import Prepared
from herald.runtime.store.tables import delivery_attempts

# Attempts kept per subscription.
KEEP = 10


# Not frozen: one is built per POST, and a frozen dataclass's __init__ (object.__setattr__ per
# field) costs several times a plain one's. Nothing changes an attempt once built.
@dataclass
class Attempt:
    """One POST of a handshake or of a Bundle of events, and what became of it."""

    subscription_id: str
    attempted_at: str
    kind: str
    first_event: int | None
    last_event: int | None
    outcome: str
    status_code: int | None
    detail: str
    seconds: float


# The stored columns of an attempt and their PostgreSQL types (for herald_store_progress).
COLUMN_TYPES = (
    ("subscription_id", "text"),
    ("attempted_at", "text"),
    ("kind", "text"),
    ("first_event", "bigint"),
    ("last_event", "bigint"),
    ("outcome", "text"),
    ("status_code", "integer"),
    ("detail", "text"),
    ("seconds", "double precision"),
)

_INSERT = Prepared(insert(delivery_attempts))
_NEWEST_KEPT = (
    select(delivery_attempts.c.id)
    .where(delivery_attempts.c.subscription_id == bindparam("subscription"))
    .order_by(delivery_attempts.c.id.desc())
    .offset(KEEP - 1)
    .limit(1)
    .scalar_subquery()
)
_PRUNE = Prepared(
    delete(delivery_attempts).where(
        delivery_attempts.c.subscription_id == bindparam("subscription"),
        delivery_attempts.c.id < _NEWEST_KEPT,
    )
)


async def record_many(
    connection: AsyncConnection,
    attempts: Sequence[Attempt],
    prune: Collection[str] | None = None,
) -> None:
    """Store attempts, then drop all but the newest KEEP of the subscriptions in `prune` (of
    every subscription concerned when None)."""
    if not attempts:
        return
    # An attempt's own __dict__ holds exactly its fields (read, never changed, by run_many);
    # dataclasses.asdict deep-copies every value, at several times the cost of the insert.
    await direct.run_many(connection, _INSERT, [vars(a) for a in attempts])
    if prune is None:
        prune = {a.subscription_id for a in attempts}
    if prune:
        await direct.run_many(connection, _PRUNE, [{"subscription": s} for s in sorted(prune)])


async def recent(connection: AsyncConnection, subscription_id: str) -> list[Attempt]:
    """The subscription's newest KEEP stored attempts, newest first."""
    # Up to KEEP - 1 more may be stored until the next prune (see Progress.flush).
    rows = await connection.execute(
        select(delivery_attempts)
        .where(delivery_attempts.c.subscription_id == subscription_id)
        .order_by(delivery_attempts.c.id.desc())
        .limit(KEEP)
    )
    return [
        Attempt(
            r.subscription_id,
            r.attempted_at,
            r.kind,
            r.first_event,
            r.last_event,
            r.outcome,
            r.status_code,
            r.detail,
            r.seconds,
        )
        for r in rows
    ]
