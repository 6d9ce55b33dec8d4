"""The bus of the mode: Kafka when a bootstrap is configured, the embedded log otherwise."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from herald.core.contracts import NOTIFICATIONS, TASK_CHANGES
from herald.runtime.bus.base import Consumer, Publisher, Record, Transaction
from herald.runtime.bus.embedded import EmbeddedBus, EmbeddedConsumer
from herald.runtime.bus.kafka import (
    KafkaConsumer,
    KafkaPublisher,
    Membership,
    ensure_topics,
    kafka_answers,
)
from herald.runtime.settings import Settings
from herald.runtime.store.database import Database


class Bus:
    """Opens publishers and consumers of the configured bus."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self.settings = settings
        self.embedded = EmbeddedBus(database) if settings.embedded else None

    async def prepare(self) -> None:
        """Create the Kafka topics if they are missing (nothing to do when embedded)."""
        if self.settings.kafka_bootstrap:
            await ensure_topics(
                self.settings.kafka_bootstrap,
                [self.settings.topic(TASK_CHANGES), self.settings.topic(NOTIFICATIONS)],
                self.settings.kafka_partitions,
                self.settings.kafka_replication_factor,
            )

    async def ping(self) -> bool:
        """Whether the bus answers (a Kafka metadata request; the embedded bus is the database)."""
        if not self.settings.kafka_bootstrap:
            return True
        return await kafka_answers(self.settings.kafka_bootstrap)

    @property
    def in_store(self) -> bool:
        """Whether the bus is a log in the store: it publishes and commits positions inside a
        store transaction (see `commit_in`)."""
        return self.embedded is not None

    async def commit_in(
        self, consumer: Consumer, records: Sequence[Record], transaction: Transaction
    ) -> None:
        """Commit a consumer's records inside a store transaction, so that the work done for
        them and the group's position commit together (only when `in_store`)."""
        assert isinstance(consumer, EmbeddedConsumer), "only a bus in the store joins transactions"
        await consumer.commit(records, transaction)

    @asynccontextmanager
    async def publisher(self) -> AsyncIterator[Publisher]:
        """A publisher, closed on exit."""
        if self.embedded is not None:
            yield self.embedded
            return
        assert self.settings.kafka_bootstrap
        producer = KafkaPublisher(self.settings.kafka_bootstrap)
        await producer.start()
        try:
            yield producer
        finally:
            await producer.aclose()

    @asynccontextmanager
    async def consumer(self, group_id: str, logical_topic: str) -> AsyncIterator[Consumer]:
        """A consumer-group member for one topic, closed on exit."""
        topic = self.settings.topic(logical_topic)
        if self.embedded is not None:
            yield self.embedded.consumer(group_id, topic)
            return
        assert self.settings.kafka_bootstrap
        membership = Membership(
            self.settings.instance_id,
            self.settings.kafka_session_timeout,
            self.settings.kafka_heartbeat_interval,
            self.settings.kafka_commit_interval,
        )
        consumer = KafkaConsumer(self.settings.kafka_bootstrap, group_id, topic, membership)
        await consumer.start()
        try:
            yield consumer
        finally:
            await consumer.aclose()
