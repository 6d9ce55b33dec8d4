"""Canvas IntegrationTask snapshots (`canvas-integration-task-snapshot/1`) mapped to FHIR R4 Tasks.

Pure: no I/O. The ingest endpoint validates a snapshot with `parse_snapshot`, maps it with
`to_task`, and decides with `decide` whether the stored Task changes. The mapping follows
`docs/canvas.md` (the Canvas IntegrationTask research notes, section 3).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from herald.core.errors import InvalidResource
from herald.core.fhir import is_valid_id
from herald.core.types import JsonObject

SNAPSHOT_SCHEMA = "canvas-integration-task-snapshot/1"

TASK_GROUP_EXTENSION = "http://schemas.canvasmedical.com/fhir/extensions/task-group"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
URI_SYSTEM = "urn:ietf:rfc:3986"

STATUS_CODE_SYSTEM = "canvas-integration-task-status"
CHANNEL_CODE_SYSTEM = "canvas-integration-task-channel"
INPUT_CODE_SYSTEM = "canvas-integration-task-input"


@dataclass(frozen=True)
class CanvasStatus:
    """One IntegrationTaskStatus and the Task status it maps to."""

    code: str
    label: str
    task_status: str
    reason: str | None
    definition: str


# IntegrationTaskStatus -> Task.status (docs/canvas.md, "Status").
STATUSES: dict[str, CanvasStatus] = {
    s.code: s
    for s in (
        CanvasStatus("UNR", "Unread", "requested", None, "Received, nobody has opened it yet."),
        CanvasStatus(
            "UER",
            "Unread Error",
            "failed",
            "Integration processing error",
            "Received with a processing error, not opened yet.",
        ),
        CanvasStatus("REA", "Read", "in-progress", None, "Opened by a member of staff."),
        CanvasStatus(
            "ERR", "Error", "failed", "Integration processing error", "Processing failed."
        ),
        CanvasStatus("PRO", "Processed", "completed", None, "Filed (linked to a chart)."),
        CanvasStatus("REV", "Reviewed", "completed", None, "Reviewed and done."),
        CanvasStatus("JUN", "Junk", "cancelled", "Junked in Canvas", "Discarded as junk."),
    )
}
DELETED_REASON = "Deleted in Canvas"

# IntegrationTaskChannel value -> label.
CHANNELS: dict[str, str] = {
    "fax": "Fax",
    "document_upload": "Document Upload",
    "from_integration_engine": "From Integration Engine",
    "from_patient_portal": "From Patient Portal",
}

# Kinds of Task.input Herald writes.
INPUT_TYPES: dict[str, tuple[str, str]] = {
    "document-type": (
        "Document type",
        "The document type (report template) a review categorised the document as.",
    ),
    "canvas-type": ("Canvas task type", "The free-text IntegrationTask.type, when not blank."),
}

_INSTANCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)


# -- the snapshot ---------------------------------------------------------------------------------


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
        if value is not None and not (_UUID.match(value) and is_valid_id(value)):
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
    if not _INSTANCE.match(instance):
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


# -- the mapping ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Systems:
    """The code and naming systems of one Herald (canonical base) and one Canvas instance."""

    base: str
    instance: str

    def code_system(self, name: str) -> str:
        return f"{self.base}/CodeSystem/{name}"

    def naming(self, name: str) -> str:
        return f"{self.base}/NamingSystem/canvas/{self.instance}/{name}"

    @property
    def document_type(self) -> str:
        return f"{self.base}/CodeSystem/canvas/{self.instance}/document-type"


def format_moment(moment: datetime) -> str:
    """A FHIR dateTime in UTC keeping Canvas's microseconds (they order snapshots)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _status_concept(systems: Systems, status: CanvasStatus) -> JsonObject:
    return {
        "coding": [
            {
                "system": systems.code_system(STATUS_CODE_SYSTEM),
                "code": status.code,
                "display": status.label,
            }
        ],
        "text": status.label,
    }


def _active_reviews_newest_first(reviews: tuple[Review, ...]) -> list[Review]:
    active = [r for r in reviews if not r.junked]
    return sorted(active, key=lambda r: (r.modified, r.dbid or 0, r.id), reverse=True)


def _owner(
    systems: Systems, reviews: tuple[Review, ...]
) -> tuple[JsonObject | None, Review | None]:
    """Task.owner and the review it came from (the staff reviewer wins over a team)."""
    ordered = _active_reviews_newest_first(reviews)
    for review in ordered:
        if review.reviewer_id:
            owner: JsonObject = {
                "reference": f"Practitioner/{review.reviewer_id}",
                "type": "Practitioner",
                "identifier": {"system": systems.naming("staff"), "value": review.reviewer_id},
            }
            if review.reviewer_name:
                owner["display"] = review.reviewer_name
            return owner, review
    for review in ordered:
        if review.team_reviewer_id:
            owner = {
                "type": "CareTeam",
                "identifier": {"system": systems.naming("team"), "value": review.team_reviewer_id},
            }
            if review.team_reviewer_name:
                owner["display"] = review.team_reviewer_name
            return owner, review
    return None, None


