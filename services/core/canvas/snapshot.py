"""The snapshot (`canvas-integration-task-snapshot/1`): checked and read into typed values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from herald.core.canvas.vocabulary import (
    CHANNELS,
    INSTANCE_PATTERN,
    SNAPSHOT_SCHEMA,
    STATUSES,
    UUID_PATTERN,
)
from herald.core.errors import InvalidResource
from herald.core.fhir import is_valid_id
from herald.core.types import JsonObject


@dataclass(frozen=True)
class ServiceProvider:
    """The sender of the document."""

    id: str | None
    first_name: str
    last_name: str
    practice_name: str
    npi: str


@dataclass(frozen=True)
class Review:
    """One IntegrationTaskReview."""

    id: str
    dbid: int | None
    junked: bool
    template_name: str
    document_key: str
    reviewer_id: str | None
    reviewer_name: str
    team_reviewer_id: str | None
    team_reviewer_name: str
    created: datetime | None
    modified: datetime


@dataclass(frozen=True)
class IntegrationTask:
    """The IntegrationTask part of a snapshot."""

    id: str
    dbid: int | None
    status: str
    channel: str
    type: str
    title: str
    patient_id: str | None
    service_provider: ServiceProvider | None
    created: datetime
    modified: datetime


@dataclass(frozen=True)
class Snapshot:
    """A validated snapshot: a task with its reviews, or a deletion."""

    instance: str
    task_id: str
    event_name: str
    deleted: bool
    task: IntegrationTask | None
    reviews: tuple[Review, ...]
    deleted_at: datetime | None
    """When Canvas deleted the document (`deleted_at`, else `event.received_at`)."""

    @property
    def modified(self) -> datetime | None:
        """The moment of the newest change the snapshot shows (task or any review, junked too)."""
        if self.task is None:
            return None
        return max([self.task.modified, *(r.modified for r in self.reviews)])


class _Reader:
    """Typed access to a JSON object, raising InvalidResource with the JSON path."""

    def __init__(self, value: object, path: str) -> None:
        if not isinstance(value, dict):
            raise InvalidResource(
                f"{path or 'the snapshot'} must be a JSON object", expression=path
            )
        self.value: Mapping[str, Any] = value
        self.path = path

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def raw(self, key: str) -> object:
        return self.value.get(key)

    def string(self, key: str, *, required: bool = False, max_length: int = 10_000) -> str | None:
        value = self.value.get(key)
        if value is None:
            if required:
                raise InvalidResource(f"{self._at(key)} is required", expression=self._at(key))
            return None
        if not isinstance(value, str):
            raise InvalidResource(f"{self._at(key)} must be a string", expression=self._at(key))
        if required and not value:
            raise InvalidResource(f"{self._at(key)} must not be empty", expression=self._at(key))
        if len(value) > max_length:
            raise InvalidResource(
                f"{self._at(key)} is longer than {max_length} characters", expression=self._at(key)
            )
        return value

    def text(self, key: str, *, max_length: int = 10_000) -> str:
        return (self.string(key, max_length=max_length) or "").strip()

    def integer(self, key: str) -> int | None:
        value = self.value.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidResource(f"{self._at(key)} must be an integer", expression=self._at(key))
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.value.get(key, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise InvalidResource(
                f"{self._at(key)} must be true or false", expression=self._at(key)
            )
        return value

    def instant(self, key: str, *, required: bool) -> datetime | None:
        value = self.string(key, required=required)
        if value is None:
            return None
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            moment = None
        if moment is None or "T" not in value.upper():
            raise InvalidResource(
                f"{self._at(key)} must be an ISO 8601 date-time, got {value!r}",
                expression=self._at(key),
            )
        if moment.tzinfo is None:
            raise InvalidResource(
                f"{self._at(key)} must carry a time zone offset, got {value!r}",
                expression=self._at(key),
            )
        return moment.astimezone(UTC)

    def uuid(self, key: str, *, required: bool) -> str | None:
        value = self.string(key, required=required)
        if value is not None and not (UUID_PATTERN.match(value) and is_valid_id(value)):
            raise InvalidResource(
                f"{self._at(key)} must be a UUID, got {value!r}", expression=self._at(key)
            )
        return value

    def key(self, key: str) -> str | None:
        """An id of another Canvas record (Patient/Staff key or a UUID): a FHIR id, or absent."""
        value = self.string(key)
        if value is None or value == "":
            return None
        if not is_valid_id(value):
            raise InvalidResource(
                f"{self._at(key)} is not a valid id: {value!r}", expression=self._at(key)
            )
        return value

    def child(self, key: str) -> _Reader | None:
        value = self.value.get(key)
        return None if value is None else _Reader(value, self._at(key))


def parse_snapshot(body: object) -> Snapshot:
    """Check a snapshot (schema canvas-integration-task-snapshot/1) and read it."""
    top = _Reader(body, "")
    schema = top.raw("schema")
    if schema != SNAPSHOT_SCHEMA:
        raise InvalidResource(
            f"schema must be {SNAPSHOT_SCHEMA!r}, got {schema!r}", expression="schema"
        )
    instance = top.string("instance", required=True, max_length=100)
    assert instance is not None
    if not INSTANCE_PATTERN.match(instance):
        raise InvalidResource(
            f"instance must be a Canvas instance name (letters, digits, '.', '_', '-'), "
            f"got {instance!r}",
            expression="instance",
        )
    # The event is informational (which Canvas event led to the snapshot), so it may be absent;
    # a deletion without the task's content needs its target.
    event = top.child("event") or _Reader({}, "event")
    event_name = event.string("name", max_length=100) or "UNKNOWN"
    target = event.uuid("target", required=False)
    event.string("actor")
    received_at = event.instant("received_at", required=False)
    deleted = top.boolean("deleted", False)
    deleted_at = top.instant("deleted_at", required=False)

    task_reader = top.child("integration_task")
    task = None if task_reader is None else _parse_task(task_reader)
    if task is None and not deleted:
        raise InvalidResource(
            "integration_task is required unless deleted is true", expression="integration_task"
        )
    if task is not None and target is not None and task.id.lower() != target.lower():
        raise InvalidResource(
            f"event.target ({target}) differs from integration_task.id ({task.id})",
            expression="event.target",
        )
    task_id = task.id if task is not None else target
    if task_id is None:
        raise InvalidResource(
            "a deletion without integration_task must name the task in event.target",
            expression="event.target",
        )

    raw_reviews = top.raw("reviews")
    if raw_reviews is None:
        raw_reviews = []
    if not isinstance(raw_reviews, list):
        raise InvalidResource("reviews must be an array", expression="reviews")
    if len(raw_reviews) > 1000:
        raise InvalidResource("reviews holds more than 1000 reviews", expression="reviews")
    reviews = tuple(_parse_review(_Reader(r, f"reviews[{i}]")) for i, r in enumerate(raw_reviews))
    ids = [r.id for r in reviews]
    if len(set(ids)) != len(ids):
        raise InvalidResource("reviews holds the same review twice", expression="reviews")
    return Snapshot(
        instance=instance,
        task_id=task_id.lower(),
        event_name=event_name,
        deleted=deleted,
        task=task,
        reviews=reviews,
        deleted_at=(deleted_at or received_at) if deleted else None,
    )


def _parse_task(r: _Reader) -> IntegrationTask:
    task_id = r.uuid("id", required=True)
    status = r.string("status", required=True)
    if status not in STATUSES:
        raise InvalidResource(
            f"{r.path}.status must be one of {', '.join(STATUSES)}, got {status!r}",
            expression=f"{r.path}.status",
        )
    channel = r.string("channel", required=True)
    if channel not in CHANNELS:
        raise InvalidResource(
            f"{r.path}.channel must be one of {', '.join(CHANNELS)}, got {channel!r}",
            expression=f"{r.path}.channel",
        )
    created = r.instant("created", required=True)
    modified = r.instant("modified", required=True)
    assert task_id is not None and created is not None and modified is not None
    sp = r.child("service_provider")
    provider = None
    if sp is not None:
        provider = ServiceProvider(
            id=sp.key("id"),
            first_name=sp.text("first_name"),
            last_name=sp.text("last_name"),
            practice_name=sp.text("practice_name"),
            npi=sp.text("npi", max_length=10),
        )
    return IntegrationTask(
        id=task_id.lower(),
        dbid=r.integer("dbid"),
        status=status,
        channel=channel,
        type=r.text("type", max_length=125),
        title=r.text("title", max_length=256),
        patient_id=r.key("patient_id"),
        service_provider=provider,
        created=created,
        modified=modified,
    )


def _parse_review(r: _Reader) -> Review:
    review_id = r.uuid("id", required=True)
    modified = r.instant("modified", required=True)
    assert review_id is not None and modified is not None
    return Review(
        id=review_id.lower(),
        dbid=r.integer("dbid"),
        junked=r.boolean("junked", False),
        template_name=r.text("template_name", max_length=1000),
        document_key=r.text("document_key", max_length=250),
        reviewer_id=r.key("reviewer_id"),
        reviewer_name=r.text("reviewer_name"),
        team_reviewer_id=r.key("team_reviewer_id"),
        team_reviewer_name=r.text("team_reviewer_name"),
        created=r.instant("created", required=False),
        modified=modified,
    )


def parse_instant(value: str) -> datetime | None:
    """A FHIR instant or dateTime with a zone (UTC when none); None when unreadable."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def older_than_stored(snapshot: Snapshot, stored: JsonObject) -> bool:
    """True when the snapshot shows an older state than the stored Task's lastModified."""
    stored_modified = stored.get("lastModified")
    before = parse_instant(stored_modified) if isinstance(stored_modified, str) else None
    now = snapshot.modified
    return before is not None and now is not None and now < before
