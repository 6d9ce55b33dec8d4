"""Every kind of resource Herald emits, captured from `herald run` and checked by the HL7 FHIR
validator engine (HAPI FhirInstanceValidator over R4 core and the Subscriptions Backport IG 1.1.0
definitions): 0 errors; and every XML document parsed by HAPI's strict parser equals its JSON.

The validator is the Java program tests/validator/Validate.java on the class path Maven resolves
from tests/validator/pom.xml (`make validator`, part of `make test`). The IG definitions come from
the shared folder beside the checkout (`../shared/fhir/subscriptions-backport-1.1.0`, or
HERALD_BACKPORT_DEFINITIONS).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from herald.runtime.packaged import fhir_xml
from tests.e2e.conftest import StartHerald
from tests.e2e.scenario import BACKPORT, FHIR_JSON, put, subscription, task, wait_status
from tests.support.fhir import backport_subscription
from tests.support.matching import REPO
from tests.support.receiver import Receiver

pytestmark = pytest.mark.e2e

HARNESS = REPO / "tests" / "validator"
CLASSPATH = HARNESS / "target" / "classpath.txt"
DEFINITIONS = Path(
    os.environ.get(
        "HERALD_BACKPORT_DEFINITIONS",
        str(REPO.parent / "shared" / "fhir" / "subscriptions-backport-1.1.0"),
    )
)


def _classpath() -> str:
    if not CLASSPATH.exists():
        # `make validator` does this once; Maven keeps the jars in ~/.m2.
        subprocess.run(
            [
                "mvn",
                "-B",
                "-q",
                "-f",
                str(HARNESS / "pom.xml"),
                "dependency:build-classpath",
                f"-Dmdep.outputFile={CLASSPATH}",
            ],
            check=True,
            timeout=1800,
        )
    return CLASSPATH.read_text().strip()


class Captures:
    """Resources written as NAME.json, with Herald's XML rendering as NAME.xml."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.names: set[str] = set()

    def add(self, name: str, resource: dict[str, Any], *, raw_xml: bytes | None = None) -> None:
        assert name not in self.names, name
        self.names.add(name)
        (self.folder / f"{name}.json").write_bytes(orjson.dumps(resource))
        (self.folder / f"{name}.xml").write_bytes(fhir_xml().to_xml(resource))
        if raw_xml is not None:  # as it came over the wire (no JSON twin: validated alone)
            (self.folder / f"{name}.wire.xml").write_bytes(raw_xml)

    def get(self, client: httpx.Client, name: str, path: str, **params: Any) -> dict[str, Any]:
        response = client.get(path, params=params)
        body: dict[str, Any] = response.json()
        self.add(name, body)
        as_xml = client.get(path, params={**params, "_format": "xml"})
        (self.folder / f"{name}.wire.xml").write_bytes(as_xml.content)
        return body


def _capture(client: httpx.Client, captures: Captures) -> None:
    owner = f"Organization/{uuid.uuid4().hex[:8]}"
    with Receiver() as receiver:
        subs = {}
        for content in ("id-only", "full-resource", "empty"):
            body = backport_subscription(
                receiver.url,
                f"Task?owner={owner}",
                content=content,
                channel_extensions=[
                    {"url": BACKPORT + "backport-heartbeat-period", "valueUnsignedInt": 10},
                    {"url": BACKPORT + "backport-max-count", "valuePositiveInt": 2},
                ],
            )
            created = client.post("/Subscription", json=body, headers={"Content-Type": FHIR_JSON})
            assert created.status_code == 201, created.text
            subs[content] = created.json()["id"]
        xml_body = subscription(receiver.url, owner, "x")
        xml_body["channel"]["payload"] = "application/fhir+xml"
        xml_sub = client.post("/Subscription", json=xml_body).json()["id"]
        for sub_id in [*subs.values(), xml_sub]:
            wait_status(client, sub_id, "active")
        put(client, task("v1", owner))
        updated = task("v1", owner, status="in-progress")
        put(client, updated)
        posted = {k: v for k, v in task("posted", owner).items() if k != "id"}
        assert client.post("/Task", json=posted).status_code == 201
        receiver.wait_for(lambda r: r.events() >= 6, timeout=30)
        # One heartbeat per payload content (each subscription asked for them every 10 s).
        receiver.wait_for(lambda r: len(r.of_kind("heartbeat")) >= 3, timeout=40)
        # The create by PUT is notified as the PUT that happened (201), the POST as a POST.
        requests = {
            (e["request"]["method"], e["request"]["url"].split("/")[-1], e["response"]["status"])
            for note in receiver.of_kind("event-notification")
            for e in note.body["entry"][1:]
            if "request" in e and "v1" in e.get("fullUrl", "")
        }
        assert ("PUT", "v1", "201") in requests and ("PUT", "v1", "200") in requests, requests
        seen: dict[str, int] = {}
        for note in receiver.received:
            kind = note.kind
            xml = "xml" in note.headers.get("Content-Type", "")
            number = seen[kind] = seen.get(kind, 0) + 1
            name = f"notification-{kind}-{number}"
            captures.add(name, note.body, raw_xml=note.raw if xml else None)
        for content, sub_id in subs.items():
            captures.get(
                client, f"events-{content}", f"/Subscription/{sub_id}/$events", content=content
            )
            captures.get(client, f"status-{content}", f"/Subscription/{sub_id}/$status")
            captures.get(client, f"subscription-{content}", f"/Subscription/{sub_id}")
        captures.get(client, "status-type-level", "/Subscription/$status", status="active")
        captures.get(client, "history-subscription", f"/Subscription/{subs['id-only']}/_history")
    captures.get(client, "task", "/Task/v1")
    captures.get(client, "task-version-1", "/Task/v1/_history/1")
    captures.get(client, "searchset", "/Task", owner=owner, _include="Task:output", foo="x")
    captures.get(client, "searchset-empty", "/Task", owner="Organization/none")
    captures.get(client, "searchset-subscriptions", "/Subscription", status="active")
    captures.get(client, "history-instance", "/Task/v1/_history")
    captures.get(client, "history-type", "/Task/_history", _count=3)
    captures.get(client, "metadata", "/metadata")
    captures.get(client, "operation-outcome-400", "/Task", owner="Nope/")
    captures.get(client, "operation-outcome-404", "/Task/absent")
    captures.get(client, "operation-outcome-405", "/Subscription/x/_history/1")
    captures.get(
        client, "basic-searchset", "/Basic", code="http://hl7.org/fhir/fhir-types|SubscriptionTopic"
    )
    captures.get(client, "basic", "/Basic/hrex-task")
    systems = captures.get(client, "codesystem-searchset", "/CodeSystem")
    for entry in systems["entry"]:
        resource = entry["resource"]
        captures.add(f"{resource['id']}.codesystem", resource)
    captures.get(client, "codesystem-document-type", "/CodeSystem/canvas/acme-clinic/document-type")


def test_every_resource_herald_emits_validates(start_herald: StartHerald, tmp_path: Path) -> None:
    assert DEFINITIONS.is_dir(), f"the Backport IG definitions are missing: {DEFINITIONS}"
    client = start_herald()
    folder = tmp_path / "captures"
    folder.mkdir()
    _capture(client, Captures(folder))
    result = subprocess.run(
        [
            "java",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp",
            _classpath(),
            str(HARNESS / "Validate.java"),
            str(DEFINITIONS),
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = result.stdout + result.stderr[-4000:]
    assert result.returncode == 0, report
    assert " 0 failed" in result.stdout, report