def _requester(
    systems: Systems, task: IntegrationTask, for_patient: JsonObject | None
) -> JsonObject | None:
    sp = task.service_provider
    if sp is None or not (sp.id or sp.npi):
        # A portal upload comes from the patient.
        if task.channel == "from_patient_portal" and for_patient is not None:
            return dict(for_patient)
        return None
    organization = not sp.last_name
    requester: JsonObject = {"type": "Organization" if organization else "Practitioner"}
    if sp.npi:
        requester["identifier"] = {"system": NPI_SYSTEM, "value": sp.npi}
    else:
        requester["identifier"] = {"system": systems.naming("service-provider"), "value": sp.id}
    if organization:
        display = sp.practice_name or sp.first_name
    else:
        display = " ".join(p for p in (sp.first_name, sp.last_name) if p)
    if display:
        requester["display"] = display
    return requester


def _inputs(
    systems: Systems, task: IntegrationTask, reviews: tuple[Review, ...]
) -> list[JsonObject]:
    inputs: list[JsonObject] = []
    active = sorted(
        (r for r in reviews if not r.junked),
        key=lambda r: (r.created or r.modified, r.dbid or 0, r.id),
    )
    input_type = {
        "coding": [{"system": systems.code_system(INPUT_CODE_SYSTEM), "code": "document-type"}]
    }
    for review in active:
        if not review.document_key and not review.template_name:
            continue
        concept: JsonObject = {}
        if review.document_key:
            coding: JsonObject = {"system": systems.document_type, "code": review.document_key}
            if review.template_name:
                coding["display"] = review.template_name
            concept["coding"] = [coding]
        concept["text"] = review.template_name or review.document_key
        inputs.append({"type": input_type, "valueCodeableConcept": concept})
    if task.type:
        inputs.append(
            {
                "type": {
                    "coding": [
                        {"system": systems.code_system(INPUT_CODE_SYSTEM), "code": "canvas-type"}
                    ]
                },
                "valueString": task.type,
            }
        )
    return inputs


def to_task(snapshot: Snapshot, base: str) -> JsonObject:
    """The FHIR Task a non-deletion snapshot maps to (without meta)."""
    task = snapshot.task
    if task is None:
        raise ValueError("a deletion without integration_task maps through tombstone()")
    systems = Systems(base, snapshot.instance)
    status = STATUSES[task.status]
    owner, owner_review = _owner(systems, snapshot.reviews)

    resource: JsonObject = {"resourceType": "Task", "id": task.id}
    if owner_review is not None and owner_review.team_reviewer_id:
        group: JsonObject = {"reference": f"Group/{owner_review.team_reviewer_id}"}
        if owner_review.team_reviewer_name:
            group["display"] = owner_review.team_reviewer_name
        resource["extension"] = [{"url": TASK_GROUP_EXTENSION, "valueReference": group}]
    resource["identifier"] = _identifiers(systems, task.id, task.dbid)
    resource["status"] = status.task_status
    if snapshot.deleted:
        resource["status"] = "entered-in-error"
        resource["statusReason"] = {"text": DELETED_REASON}
    elif status.reason:
        resource["statusReason"] = {"text": status.reason}
    resource["businessStatus"] = _status_concept(systems, status)
    resource["intent"] = "order"
    channel_label = CHANNELS[task.channel]
    resource["code"] = {
        "coding": [
            {
                "system": systems.code_system(CHANNEL_CODE_SYSTEM),
                "code": task.channel,
                "display": channel_label,
            }
        ],
        "text": f"Review inbound document ({channel_label})",
    }
    if task.title:
        resource["description"] = task.title
    for_patient: JsonObject | None = None
    if task.patient_id:
        for_patient = {"reference": f"Patient/{task.patient_id}", "type": "Patient"}
        resource["for"] = for_patient
    resource["authoredOn"] = format_moment(task.created)
    modified = snapshot.modified
    assert modified is not None
    resource["lastModified"] = format_moment(max(modified, task.created))
    requester = _requester(systems, task, for_patient)
    if requester is not None:
        resource["requester"] = requester
    if owner is not None:
        resource["owner"] = owner
    inputs = _inputs(systems, task, snapshot.reviews)
    if inputs:
        resource["input"] = inputs
    return resource


def _identifiers(systems: Systems, task_id: str, dbid: int | None) -> list[JsonObject]:
    identifiers: list[JsonObject] = [
        {"use": "official", "system": URI_SYSTEM, "value": f"urn:uuid:{task_id}"}
    ]
    if dbid is not None:
        identifiers.append(
            {
                "use": "secondary",
                "system": systems.naming("integration-task-dbid"),
                "value": str(dbid),
            }
        )
    return identifiers


