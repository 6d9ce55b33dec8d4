"""Smoke test for a broker started by deploy/local/kafka.sh (needs aiokafka).

    python deploy/local/kafka_smoke.py 127.0.0.1:19092 write    # fresh broker
    deploy/local/kafka.sh stop && KAFKA_KEEP_DATA=1 deploy/local/kafka.sh start
    python deploy/local/kafka_smoke.py 127.0.0.1:19092 verify   # after the restart

write:  creates topic herald.smoke (3 partitions) with AIOKafkaAdminClient, produces 30 keyed
        records with enable_idempotence=True, consumes them in group herald-smoke with manual
        commit and checks per-key order.
verify: checks the 30 records survived (fresh group from earliest), that the committed offsets of
        group herald-smoke survived, then produces 10 more and consumes exactly those 10.
Exits non-zero on any failure. Only talks to the given loopback bootstrap.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

TOPIC = "herald.smoke"
GROUP = "herald-smoke"
KEYS = [f"Patient/{i}" for i in range(5)]


async def produce(bootstrap: str, start: int, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        for n in range(start, start + count):
            key = KEYS[n % len(KEYS)]
            await producer.send_and_wait(TOPIC, value=f"{n}".encode(), key=key.encode())
    finally:
        await producer.stop()


async def consume(
    bootstrap: str, group: str, expected: int, commit: bool
) -> list[tuple[str, int, int]]:
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    got: list[tuple[str, int, int]] = []
    try:
        deadline = time.monotonic() + 60
        while len(got) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            for msgs in batch.values():
                for m in msgs:
                    got.append((m.key.decode(), m.partition, int(m.value)))
            if batch and commit:
                await consumer.commit()
        # make sure nothing beyond `expected` is pending
        extra = await consumer.getmany(timeout_ms=1500)
        for msgs in extra.values():
            got.extend((m.key.decode(), m.partition, int(m.value)) for m in msgs)
        if extra and commit:
            await consumer.commit()
    finally:
        await consumer.stop()
    return got


def check_order(got: list[tuple[str, int, int]]) -> None:
    per_key: dict[str, list[int]] = defaultdict(list)
    parts: dict[str, set[int]] = defaultdict(set)
    for key, part, val in got:
        per_key[key].append(val)
        parts[key].add(part)
    for key, vals in per_key.items():
        assert vals == sorted(vals), f"order broken for {key}: {vals}"
        assert len(parts[key]) == 1, f"{key} spread over partitions {parts[key]}"


async def write(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=1)])
        meta = await admin.describe_topics([TOPIC])
        print("created", TOPIC, "partitions:", len(meta[0]["partitions"]))
    finally:
        await admin.close()
    t0 = time.monotonic()
    await produce(bootstrap, 0, 30)
    print(f"produced 30 idempotent records in {time.monotonic() - t0:.2f}s")
    t0 = time.monotonic()
    got = await consume(bootstrap, GROUP, 30, commit=True)
    assert sorted(v for _, _, v in got) == list(range(30)), f"consumed {len(got)}: {got}"
    check_order(got)
    print(
        f"consumed+committed 30 in group {GROUP} in {time.monotonic() - t0:.2f}s; per-key order OK"
    )


async def verify(bootstrap: str) -> None:
    fresh = await consume(bootstrap, f"herald-smoke-{uuid.uuid4().hex[:8]}", 30, commit=False)
    assert sorted(v for _, _, v in fresh) == list(range(30)), f"data lost: {len(fresh)} records"
    check_order(fresh)
    print("after restart: all 30 records still there")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(TOPIC, p) for p in range(3)]
        committed = {tp.partition: await consumer.committed(tp) for tp in tps}
        ends = {tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()
    assert committed == ends, f"committed {committed} != end offsets {ends}"
    print("after restart: committed offsets of", GROUP, "survived:", committed)
    await produce(bootstrap, 30, 10)
    got = await consume(bootstrap, GROUP, 10, commit=True)
    assert sorted(v for _, _, v in got) == list(range(30, 40)), f"resumed wrong: {got}"
    print("after restart: group resumed exactly at the 10 new records")


def main() -> None:
    bootstrap, mode = sys.argv[1], sys.argv[2]
    asyncio.run({"write": write, "verify": verify}[mode](bootstrap))
    print("SMOKE", mode, "OK")


if __name__ == "__main__":
    main()
