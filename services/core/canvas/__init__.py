"""Canvas IntegrationTask snapshots (`canvas-integration-task-snapshot/1`) mapped to FHIR R4 Tasks.

Pure: no I/O. One module per step: `vocabulary`, `snapshot` (reading), `mapping` (to a
Task), `decision` (what changes) and `code_systems` (Herald's CodeSystems). The ingest
endpoint validates a snapshot with `parse_snapshot`, maps it with `to_task`, and decides with
`decide` whether the stored Task changes. The mapping follows `docs/canvas.md` (the Canvas
IntegrationTask research notes, section 3).
"""

from __future__ import annotations

from herald.core.canvas.code_systems import code_systems, document_type_code_system
from herald.core.canvas.decision import Decision, Outcome, decide, is_canvas_deleted, same_content
from herald.core.canvas.mapping import Systems, deleted_version, format_moment, to_task
from herald.core.canvas.snapshot import (
    IntegrationTask,
    Review,
    ServiceProvider,
    Snapshot,
    parse_snapshot,
)
from herald.core.canvas.vocabulary import (
    CHANNEL_CODE_SYSTEM,
    CHANNELS,
    DELETED_REASON,
    INPUT_CODE_SYSTEM,
    INPUT_TYPES,
    NPI_SYSTEM,
    SNAPSHOT_SCHEMA,
    STATUS_CODE_SYSTEM,
    STATUSES,
    TASK_GROUP_EXTENSION,
    URI_SYSTEM,
    CanvasStatus,
)

__all__ = [
    "CHANNELS",
    "CHANNEL_CODE_SYSTEM",
    "DELETED_REASON",
    "INPUT_CODE_SYSTEM",
    "INPUT_TYPES",
    "NPI_SYSTEM",
    "SNAPSHOT_SCHEMA",
    "STATUSES",
    "STATUS_CODE_SYSTEM",
    "TASK_GROUP_EXTENSION",
    "URI_SYSTEM",
    "CanvasStatus",
    "Decision",
    "IntegrationTask",
    "Outcome",
    "Review",
    "ServiceProvider",
    "Snapshot",
    "Systems",
    "code_systems",
    "decide",
    "deleted_version",
    "document_type_code_system",
    "format_moment",
    "is_canvas_deleted",
    "parse_snapshot",
    "same_content",
    "to_task",
]
