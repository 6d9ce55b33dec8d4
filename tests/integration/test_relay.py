"""The outbox relay: a write that finds it idle goes out at once; under load, passes are paced
(HERALD_RELAY_LINGER) so that the writes of the interval travel the bus as one batch."""

from __future__ import annotations

import asyncio

import orjson

from herald.core.fhir import format_instant, utc_now
from herald.ingest.context import IngestContext
from herald.ingest.relay import run_relay
from herald.runtime.bus.base import Record
from herald.runtime.bus.embedded import EmbeddedBus, EmbeddedConsumer
from herald.runtime.metrics import Metrics
from herald.runtime.packaged import load_topics
from herald.runtime.settings import Settings
from herald.runtime.store import outbox
from herald.runtime.store.database import Database

TOPIC = "herald.task-changes"
LINGER = 1.0


async def _write(ctx: IngestContext, number: int) -> None:
    """One write's transaction queues one record, then wakes the relay (as ingest does)."""
    async with ctx.database.transaction() as connection:
        payload = orjson.dumps({"number": number, "occurred_at": format_instant(utc_now())})
        await outbox.add(connection, TOPIC, f"k{number % 3}", payload)
    ctx.outbox_written.set()


async def _drain(consumer: EmbeddedConsumer, want: int) -> list[Record]:
    got: list[Record] = []
    async with asyncio.timeout(30):
        while len(got) < want:
            got += await consumer.fetch(timeout=0.5, max_records=100)
    return got


def _passes(metrics: Metrics) -> tuple[float, float]:
    """Relay passes that published something, and the records they published."""
    (family,) = metrics.outbox_batch_size.collect()
    samples = {s.name: s.value for s in family.samples}
    return samples["herald_outbox_relay_batch_records_count"], samples[
        "herald_outbox_relay_batch_records_sum"
    ]


async def test_writes_under_load_share_a_pass_and_an_idle_relay_goes_at_once(
    database: Database,
) -> None:
    settings = Settings(database_url="sqlite://", relay_linger=LINGER)
    ctx = IngestContext(settings, database, load_topics(), Metrics())
    assert ctx.outbox.relayed
    bus = EmbeddedBus(database)
    consumer = bus.consumer("relay-test", TOPIC)
    stop = asyncio.Event()
    relay = asyncio.create_task(run_relay(ctx, bus, stop))
    try:
        loop = asyncio.get_running_loop()
        await _write(ctx, 0)
        written = loop.time()
        first = await _drain(consumer, 1)
        # Idle relay: the first write does not wait for the linger.
        assert loop.time() - written < LINGER
        # Nineteen writes, one transaction each, while the relay paces itself after its pass:
        # they all go in its next pass. (Each commit takes milliseconds; even on a loaded
        # machine they are done long before the second's linger ends.)
        for number in range(1, 20):
            await _write(ctx, number)
        rest = await _drain(consumer, 19)
        assert loop.time() - written >= LINGER, "the second pass did not wait for the linger"
    finally:
        stop.set()
        await relay
    values = [orjson.loads(r.value)["number"] for r in first + rest]
    assert values == list(range(20)), "every record once, in write order"
    assert _passes(ctx.metrics) == (2, 20)
    async with database.transaction() as connection:
        assert await outbox.claim(connection, 100) == [], "published records left the outbox"
