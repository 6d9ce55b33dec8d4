"""The ports every bus adapter implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Record:
    """A record read from the bus."""

    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    timestamp_ms: int | None = None
    request_id: str | None = None
    """The id of the request that caused the record (Kafka header x-request-id)."""


@dataclass(frozen=True)
class Outgoing:
    """A record to publish."""

    topic: str
    key: str
    value: bytes
    request_id: str | None = None
    """The id of the request that caused the record (Kafka header x-request-id)."""


# The Kafka record header that carries a record's request id.
REQUEST_ID_HEADER = "x-request-id"


class Transaction(Protocol):
    """An open store transaction, opaque to the port (the embedded bus writes inside it)."""


class Publisher(Protocol):
    """Publishes records; when publish returns, the bus holds them durably."""

    async def publish(
        self, records: Sequence[Outgoing], transaction: Transaction | None = None
    ) -> None:
        """Publish records in key order; an embedded bus writes in the caller's transaction."""


class Consumer(Protocol):
    """Reads one topic as a member of a consumer group; commits are explicit."""

    async def fetch(self, timeout: float, max_records: int) -> list[Record]:
        """The next records, or [] after `timeout` seconds without any."""

    async def commit(self, records: Sequence[Record]) -> None:
        """Mark records as processed (the group resumes after them; a member may defer the
        commit briefly, never past its close)."""

    def owns(self, key: str) -> bool:
        """Whether records with this key currently come to this member."""

    async def lag(self) -> int | None:
        """Records not yet committed by this member, when known."""
