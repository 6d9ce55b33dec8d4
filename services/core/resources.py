"""Validation of the resources clients write (Task for now), before anything is stored."""

from __future__ import annotations

from herald.core.errors import InvalidResource
from herald.core.fhir import TASK_INTENT_CODES, TASK_STATUS_CODES, is_valid_id
from herald.core.fhirxml import FhirXml
from herald.core.structure import validate_structure
from herald.core.types import JsonObject

# Elements the server owns: a client's values are replaced.
SERVER_META = ("versionId", "lastUpdated")


def validate_task(
    resource: object, *, definitions: FhirXml, url_id: str | None = None
) -> JsonObject:
    """Check a Task a client sent (`definitions`: the R4 element definitions its structure is
    checked against); return it without the server-managed meta elements."""
    if not isinstance(resource, dict):
        raise InvalidResource("the body must be a JSON object holding a Task")
    resource_type = resource.get("resourceType")
    if resource_type != "Task":
        raise InvalidResource(f"expected resourceType Task, got {resource_type!r}")
    body_id = resource.get("id")
    if url_id is not None:
        if body_id is None:
            raise InvalidResource("the Task must carry its id for an update", expression="Task.id")
        if body_id != url_id:
            raise InvalidResource(
                f"the id in the body ({body_id!r}) differs from the id in the URL ({url_id!r})",
                expression="Task.id",
            )
    if body_id is not None and not is_valid_id(body_id):
        raise InvalidResource(f"invalid id {body_id!r}", expression="Task.id")
    status = resource.get("status")
    if not isinstance(status, str) or status not in TASK_STATUS_CODES:
        raise InvalidResource(
            f"Task.status must be one of the R4 task-status codes, got {status!r}",
            expression="Task.status",
        )
    intent = resource.get("intent")
    if not isinstance(intent, str) or intent not in TASK_INTENT_CODES:
        raise InvalidResource(
            f"Task.intent must be one of the R4 task-intent codes, got {intent!r}",
            expression="Task.intent",
        )
    for element in ("owner", "requester", "for", "focus"):
        value = resource.get(element)
        if value is not None and not isinstance(value, dict):
            raise InvalidResource(
                f"Task.{element} must be a Reference", expression=f"Task.{element}"
            )
    meta = resource.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise InvalidResource("meta must be an object", expression="Task.meta")
    validate_structure(resource, definitions)
    cleaned = dict(resource)
    if meta:
        cleaned["meta"] = {k: v for k, v in meta.items() if k not in SERVER_META}
    return cleaned


def with_version(
    resource: JsonObject, resource_id: str, version_id: int, last_updated: str
) -> JsonObject:
    """A copy of the resource with the server's id, versionId and lastUpdated."""
    stamped = dict(resource)
    stamped["id"] = resource_id
    meta = dict(stamped.get("meta") or {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = last_updated
    stamped["meta"] = meta
    # Keep resourceType and id first, as FHIR JSON examples do.
    return {"resourceType": stamped.pop("resourceType"), "id": stamped.pop("id"), **stamped}
