"""Deciding what a snapshot changes: created, updated, unchanged or stale."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from herald.core.canvas.mapping import deleted_version, to_task
from herald.core.canvas.snapshot import Snapshot, older_than_stored
from herald.core.canvas.vocabulary import DELETED_REASON
from herald.core.types import JsonObject


class Outcome(StrEnum):
    """What a snapshot did to the stored Task (the X-Herald-Canvas-Outcome header)."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    """The snapshot maps to the Task content already stored: no new version."""
    STALE = "stale"
    """The snapshot is older than the stored Task (by lastModified), or the task was deleted."""


@dataclass(frozen=True)
class Decision:
    """The outcome, and the Task content to store when it is created or updated."""

    outcome: Outcome
    task: JsonObject | None


def is_canvas_deleted(task: JsonObject) -> bool:
    """True for a Task Herald marked entered-in-error because Canvas deleted the document."""
    reason = task.get("statusReason")
    return (
        task.get("status") == "entered-in-error"
        and isinstance(reason, dict)
        and reason.get("text") == DELETED_REASON
    )


def same_content(a: JsonObject, b: JsonObject) -> bool:
    """Equal Tasks, ignoring meta."""
    return {k: v for k, v in a.items() if k != "meta"} == {
        k: v for k, v in b.items() if k != "meta"
    }


def decide(snapshot: Snapshot, stored: JsonObject | None, base: str) -> Decision:
    """What storing this snapshot does, given the current Task (None when absent or deleted).

    - a deletion makes the Task entered-in-error (and keeps it so: deletion is final);
    - a snapshot whose lastModified is older than the stored Task's changes nothing (stale);
    - a snapshot that maps to the stored content changes nothing (unchanged);
    - anything else writes a new version.
    """
    if snapshot.deleted:
        if stored is not None and is_canvas_deleted(stored):
            return Decision(Outcome.UNCHANGED, None)
        mapped = deleted_version(stored, snapshot, base)
    else:
        if stored is not None and is_canvas_deleted(stored):
            return Decision(Outcome.STALE, None)
        if stored is not None and older_than_stored(snapshot, stored):
            return Decision(Outcome.STALE, None)
        mapped = to_task(snapshot, base)
    if stored is None:
        return Decision(Outcome.CREATED, mapped)
    if same_content(mapped, stored):
        return Decision(Outcome.UNCHANGED, None)
    return Decision(Outcome.UPDATED, mapped)
