"""FHIR XML over HTTP against `herald run`: requests, answers, and notifications in XML."""

from __future__ import annotations

import uuid

import httpx
import pytest
from lxml import etree

from herald.runtime.packaged import fhir_xml
from tests.e2e.conftest import StartHerald
from tests.e2e.scenario import subscription, task, wait_status
from tests.support.receiver import Receiver

to_xml, from_xml = fhir_xml().to_xml, fhir_xml().from_xml

pytestmark = pytest.mark.e2e
FHIR_XML = "application/fhir+xml"


@pytest.fixture
def client(start_herald: StartHerald) -> httpx.Client:
    """A client of a `herald run`."""
    return start_herald()


def test_subscription_and_notifications_in_xml(client: httpx.Client) -> None:
    owner = f"Organization/{uuid.uuid4().hex[:8]}"
    xml_headers = {"Content-Type": FHIR_XML, "Accept": FHIR_XML}
    with Receiver() as receiver:
        body = subscription(receiver.url, owner, "xml-token")
        body["channel"]["payload"] = FHIR_XML
        created = client.post("/Subscription", content=to_xml(body), headers=xml_headers)
        assert created.status_code == 201, created.text
        assert created.headers["Content-Type"].startswith(FHIR_XML)
        echoed = from_xml(created.content)
        assert echoed["status"] == "requested"
        assert echoed["channel"]["payload"] == FHIR_XML
        assert echoed["channel"]["header"] == ["Authorization: Bearer xml-token"]
        assert echoed["_criteria"] == body["_criteria"]
        wait_status(client, echoed["id"], "active")

        matching = task(f"x-{uuid.uuid4().hex[:8]}", owner)
        stored = client.put(
            f"/Task/{matching['id']}", content=to_xml(matching), headers=xml_headers
        )
        assert stored.status_code == 201, stored.text
        assert from_xml(stored.content)["meta"]["versionId"] == "1"

        receiver.wait_for(lambda r: len(r.of_kind("event-notification")) == 1)
        for note in receiver.received:
            assert note.headers["Content-Type"].startswith(FHIR_XML)
            assert etree.QName(etree.fromstring(note.raw)).namespace == "http://hl7.org/fhir"
        note = receiver.of_kind("event-notification")[0]
        assert note.event_numbers == [1]

        as_json = client.get(f"/Task/{matching['id']}").json()
        as_xml = client.get(f"/Task/{matching['id']}", params={"_format": "xml"})
        assert as_xml.headers["Content-Type"].startswith(FHIR_XML)
        assert from_xml(as_xml.content) == as_json


def test_metadata_and_errors_follow_the_negotiated_format(client: httpx.Client) -> None:
    metadata = client.get("/metadata", headers={"Accept": FHIR_XML})
    assert metadata.headers["Content-Type"].startswith(FHIR_XML)
    assert from_xml(metadata.content)["format"] == ["json", "xml"]

    bad = client.put(
        "/Task/x1",
        content=b"<Task xmlns='http://hl7.org/fhir'><status value='bogus'/></Task>",
        headers={"Content-Type": FHIR_XML, "Accept": FHIR_XML},
    )
    assert bad.status_code == 400
    outcome = from_xml(bad.content)
    assert outcome["resourceType"] == "OperationOutcome"
    assert client.get("/Task/x1").status_code == 404

    assert client.get("/metadata", params={"_format": "text/csv"}).status_code == 406
    doctype = b"<!DOCTYPE t [<!ENTITY e 'x'>]><Task xmlns='http://hl7.org/fhir'/>"
    refused = client.post("/Task", content=doctype, headers={"Content-Type": FHIR_XML})
    assert refused.status_code == 400
