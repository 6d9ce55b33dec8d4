"""Delivery positions: known at once in memory, written to the store for many subscriptions at once.

A worker notes each accepted POST here and goes on without waiting for the database; a flusher
writes every noted position in one transaction every `interval` seconds, and once more when the
dispatcher stops. The position a worker resumes from is the higher of the stored one and the one
noted here, so an unwritten position never makes this dispatcher send an event twice. What a
SIGKILL (or a rebalance to another dispatcher) loses is at most one interval of positions: those
events are delivered again, which at-least-once delivery allows, and never skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from herald.runtime.lifecycle import sleep_or_stop
from herald.runtime.store import events as event_log
from herald.runtime.store.attempts import KEEP, Attempt
from herald.runtime.store.database import Database

log = logging.getLogger(__name__)


class Progress:
    """The highest event number delivered per subscription, and the ones not yet stored."""

    def __init__(self, database: Database, interval: float = 0.2) -> None:
        self.database = database
        self.interval = interval
        self._delivered: dict[str, int] = {}
        self._unwritten: dict[str, int] = {}
        self._attempts: list[Attempt] = []
        self._unpruned: dict[str, int] = {}
        """Attempts stored per subscription since its attempts were last pruned (none noted:
        unknown, pruned at its next flush)."""

    def position(self, subscription_id: str, stored: int) -> int:
        """Where delivery resumes: the stored position or a newer one noted here."""
        return max(stored, self._delivered.get(subscription_id, 0))

    def delivered(self, subscription_id: str, through: int) -> None:
        """Note that the subscription's events up to `through` were accepted."""
        if through > self._delivered.get(subscription_id, 0):
            self._delivered[subscription_id] = through
            self._unwritten[subscription_id] = through

    def attempted(self, attempt: Attempt) -> None:
        """Note a delivery attempt; stored with the next positions (see store/attempts.py)."""
        self._attempts.append(attempt)

    @property
    def unwritten(self) -> int:
        """How many subscriptions have a position not yet stored."""
        return len(self._unwritten)

    async def flush(self) -> None:
        """Store every noted position in one transaction; kept for the next try if it fails."""
        if not self._unwritten and not self._attempts:
            return
        batch, self._unwritten = self._unwritten, {}
        noted, self._attempts = self._attempts, []
        # A subscription's old attempts are dropped once KEEP more were stored since the last
        # time (a DELETE per subscription and flush cost as much as storing the attempts), so
        # at most 2 * KEEP - 1 are stored at once; attempts.recent shows the newest KEEP.
        stored = Counter(a.subscription_id for a in noted)
        prune = {s for s, n in stored.items() if self._unpruned.get(s, KEEP) + n >= KEEP}
        try:
            await event_log.store_progress(self.database, batch, noted, prune)
        except BaseException:
            for subscription_id, through in batch.items():
                self._unwritten.setdefault(subscription_id, through)
            self._attempts[:0] = noted
            raise
        for subscription_id, n in stored.items():
            self._unpruned[subscription_id] = (
                0 if subscription_id in prune else self._unpruned.get(subscription_id, 0) + n
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every interval until stopped (the final flush is the caller's, after draining)."""
        while not await sleep_or_stop(stop, self.interval):
            try:
                await self.flush()
            except Exception:  # a passing outage: the positions wait in memory
                log.warning("delivery positions not stored yet; retrying", exc_info=True)
