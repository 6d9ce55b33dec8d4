"""The Kafka bus (aiokafka): an idempotent producer, group consumers with manual commits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    TopicAlreadyExistsError,
)
from aiokafka.partitioner import murmur2

from herald.runtime.bus.base import REQUEST_ID_HEADER, Outgoing, Record, Transaction

log = logging.getLogger(__name__)


async def ensure_topics(
    bootstrap: str, names: Sequence[str], partitions: int, replication_factor: int
) -> None:
    """Create the topics that do not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)
            for name in names
            if name not in existing
        ]
        if missing:
            # Another service may have created it first.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        await _wait_for_leaders(admin, names)
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: Sequence[str]) -> None:
    """Return once every partition of the topics has a leader (at most 30 s).

    A consumer that subscribes while a new topic has no partitions in the metadata yet is
    assigned nothing until its next metadata refresh (5 minutes): services started together on
    a fresh cluster would sit idle that long.
    """
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        topics = await admin.describe_topics(list(names))
        if all(
            t["error_code"] == 0
            and t["partitions"]
            and all(p["error_code"] == 0 and p["leader"] >= 0 for p in t["partitions"])
            for t in topics
        ):
            return
        if asyncio.get_running_loop().time() > deadline:
            log.warning("topics still have partitions without a leader", extra={"topics": names})
            return
        await asyncio.sleep(0.2)


async def kafka_answers(bootstrap: str, timeout: float = 3.0) -> bool:
    """Whether the cluster answers a metadata request within the timeout."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            await admin.list_topics()
    except Exception:  # noqa: BLE001 - any failure means "not ready"
        return False
    finally:
        await admin.close()
    return True


class KafkaPublisher:
    """An idempotent producer (acks=all): a send that returns is on the brokers' logs."""

    def __init__(self, bootstrap: str) -> None:
        # No linger: `publish` hands every record of a batch to the producer before it yields,
        # so they leave in one request anyway; a linger only delayed that request. Batching
        # across publishes is the callers' (the relay's pacing, the matcher's fetched batches).
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            enable_idempotence=True,
            acks="all",
            linger_ms=0,
        )

    async def start(self) -> None:
        """Connect."""
        await self._producer.start()

    async def aclose(self) -> None:
        """Flush and disconnect."""
        await self._producer.stop()

    async def publish(
        self, records: Sequence[Outgoing], transaction: Transaction | None = None
    ) -> None:
        """Send records and wait until every one is acknowledged (`transaction` is not used)."""
        futures = [
            await self._producer.send(
                r.topic,
                r.value,
                key=r.key.encode(),
                headers=[(REQUEST_ID_HEADER, r.request_id.encode())] if r.request_id else None,
            )
            for r in records
        ]
        if futures:
            await asyncio.gather(*futures)


def _request_id(headers: Sequence[tuple[str, bytes]] | None) -> str | None:
    value = next((v for k, v in headers or () if k == REQUEST_ID_HEADER), None)
    return None if value is None else value.decode("utf-8", "replace")


# Seconds a closing consumer tries to commit its pending offsets.
CLOSE_COMMIT_TIMEOUT = 5.0
# Seconds between the broker requests behind `KafkaConsumer.lag` (a gauge scraped every 15 s or so).
LAG_INTERVAL = 5.0


@dataclass(frozen=True)
class Membership:
    """How a consumer takes part in its group: static name, session timeout, heartbeats."""

    instance_id: str | None = None
    """group.instance.id (KIP-345): a member restarted under it gets its partitions back without
    a rebalance, instead of waiting for the session of its dead predecessor to expire."""
    session_timeout: float = 6.0
    heartbeat_interval: float = 1.0
    commit_interval: float = 0.5
    """Seconds between offset commits; processed offsets wait in memory until then."""


