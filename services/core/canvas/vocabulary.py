"""Canvas vocabulary: the code systems, statuses, channels and input kinds Herald maps."""

from __future__ import annotations

import re
from dataclasses import dataclass

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

INSTANCE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
UUID_PATTERN = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)
