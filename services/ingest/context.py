"""What the ingest routes share."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from herald.core.topics import TopicCatalog
from herald.ingest.auth.server import AuthServer
from herald.runtime.metrics import Metrics
from herald.runtime.settings import Settings
from herald.runtime.store.database import Database
from herald.runtime.store.group_commit import GroupCommit
from herald.runtime.store.outbox import Outbox


@dataclass
class IngestContext:
    """Settings, store, topics and metrics of one ingest process."""

    settings: Settings
    database: Database
    topics: TopicCatalog
    metrics: Metrics
    auth: AuthServer | None = None
    """The token issuer and checker; None when authentication is off (HERALD_AUTH=none)."""
    outbox: Outbox = field(default_factory=Outbox)
    """Where writes queue the records they cause (the outbox table, or the embedded bus)."""
    outbox_written: asyncio.Event = field(default_factory=asyncio.Event)
    """Set after a write queued outbox records, so the relay publishes without waiting."""
    write_groups: GroupCommit = field(init=False)
    """The transactions of resource writes (grouped on SQLite)."""

    def __post_init__(self) -> None:
        self.write_groups = GroupCommit(self.database, self.metrics.write_group_size.observe)


# Dependencies are coroutines: FastAPI runs a plain function in a worker thread, a thread hop
# per dependency and request.
async def context(request: Request) -> IngestContext:
    """The IngestContext of the app serving this request."""
    ctx: IngestContext = request.app.state.herald
    return ctx


Ctx = Annotated[IngestContext, Depends(context)]
"""Route parameter type that injects the IngestContext."""
