"""Canvas IntegrationTask snapshots to FHIR R4 Tasks: validation, mapping, decisions."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fhir.resources.R4B.codesystem import CodeSystem
from fhir.resources.R4B.task import Task

from herald.core.canvas import (
    Outcome,
    code_systems,
    decide,
    deleted_version,
    parse_snapshot,
    to_task,
)
from herald.core.errors import InvalidResource
from herald.core.resources import validate_task
from herald.runtime.packaged import fhir_xml, load_topics

BASE = "https://broker.example.org/fhir"
SCHEMA = json.loads(
    (
        Path(__file__).resolve().parents[2]
        / "schemas/canvas/canvas-integration-task-snapshot.v1.json"
    ).read_text()
)
TASK_ID = "d2194110-5c9a-4842-8733-ef09ea5ead11"
STAFF = "4150cd20de8a470aa570a852859ac87e"
TEAM = "0c59ba86-dd40-4fde-8179-6e0b91dc617b"


def example() -> dict[str, Any]:
    """The snapshot of the research notes, section 4.3."""
    return {
        "schema": "canvas-integration-task-snapshot/1",
        "instance": "acme-clinic",
        "event": {
            "name": "DOCUMENT_REVIEWER_ASSIGNED",
            "target": TASK_ID,
            "actor": "137",
            "received_at": "2026-08-20T15:04:12.100000+00:00",
        },
        "integration_task": {
            "id": TASK_ID,
            "dbid": 48213,
            "status": "REA",
            "channel": "fax",
            "type": "",
            "title": "Lab results - Quest",
            "patient_id": "1eed3ea2a8d546a1b681a2a45de1d790",
            "service_provider": {
                "id": "6b1f0a52-3c1e-4d7e-9f64-0f1f6f0f2a11",
                "first_name": "Quest Diagnostics",
                "last_name": "",
                "practice_name": "Quest Diagnostics",
                "npi": "1234567893",
            },
            "created": "2026-08-20T14:58:03.112000+00:00",
            "modified": "2026-08-20T15:04:11.907000+00:00",
        },
        "reviews": [
            {
                "id": "c1a5a35a-4ee2-4a0e-85c0-21739dc8c4a8",
                "dbid": 90211,
                "junked": False,
                "template_name": "Lab Report",
                "document_key": "lab_report_key_abc",
                "reviewer_id": STAFF,
                "reviewer_name": "Youta Priti",
                "team_reviewer_id": TEAM,
                "team_reviewer_name": "Front Desk",
                "created": "2026-08-20T15:01:40.000000+00:00",
                "modified": "2026-08-20T15:04:11.907000+00:00",
            }
        ],
    }


def mapped(snapshot: dict[str, Any]) -> dict[str, Any]:
    jsonschema.validate(snapshot, SCHEMA)
    return to_task(parse_snapshot(snapshot), BASE)


def test_example_maps_to_the_documented_task() -> None:
    task = mapped(example())
    assert task == {
        "resourceType": "Task",
        "id": TASK_ID,
        "extension": [
            {
                "url": "http://schemas.canvasmedical.com/fhir/extensions/task-group",
                "valueReference": {"reference": f"Group/{TEAM}", "display": "Front Desk"},
            }
        ],
        "identifier": [
            {"use": "official", "system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{TASK_ID}"},
            {
                "use": "secondary",
                "system": f"{BASE}/NamingSystem/canvas/acme-clinic/integration-task-dbid",
                "value": "48213",
            },
        ],
        "status": "in-progress",
        "businessStatus": {
            "coding": [
                {
                    "system": f"{BASE}/CodeSystem/canvas-integration-task-status",
                    "code": "REA",
                    "display": "Read",
                }
            ],
            "text": "Read",
        },
        "intent": "order",
        "code": {
            "coding": [
                {
                    "system": f"{BASE}/CodeSystem/canvas-integration-task-channel",
                    "code": "fax",
                    "display": "Fax",
                }
            ],
            "text": "Review inbound document (Fax)",
        },
        "description": "Lab results - Quest",
        "for": {"reference": "Patient/1eed3ea2a8d546a1b681a2a45de1d790", "type": "Patient"},
        "authoredOn": "2026-08-20T14:58:03.112000+00:00",
        "lastModified": "2026-08-20T15:04:11.907000+00:00",
        "requester": {
            "type": "Organization",
            "identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"},
            "display": "Quest Diagnostics",
        },
        "owner": {
            "reference": f"Practitioner/{STAFF}",
            "type": "Practitioner",
            "identifier": {
                "system": f"{BASE}/NamingSystem/canvas/acme-clinic/staff",
                "value": STAFF,
            },
            "display": "Youta Priti",
        },
        "input": [
            {
                "type": {
                    "coding": [
                        {
                            "system": f"{BASE}/CodeSystem/canvas-integration-task-input",
                            "code": "document-type",
                        }
                    ]
                },
                "valueCodeableConcept": {
                    "coding": [
                        {
                            "system": f"{BASE}/CodeSystem/canvas/acme-clinic/document-type",
                            "code": "lab_report_key_abc",
                            "display": "Lab Report",
                        }
                    ],
                    "text": "Lab Report",
                },
            }
        ],
    }
    # A valid R4 Task, accepted by Herald's own Task validation, and matching the HRex topic.
    Task.model_validate(task)
    assert validate_task(task, definitions=fhir_xml()) == task


@pytest.mark.parametrize(
    ("code", "status", "reason"),
    [
        ("UNR", "requested", None),
        ("UER", "failed", "Integration processing error"),
        ("REA", "in-progress", None),
        ("ERR", "failed", "Integration processing error"),
        ("PRO", "completed", None),
        ("REV", "completed", None),
        ("JUN", "cancelled", "Junked in Canvas"),
    ],
)
def test_every_canvas_status(code: str, status: str, reason: str | None) -> None:
    snapshot = example()
    snapshot["integration_task"]["status"] = code
    task = mapped(snapshot)
    assert task["status"] == status
    assert task.get("statusReason") == (None if reason is None else {"text": reason})
    assert task["businessStatus"]["coding"][0]["code"] == code
    assert task["intent"] == "order"
    Task.model_validate(task)


def test_team_only_owner_is_a_logical_careteam_with_the_group_extension() -> None:
    snapshot = example()
    snapshot["reviews"][0]["reviewer_id"] = None
    snapshot["reviews"][0]["reviewer_name"] = None
    task = mapped(snapshot)
    assert task["owner"] == {
        "type": "CareTeam",
        "identifier": {"system": f"{BASE}/NamingSystem/canvas/acme-clinic/team", "value": TEAM},
        "display": "Front Desk",
    }
    assert task["extension"][0]["valueReference"]["reference"] == f"Group/{TEAM}"


def test_staff_reviewer_wins_over_a_newer_team_only_review_and_junked_reviews_are_ignored() -> None:
    snapshot = example()
    first = snapshot["reviews"][0]
    first["team_reviewer_id"] = None
    team_only = {
        **first,
        "id": "11111111-2222-3333-4444-555555555555",
        "dbid": 90212,
        "reviewer_id": None,
        "team_reviewer_id": TEAM,
        "team_reviewer_name": "Front Desk",
        "template_name": "Referral",
        "document_key": "",
        "modified": "2026-08-20T15:05:00+00:00",
    }
    junked = {
        **first,
        "id": "99999999-2222-3333-4444-555555555555",
        "dbid": 90213,
        "junked": True,
        "reviewer_id": "ffffffffffffffffffffffffffffffff",
        "template_name": "Junked type",
        "modified": "2026-08-20T15:06:00+00:00",
    }
    snapshot["reviews"] = [junked, team_only, first]
    task = mapped(snapshot)
    assert task["owner"]["reference"] == f"Practitioner/{STAFF}"
    assert "extension" not in task  # the chosen review has no team
    inputs = [i["valueCodeableConcept"] for i in task["input"]]
    assert inputs == [
        {
            "coding": [
                {
                    "system": f"{BASE}/CodeSystem/canvas/acme-clinic/document-type",
                    "code": "lab_report_key_abc",
                    "display": "Lab Report",
                }
            ],
            "text": "Lab Report",
        },
        {"text": "Referral"},
    ]
    # The junked review still counts for ordering: its change is the newest.
    assert task["lastModified"] == "2026-08-20T15:06:00.000000+00:00"


def test_all_reviews_junked_leaves_no_owner_and_no_input() -> None:
    snapshot = example()
    snapshot["reviews"][0]["junked"] = True
    task = mapped(snapshot)
    assert "owner" not in task and "input" not in task and "extension" not in task
    assert task["status"] == "in-progress"


def test_requester_variants() -> None:
    snapshot = example()
    provider = snapshot["integration_task"]["service_provider"]
    provider.update(first_name="Ada", last_name="Lovelace", npi="")
    task = mapped(snapshot)
    assert task["requester"] == {
        "type": "Practitioner",
        "identifier": {
            "system": f"{BASE}/NamingSystem/canvas/acme-clinic/service-provider",
            "value": provider["id"],
        },
        "display": "Ada Lovelace",
    }
    portal = example()
    portal["integration_task"].update(channel="from_patient_portal", service_provider=None)
    task = mapped(portal)
    assert task["requester"] == {
        "reference": "Patient/1eed3ea2a8d546a1b681a2a45de1d790",
        "type": "Patient",
    }
    unlinked = example()
    unlinked["integration_task"].update(patient_id=None, service_provider=None, title="")
    task = mapped(unlinked)
    assert "for" not in task and "requester" not in task and "description" not in task


def test_task_type_becomes_an_input() -> None:
    snapshot = example()
    snapshot["integration_task"]["type"] = "lab"
    task = mapped(snapshot)
    assert task["input"][-1] == {
        "type": {
            "coding": [
                {
                    "system": f"{BASE}/CodeSystem/canvas-integration-task-input",
                    "code": "canvas-type",
                }
            ]
        },
        "valueString": "lab",
    }


def test_every_canvas_change_fires_the_hrex_topic() -> None:
    topic = load_topics()["http://hl7.org/fhir/us/davinci-hrex/SubscriptionTopic/Task"]
    previous = None
    for code in ("UNR", "REA", "ERR", "PRO", "REV", "JUN"):
        snapshot = example()
        snapshot["integration_task"]["status"] = code
        task = mapped(snapshot)
        interaction = "create" if previous is None else "update"
        assert topic.fires("Task", interaction, previous, task), code
        previous = task
    deletion = parse_snapshot({**example(), "deleted": True})
    assert topic.fires("Task", "update", previous, to_task(deletion, BASE))


# -- decisions ------------------------------------------------------------------------------------


def stored(task: dict[str, Any], version: int = 1) -> dict[str, Any]:
    return {**task, "meta": {"versionId": str(version), "lastUpdated": "2026-08-20T15:04:12.481Z"}}


def test_new_snapshot_creates_and_a_repeat_changes_nothing() -> None:
    snapshot = parse_snapshot(example())
    first = decide(snapshot, None, BASE)
    assert first.outcome is Outcome.CREATED and first.task is not None
    again = decide(snapshot, stored(first.task), BASE)
    assert again.outcome is Outcome.UNCHANGED and again.task is None


def test_newer_snapshot_updates_and_older_one_is_stale() -> None:
    current = to_task(parse_snapshot(example()), BASE)
    newer = example()
    newer["integration_task"].update(status="PRO", modified="2026-08-20T16:00:00Z")
    decision = decide(parse_snapshot(newer), stored(current), BASE)
    assert decision.outcome is Outcome.UPDATED and decision.task is not None
    assert decision.task["status"] == "completed"

    older = example()
    older["integration_task"].update(status="UNR", modified="2026-08-20T15:00:00+00:00")
    older["reviews"] = []
    assert decide(parse_snapshot(older), stored(decision.task), BASE).outcome is Outcome.STALE


def test_same_modified_but_new_content_updates() -> None:
    current = to_task(parse_snapshot(example()), BASE)
    changed = example()
    changed["integration_task"]["patient_id"] = "00000000000000000000000000000001"
    assert decide(parse_snapshot(changed), stored(current), BASE).outcome is Outcome.UPDATED


def test_deletion_is_entered_in_error_keeps_content_and_is_final() -> None:
    current = to_task(parse_snapshot(example()), BASE)
    deletion = {
        "schema": "canvas-integration-task-snapshot/1",
        "instance": "acme-clinic",
        "event": {"name": "DOCUMENT_DELETED", "target": TASK_ID},
        "integration_task": None,
        "deleted": True,
        "deleted_at": "2026-08-21T09:00:00+00:00",
    }
    jsonschema.validate(deletion, SCHEMA)
    decision = decide(parse_snapshot(deletion), stored(current), BASE)
    assert decision.outcome is Outcome.UPDATED and decision.task is not None
    deleted = decision.task
    assert deleted["status"] == "entered-in-error"
    assert deleted["statusReason"] == {"text": "Deleted in Canvas"}
    assert deleted["businessStatus"] == current["businessStatus"]
    assert deleted["owner"] == current["owner"]
    assert deleted["lastModified"] == "2026-08-21T09:00:00.000000+00:00"
    Task.model_validate(deleted)
    # Repeated deletion: nothing; any later non-deleted snapshot: stale.
    assert decide(parse_snapshot(deletion), stored(deleted, 2), BASE).outcome is Outcome.UNCHANGED
    later = example()
    later["integration_task"]["modified"] = "2026-08-22T00:00:00+00:00"
    assert decide(parse_snapshot(later), stored(deleted, 2), BASE).outcome is Outcome.STALE


def test_deletion_of_an_unknown_task_writes_a_tombstone() -> None:
    deletion = parse_snapshot(
        {
            "schema": "canvas-integration-task-snapshot/1",
            "instance": "acme-clinic",
            "event": {"name": "DOCUMENT_DELETED", "target": TASK_ID.upper()},
            "deleted": True,
        }
    )
    tombstone = deleted_version(None, deletion, BASE)
    assert tombstone["id"] == TASK_ID
    assert tombstone["status"] == "entered-in-error" and tombstone["intent"] == "order"
    Task.model_validate(tombstone)


def test_deletion_with_content_maps_the_content() -> None:
    snapshot = example()
    snapshot["deleted"] = True
    decision = decide(parse_snapshot(snapshot), None, BASE)
    assert decision.outcome is Outcome.CREATED and decision.task is not None
    assert decision.task["status"] == "entered-in-error"
    assert decision.task["businessStatus"]["coding"][0]["code"] == "REA"


# -- malformed snapshots --------------------------------------------------------------------------


def _broken(path: str, value: Any) -> dict[str, Any]:
    snapshot = copy.deepcopy(example())
    target: Any = snapshot
    *parents, last = path.split(".")
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return snapshot


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "expression"),
    [
        ("schema", "canvas-integration-task-snapshot/2", "schema"),
        ("instance", "", "instance"),
        ("instance", "acme/clinic", "instance"),
        ("event", [], "event"),
        ("event.name", 5, "event.name"),
        ("event.target", "not-a-uuid", "event.target"),
        ("event.target", "11111111-2222-3333-4444-555555555555", "event.target"),
        ("integration_task", _DELETE, "integration_task"),
        ("integration_task", [], "integration_task"),
        ("integration_task.id", "x", "integration_task.id"),
        ("integration_task.status", "NEW", "integration_task.status"),
        ("integration_task.status", _DELETE, "integration_task.status"),
        ("integration_task.channel", "email", "integration_task.channel"),
        ("integration_task.modified", "yesterday", "integration_task.modified"),
        ("integration_task.modified", "2026-08-20T15:04:11", "integration_task.modified"),
        ("integration_task.created", _DELETE, "integration_task.created"),
        ("integration_task.dbid", "48213", "integration_task.dbid"),
        ("integration_task.patient_id", "Patient/1", "integration_task.patient_id"),
        ("integration_task.service_provider", "Quest", "integration_task.service_provider"),
        ("reviews", {}, "reviews"),
        ("reviews.0.junked", "no", "reviews[0].junked"),
        ("reviews.0.modified", _DELETE, "reviews[0].modified"),
        ("reviews.0.reviewer_id", 42, "reviews[0].reviewer_id"),
    ],
)
def test_malformed_snapshots_are_refused_naming_the_problem(
    path: str, value: Any, expression: str
) -> None:
    snapshot = _broken(path, value)
    with pytest.raises(InvalidResource) as caught:
        parse_snapshot(snapshot)
    assert caught.value.expression == expression, caught.value.diagnostics
    # The published JSON Schema refuses the same snapshots (the semantic target check aside).
    if path != "event.target" or value == "not-a-uuid":
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(snapshot, SCHEMA)


@pytest.mark.parametrize("body", [None, [], "snapshot", 1])
def test_a_snapshot_must_be_an_object(body: object) -> None:
    with pytest.raises(InvalidResource):
        parse_snapshot(body)


def test_the_event_is_optional() -> None:
    snapshot = example()
    del snapshot["event"]
    jsonschema.validate(snapshot, SCHEMA)
    assert parse_snapshot(snapshot).event_name == "UNKNOWN"
    assert to_task(parse_snapshot(snapshot), BASE) == mapped(example())


def test_deletion_must_name_its_task() -> None:
    with pytest.raises(InvalidResource) as caught:
        parse_snapshot(
            {
                "schema": "canvas-integration-task-snapshot/1",
                "instance": "acme-clinic",
                "event": {"name": "DOCUMENT_DELETED"},
                "deleted": True,
            }
        )
    assert caught.value.expression == "event.target"


def test_code_systems_are_valid_and_cover_every_code() -> None:
    systems = {cs["id"]: cs for cs in code_systems(BASE)}
    for cs in systems.values():
        CodeSystem.model_validate(cs)
        assert cs["url"] == f"{BASE}/CodeSystem/{cs['id']}"
    codes = {c["code"] for c in systems["canvas-integration-task-status"]["concept"]}
    assert codes == {"UNR", "UER", "REA", "ERR", "PRO", "REV", "JUN"}
    channels = {c["code"] for c in systems["canvas-integration-task-channel"]["concept"]}
    assert channels == {"fax", "document_upload", "from_integration_engine", "from_patient_portal"}


def test_code_system_files_match_the_served_code_systems() -> None:
    folder = Path(__file__).resolve().parents[2] / "schemas/canvas/codesystems"
    files = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}
    served = {cs["id"]: {k: v for k, v in cs.items() if k != "url"} for cs in code_systems(BASE)}
    assert files == served