class KafkaConsumer:
    """A consumer-group member of one topic, committing offsets only when told."""

    def __init__(
        self, bootstrap: str, group_id: str, topic: str, membership: Membership = Membership()
    ) -> None:
        self.topic = topic
        self._static = membership.instance_id is not None
        self._commit_interval = membership.commit_interval
        self._pending: dict[TopicPartition, int] = {}
        """Offsets after processed records, not committed yet."""
        self._committed_at = 0.0
        self._lag: int | None = None
        self._lag_at = -LAG_INTERVAL
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group_id,
            group_instance_id=membership.instance_id,
            session_timeout_ms=int(membership.session_timeout * 1000),
            heartbeat_interval_ms=int(membership.heartbeat_interval * 1000),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )

    async def start(self) -> None:
        """Join the group."""
        await self._consumer.start()

    async def aclose(self) -> None:
        """Commit the pending offsets and leave the group, static member or not.

        aiokafka (like Kafka's Java client before KIP-1092) keeps a static member in the group
        when it closes, betting on a restart under the same name; an instance that is stopped
        for good, or replaced under another name (a rolling update of a Deployment), would then
        hold its partitions idle for the session timeout. A graceful stop hands them over at
        once; only a crash relies on the static name.
        """
        try:
            # The next owner starts exactly where this one stopped; a broker that is away must
            # not keep the process from exiting (the records are read again instead).
            async with asyncio.timeout(CLOSE_COMMIT_TIMEOUT):
                await self._commit_pending()
        except (KafkaError, TimeoutError) as exc:
            log.warning("offsets not committed on close", extra={"reason": repr(exc)})
        coordinator = self._consumer._coordinator
        if self._static and coordinator is not None:
            # The leave request names the member by its member id, which the broker accepts
            # for a static member too; aiokafka skips it only because of the instance id.
            coordinator._group_instance_id = None
        await self._consumer.stop()

    async def fetch(self, timeout: float, max_records: int) -> list[Record]:
        """The next records from the assigned partitions."""
        if self._pending and self._commit_due():
            await self._commit_pending()
        batches = await self._consumer.getmany(
            timeout_ms=int(timeout * 1000), max_records=max_records
        )
        return [
            Record(
                m.topic,
                m.partition,
                m.offset,
                (m.key or b"").decode(),
                m.value or b"",
                m.timestamp,
                _request_id(m.headers),
            )
            for messages in batches.values()
            for m in messages
        ]

    async def commit(self, records: Sequence[Record]) -> None:
        """Mark records processed; their offsets reach Kafka at most every commit interval.

        A commit is a round trip to the group coordinator and a write to its log; one per batch
        cost as much as the batch itself when batches are small. Only offsets of records whose
        work is durable are ever committed, so deferring loses nothing: after a crash the group
        reads the last fraction of a second again, which the services tolerate (the dispatcher
        skips a request id it has seen; the matcher's request ids are derived from the change).
        The pending offsets are committed by the next fetch once due, and on close.
        """
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            self._pending[tp] = max(self._pending.get(tp, 0), r.offset + 1)
        if self._commit_due():
            await self._commit_pending()

    def _commit_due(self) -> bool:
        return time.monotonic() - self._committed_at >= self._commit_interval

    async def _commit_pending(self) -> None:
        """Commit the pending offsets, per partition still assigned.

        A rebalance since the fetch may have given partitions to another member; their offsets
        are left alone and the new owner reads those records again from the last committed
        offset.
        """
        offsets, self._pending = self._pending, {}
        self._committed_at = time.monotonic()
        assigned = self._consumer.assignment()
        kept = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if len(kept) < len(offsets):
            log.info(
                "offsets left to the new owner of revoked partitions",
                extra={"partitions": len(offsets) - len(kept)},
            )
        if not kept:
            return
        try:
            await self._consumer.commit(kept)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning(
                "offsets not committed: the group rebalanced meanwhile",
                extra={"reason": str(exc)},
            )

    def owns(self, key: str) -> bool:
        """Whether the key's partition (Java-compatible murmur2) is assigned to this member."""
        partitions = self._consumer.partitions_for_topic(self.topic)
        if not partitions:
            return False
        partition = (murmur2(key.encode()) & 0x7FFFFFFF) % len(partitions)
        return TopicPartition(self.topic, partition) in self._consumer.assignment()

    async def lag(self) -> int | None:
        """Records after the committed offsets of the assigned partitions.

        Two requests (the end offsets, and the committed offsets of every assigned partition in
        one OffsetFetch), made at most every LAG_INTERVAL: the services ask on every registry
        poll, and a request per partition each second was a tenth of the broker's requests.
        """
        if time.monotonic() - self._lag_at < LAG_INTERVAL:
            return self._lag
        self._lag_at = time.monotonic()
        assignment = list(self._consumer.assignment())
        if not assignment:
            self._lag = 0
            return 0
        ends = await self._consumer.end_offsets(assignment)
        coordinator = self._consumer._coordinator
        assert coordinator is not None  # a group member has one
        committed = await coordinator.fetch_committed_offsets(assignment)
        self._lag = sum(
            ends[tp] - max(0, committed[tp].offset if tp in committed else 0) for tp in assignment
        )
        return self._lag
