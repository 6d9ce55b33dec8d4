"""The scheduled reconciliation: the changes no event reports (read, error, junk), and retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from canvas_sdk.effects import Effect
from canvas_sdk.handlers.cron_task import CronTask
from canvas_sdk.v1.data.integration_task import IntegrationTask, IntegrationTaskReview
from logger import log

from herald_canvas.pending import cursor, forget, move_cursor, pending
from herald_canvas.snapshot import Settings, build_snapshot, instant, load_task, post_snapshot

RECONCILE = "RECONCILE"
# Rows committed just after a run's queries can carry an earlier `modified`: the next run looks
# back this far before the previous run's start.
OVERLAP = timedelta(minutes=2)


def changed_since(since: datetime, limit: int) -> list[tuple[datetime, str]]:
    """(modified, id) of tasks changed after `since` (themselves or one of their reviews)."""
    changes: dict[str, datetime] = {}
    tasks = (
        IntegrationTask.objects.filter(modified__gt=since)
        .order_by("modified", "dbid")
        .values_list("id", "modified")[:limit]
    )
    for task_id, modified in tasks:
        changes[str(task_id)] = modified
    reviews = (
        IntegrationTaskReview.objects.filter(modified__gt=since)
        .order_by("modified", "dbid")
        .values_list("task__id", "modified")[:limit]
    )
    for task_id, modified in reviews:
        key = str(task_id)
        if key not in changes or modified > changes[key]:
            changes[key] = modified
    ordered = sorted((modified, task_id) for task_id, modified in changes.items())
    return ordered[:limit]


class ReconcileIntegrationTasks(CronTask):
    """Every 5 minutes: post every IntegrationTask changed since the last complete run.

    The cursor (in the plugin cache) only moves past changes that were delivered, so a failed
    post is sent again on the next run; so are the tasks and deletions the event handler could
    not deliver. Herald ignores what it already has, so sending twice is harmless.
    """

    SCHEDULE = "*/5 * * * *"

    def execute(self) -> list[Effect]:
        """One reconciliation run."""
        settings = Settings(self.secrets, self.environment)
        if not settings.configured:
            log.warning("[herald] HERALD_URL or the Canvas instance name is not configured")
            return []
        started = datetime.now(UTC)
        delivered: list[str] = []
        for task_id, deletion in pending().items():
            if deletion is not None:
                ok = post_snapshot(settings, deletion)
            else:
                task = load_task(task_id)
                ok = task is None or post_snapshot(
                    settings, build_snapshot(settings.instance, RECONCILE, task_id, task)
                )
            if ok:
                delivered.append(task_id)
        forget(delivered)

        stored = cursor()
        since = datetime.fromisoformat(stored) if stored else started - settings.lookback
        changes = changed_since(since, settings.batch_size)
        next_since = started - OVERLAP
        for modified, task_id in changes:
            task = load_task(task_id)
            if task is None:
                continue
            snapshot = build_snapshot(settings.instance, RECONCILE, task_id, task)
            if not post_snapshot(settings, snapshot):
                # Everything before the failure was delivered: start there next time.
                next_since = modified - timedelta(microseconds=1)
                break
        else:
            if len(changes) >= settings.batch_size:
                # A full batch: continue after its last change next time.
                next_since = changes[-1][0] - timedelta(microseconds=1)
        move_cursor(instant(next_since) or "")
        log.info(f"[herald] reconciliation sent {len(changes)} task(s)")
        return []
