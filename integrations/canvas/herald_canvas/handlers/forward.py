"""DOCUMENT_* events: post the IntegrationTask's current snapshot to Herald."""

from __future__ import annotations

from canvas_sdk.effects import Effect
from canvas_sdk.events import EventType
from canvas_sdk.handlers.base import BaseHandler
from logger import log

from herald_canvas.pending import remember
from herald_canvas.snapshot import Settings, build_snapshot, load_task, post_snapshot

DOCUMENT_EVENTS = [
    EventType.Name(EventType.DOCUMENT_RECEIVED),
    EventType.Name(EventType.DOCUMENT_LINKED_TO_PATIENT),
    EventType.Name(EventType.DOCUMENT_CATEGORIZED),
    EventType.Name(EventType.DOCUMENT_REVIEWER_ASSIGNED),
    EventType.Name(EventType.DOCUMENT_REVIEWED),
    EventType.Name(EventType.DOCUMENT_FIELDS_UPDATED),
    EventType.Name(EventType.DOCUMENT_DELETED),
]
DELETED = EventType.Name(EventType.DOCUMENT_DELETED)


class ForwardDocumentEvents(BaseHandler):
    """Re-reads the IntegrationTask an event is about and posts its snapshot (signed).

    The event context only says what changed, so the whole task with all its reviews is sent;
    Herald drops snapshots that are older than, or identical to, what it has. A failed post is
    remembered and sent again by the reconciliation task.
    """

    RESPONDS_TO = DOCUMENT_EVENTS

    def compute(self) -> list[Effect]:
        """Post the snapshot; no effects in Canvas."""
        settings = Settings(self.secrets, self.environment)
        if not settings.configured:
            log.warning("[herald] HERALD_URL or the Canvas instance name is not configured")
            return []
        context = self.event.context if isinstance(self.event.context, dict) else {}
        document = context.get("document")
        task_id = document.get("id") if isinstance(document, dict) else None
        task_id = str(task_id or self.event.target.id or "")
        if not task_id:
            log.warning(f"[herald] {self.event.name} names no IntegrationTask")
            return []
        actor = self.event.actor.id if self.event.actor else None
        task = load_task(task_id)
        if self.event.name == DELETED:
            deleted_at = context.get("deleted_at")
            snapshot = build_snapshot(
                settings.instance,
                self.event.name,
                task_id,
                task,
                actor=actor,
                deleted=True,
                deleted_at=str(deleted_at) if deleted_at else None,
            )
            if not post_snapshot(settings, snapshot):
                remember(task_id, snapshot)
            return []
        if task is None:
            log.warning(f"[herald] IntegrationTask {task_id} of {self.event.name} is not found")
            return []
        snapshot = build_snapshot(settings.instance, self.event.name, task_id, task, actor=actor)
        if not post_snapshot(settings, snapshot):
            remember(task_id)
        return []
