"""Snapshots that could not be delivered, kept in the plugin cache until a later run sends them."""

from __future__ import annotations

from typing import Any

from canvas_sdk.caching.plugins import get_cache

PENDING_KEY = "herald:pending"
CURSOR_KEY = "herald:cursor"


def cache() -> Any:
    """The plugin's cache (Canvas keeps it per plugin, for up to 14 days per entry)."""
    return get_cache()


def pending() -> dict[str, Any]:
    """IntegrationTask id -> the deletion snapshot to resend, or None to re-read the task."""
    value = cache().get(PENDING_KEY)
    return dict(value) if isinstance(value, dict) else {}


def remember(task_id: str, deletion: dict[str, Any] | None = None) -> None:
    """Keep a task whose snapshot could not be delivered, for the next reconciliation."""
    waiting = pending()
    if deletion is not None or task_id not in waiting:
        waiting[task_id] = deletion
    cache().set(PENDING_KEY, waiting)


def forget(task_ids: list[str]) -> None:
    """Drop delivered tasks from the pending set."""
    if not task_ids:
        return
    waiting = pending()
    for task_id in task_ids:
        waiting.pop(task_id, None)
    cache().set(PENDING_KEY, waiting)


def cursor() -> str | None:
    """The ISO timestamp up to which every change was delivered."""
    value = cache().get(CURSOR_KEY)
    return value if isinstance(value, str) else None


def move_cursor(value: str) -> None:
    """Record that every change up to `value` was delivered."""
    cache().set(CURSOR_KEY, value)
