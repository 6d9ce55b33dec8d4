"""Which subscriptions changed in the registry since the last look, by registry revision."""

from __future__ import annotations

from herald.runtime.store import subscriptions as registry
from herald.runtime.store.database import Database


class RegistryWatch:
    """Polls the registry revision; one small read when nothing changed."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.revision: int | None = None

    async def changed(self) -> list[str]:
        """Ids of the subscriptions changed since the previous call (none on the first)."""
        async with self.database.read() as connection:
            current = await registry.revision(connection)
            if self.revision is None:  # this dispatcher reads each subscription when needed
                self.revision = current
            if current <= self.revision:
                return []
            changed = await registry.changed_ids_since(connection, self.revision)
        self.revision = max([current, *(revision for _, revision in changed[-1:])])
        return [subscription_id for subscription_id, _ in changed]
