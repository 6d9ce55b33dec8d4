"""The mapping of a snapshot to a FHIR R4 Task (docs/canvas.md, section 3)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from herald.core.canvas.snapshot import (
    IntegrationTask,
    Review,
    Snapshot,
    older_than_stored,
    parse_instant,
)
from herald.core.canvas.vocabulary import (
    CHANNEL_CODE_SYSTEM,
    CHANNELS,
    DELETED_REASON,
    INPUT_CODE_SYSTEM,
    NPI_SYSTEM,
    STATUS_CODE_SYSTEM,
    STATUSES,
    TASK_GROUP_EXTENSION,
    URI_SYSTEM,
    CanvasStatus,
)
from herald.core.types import JsonObject


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
    if snapshot.task is not None and (stored is None or not older_than_stored(snapshot, stored)):
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
    first = parse_instant(a) if isinstance(a, str) else None
    second = parse_instant(b)
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