def deleted_version(stored: JsonObject | None, snapshot: Snapshot, base: str) -> JsonObject:
    """The Task after a Canvas deletion: the last known content, entered-in-error.

    With the task's content in the snapshot, that content is mapped; otherwise the stored Task
    is kept and only its status changes; with neither, a minimal tombstone Task is written so
    that a late snapshot of the deleted task cannot bring it back.
    """
    if snapshot.task is not None and (stored is None or not _older(snapshot, stored)):
        resource = to_task(snapshot, base)
    elif stored is not None:
        resource = {k: v for k, v in stored.items() if k != "meta"}
        resource["status"] = "entered-in-error"
        resource["statusReason"] = {"text": DELETED_REASON}
    else:
        systems = Systems(base, snapshot.instance)
        resource = {
            "resourceType": "Task",
            "id": snapshot.task_id,
            "identifier": _identifiers(systems, snapshot.task_id, None),
            "status": "entered-in-error",
            "statusReason": {"text": DELETED_REASON},
            "intent": "order",
        }
    if snapshot.deleted_at is not None:
        resource["lastModified"] = _latest(
            resource.get("lastModified"), format_moment(snapshot.deleted_at)
        )
    return _ordered(resource)


def _latest(a: object, b: str) -> str:
    """The later of two dateTimes; b when a is not one."""
    first = _parse_instant(a) if isinstance(a, str) else None
    second = _parse_instant(b)
    if first is not None and second is not None and first > second:
        assert isinstance(a, str)
        return a
    return b


# Element order of FHIR R4 Task, so that rewritten Tasks read like mapped ones.
_TASK_ORDER = (
    "resourceType",
    "id",
    "meta",
    "extension",
    "identifier",
    "status",
    "statusReason",
    "businessStatus",
    "intent",
    "code",
    "description",
    "for",
    "authoredOn",
    "lastModified",
    "requester",
    "owner",
    "input",
)


def _ordered(resource: JsonObject) -> JsonObject:
    known = {k: resource[k] for k in _TASK_ORDER if k in resource}
    return {**known, **{k: v for k, v in resource.items() if k not in known}}


# -- deciding what a snapshot changes -------------------------------------------------------------


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


def _parse_instant(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _older(snapshot: Snapshot, stored: JsonObject) -> bool:
    """True when the snapshot shows an older state than the stored Task's lastModified."""
    stored_modified = stored.get("lastModified")
    before = _parse_instant(stored_modified) if isinstance(stored_modified, str) else None
    now = snapshot.modified
    return before is not None and now is not None and now < before


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
        if stored is not None and _older(snapshot, stored):
            return Decision(Outcome.STALE, None)
        mapped = to_task(snapshot, base)
    if stored is None:
        return Decision(Outcome.CREATED, mapped)
    if same_content(mapped, stored):
        return Decision(Outcome.UNCHANGED, None)
    return Decision(Outcome.UPDATED, mapped)


# -- Herald's CodeSystems -------------------------------------------------------------------------


def document_type_code_system(base: str, instance: str) -> JsonObject:
    """The CodeSystem of one Canvas instance's document types (Task.input values).

    Its codes are that instance's document keys, which Herald learns one snapshot at a time, so
    it lists none (`content: not-present`); it exists so that the system URL resolves.
    """
    url = Systems(base, instance).document_type
    return {
        "resourceType": "CodeSystem",
        "id": f"canvas-{instance}-document-type"[:64],
        "url": url,
        "version": "1",
        "name": "CanvasDocumentType",
        "title": f"Canvas document types of instance {instance}",
        "status": "active",
        "experimental": False,
        "publisher": "Herald",
        "description": (
            f"The document keys of Canvas instance {instance}, as Task.input carries them "
            "(valueCodeableConcept.coding.code, the template name as display)."
        ),
        "caseSensitive": True,
        "content": "not-present",
    }


def code_systems(base: str) -> list[JsonObject]:
    """The CodeSystems Herald defines for Canvas data, with canonical URLs under `base`."""

    def code_system(
        cs_id: str, title: str, description: str, concepts: list[JsonObject]
    ) -> JsonObject:
        return {
            "resourceType": "CodeSystem",
            "id": cs_id,
            "url": f"{base}/CodeSystem/{cs_id}",
            "version": "1",
            "name": "".join(part.capitalize() for part in cs_id.split("-")),
            "title": title,
            "status": "active",
            "experimental": False,
            "publisher": "Herald",
            "description": description,
            "caseSensitive": True,
            "content": "complete",
            "count": len(concepts),
            "concept": concepts,
        }

    return [
        code_system(
            STATUS_CODE_SYSTEM,
            "Canvas IntegrationTask status",
            "The status of a Canvas IntegrationTask (IntegrationTaskStatus), carried in "
            "Task.businessStatus of the Tasks Herald maps from Canvas.",
            [
                {"code": s.code, "display": s.label, "definition": s.definition}
                for s in STATUSES.values()
            ],
        ),
        code_system(
            CHANNEL_CODE_SYSTEM,
            "Canvas IntegrationTask channel",
            "How a document reached Canvas (IntegrationTaskChannel), carried in Task.code.",
            [
                {"code": code, "display": label, "definition": f"The document arrived by {label}."}
                for code, label in CHANNELS.items()
            ],
        ),
        code_system(
            INPUT_CODE_SYSTEM,
            "Canvas IntegrationTask input types",
            "The kinds of Task.input Herald fills from a Canvas IntegrationTask.",
            [
                {"code": code, "display": display, "definition": definition}
                for code, (display, definition) in INPUT_TYPES.items()
            ],
        ),
    ]
