"""The outbox relay: publishes committed records to the bus, at least once and in order."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime

import orjson

from herald.core.fhir import utc_now
from herald.ingest.context import IngestContext
from herald.runtime.bus.base import Outgoing, Publisher
from herald.runtime.lifecycle import sleep_or_stop
from herald.runtime.store import outbox

log = logging.getLogger(__name__)

BATCH = 500


async def relay_once(ctx: IngestContext, publisher: Publisher) -> int:
    """Publish one batch; the rows are removed only once the bus holds them."""
    async with ctx.database.transaction() as connection:
        records = await outbox.claim(connection, BATCH)
        ctx.metrics.outbox_age.set(_age(records[0].payload) if records else 0.0)
        if not records:
            return 0
        await publisher.publish(
            [Outgoing(r.topic, r.key, r.payload, r.request_id) for r in records],
            transaction=connection,
        )
        await outbox.remove(connection, [r.id for r in records])
    ctx.metrics.outbox_published.inc(len(records))
    return len(records)


def _age(payload: bytes) -> float:
    """Seconds since the record was written: its change's commit or its request's creation."""
    record = orjson.loads(payload)
    written = record.get("occurred_at") or record.get("requested_at")
    if not isinstance(written, str):
        return 0.0
    return max(0.0, (utc_now() - datetime.fromisoformat(written)).total_seconds())


async def run_relay(ctx: IngestContext, publisher: Publisher, stop: asyncio.Event) -> None:
    """Relay until stopped, then drain what is left.

    A pass that published less than a full batch is followed by the next one no sooner than
    `relay_linger` after it started: under load each pass then carries the writes of that
    interval in one produce request, and every stage after it (the matcher's fetch and produce,
    the dispatcher's fetch and its event recording) handles them as one batch. A write that finds
    the relay idle (its last pass found nothing) is relayed at once. The records wait in the
    outbox table meanwhile, never in memory.
    """
    failures = 0
    linger = ctx.settings.relay_linger
    while not stop.is_set():
        ctx.outbox_written.clear()
        started = time.monotonic()
        try:
            moved = await relay_once(ctx, publisher)
            failures = 0
        except Exception:
            failures += 1
            log.exception("outbox relay failed; retrying", extra={"failures": failures})
            await sleep_or_stop(stop, min(5.0, 0.2 * 2**failures))
            continue
        if moved:
            ctx.metrics.outbox_batch_size.observe(moved)
            pause = started + linger - time.monotonic()
            if moved < BATCH and pause > 0:
                await asyncio.sleep(pause)
            continue
        waiter = asyncio.create_task(ctx.outbox_written.wait())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait(
            {waiter, stopper},
            timeout=ctx.settings.relay_interval,
            return_when=asyncio.FIRST_COMPLETED,
        )
        waiter.cancel()
        stopper.cancel()
    try:
        while await relay_once(ctx, publisher):
            pass
    except Exception:
        log.exception("outbox relay could not drain on shutdown; rows stay for the next start")
