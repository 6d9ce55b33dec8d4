"""Checkpoints of SQLite's write-ahead log, on a thread of their own.

A commit appends the transaction's pages to the WAL file: a few microseconds, so Herald commits
on the event loop (see sqlite_driver.py). But by default the commit that takes the WAL past 1,000
pages also copies it back into the database file and syncs it, tens of milliseconds during which
the event loop would stand still. Herald's connections therefore never checkpoint on commit
(`PRAGMA wal_autocheckpoint=0`); this checkpointer does, after every CHECKPOINT_EVERY commits, in
PASSIVE mode (it waits for no reader or writer) on its own connection and thread.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiosqlite

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 200
"""Commits between checkpoints: at a handful of pages per Task write, well under the 1,000 pages
after which SQLite itself would checkpoint."""

NO_AUTOCHECKPOINT = "PRAGMA wal_autocheckpoint=0"
"""For every connection of the process: the checkpointer does it."""


class Checkpointer:
    """Counts commits and checkpoints the WAL in the background every so many."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._commits = 0
        self._running: asyncio.Task[None] | None = None
        self.checkpoints = 0
        """Checkpoints completed (for tests)."""

    def committed(self) -> None:
        """Note a commit; start a checkpoint when enough have gone by and none is running."""
        self._commits += 1
        if self._commits >= CHECKPOINT_EVERY and self._running is None:
            self._commits = 0
            self._running = asyncio.get_running_loop().create_task(self._checkpoint())

    async def _checkpoint(self) -> None:
        try:
            async with aiosqlite.connect(self.path, timeout=0) as connection:
                await connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self.checkpoints += 1
        except Exception:
            log.warning("WAL checkpoint failed; retrying after more commits", exc_info=True)
        finally:
            self._running = None

    async def aclose(self) -> None:
        """Wait for a running checkpoint, then checkpoint what is left."""
        if self._running is not None:
            await self._running
        if self._commits:
            await self._checkpoint()
