"""A dispatcher's delivery side for tests that drive it directly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from herald.dispatcher.circuit_breakers import CircuitBreakers
from herald.dispatcher.delivery import Deliverer
from herald.runtime.metrics import Metrics
from herald.runtime.packaged import load_topics
from herald.runtime.sender import HttpSender
from herald.runtime.settings import Settings
from herald.runtime.slots import Slots
from herald.runtime.store.database import Database


@asynccontextmanager
async def open_deliverer(
    settings: Settings, database: Database, breakers: CircuitBreakers | None = None
) -> AsyncIterator[Deliverer]:
    """A Deliverer on `database` with a real sender under the settings' endpoint policy."""
    sender = HttpSender(settings.endpoint_policy)
    try:
        yield Deliverer(
            settings,
            database,
            load_topics(settings.topics_dir),
            sender,
            Metrics(),
            Slots(8),
            breakers or CircuitBreakers(),
        )
    finally:
        await sender.aclose()
