"""Herald's CodeSystems for the Canvas vocabulary (served at /fhir/CodeSystem)."""

from __future__ import annotations

from herald.core.canvas.mapping import Systems
from herald.core.canvas.vocabulary import (
    CHANNEL_CODE_SYSTEM,
    CHANNELS,
    INPUT_CODE_SYSTEM,
    INPUT_TYPES,
    STATUS_CODE_SYSTEM,
    STATUSES,
)
from herald.core.types import JsonObject


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
