"""Discovery and every resource Herald answers with, checked by an independent FHIR model."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fhir.resources.R4B import get_fhir_model_class

from tests.e2e.conftest import StartHerald
from tests.e2e.scenario import FHIR_JSON, HREX_TOPIC, put, subscription, task, wait_status
from tests.support.receiver import Receiver

pytestmark = pytest.mark.e2e
TOPIC_TYPE = "http://hl7.org/fhir/fhir-types|SubscriptionTopic"


def valid(resource: dict[str, Any]) -> dict[str, Any]:
    """Validate with fhir.resources (R4B models, identical for these resources) and return it."""
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    for entry in resource.get("entry", []):
        if "resource" in entry:
            valid(entry["resource"])
    return resource


@pytest.fixture
def client(start_herald: StartHerald) -> httpx.Client:
    # With authentication on: the CapabilityStatement then has rest.security, validated too.
    return start_herald(auth="smart")


def test_capability_statement_announces_topics_profiles_and_operations(
    client: httpx.Client,
) -> None:
    statement = valid(client.get("/metadata").json())
    assert statement["instantiates"] == [
        "http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/backport-subscription-server-r4"
    ]
    assert statement["format"] == ["json", "xml"]
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    subscription_entry = resources["Subscription"]
    assert subscription_entry["supportedProfile"] == [
        "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"
    ]
    assert [e["valueCanonical"] for e in subscription_entry["extension"]] == [HREX_TOPIC]
    assert {o["name"] for o in subscription_entry["operation"]} == {"status", "events"}
    assert {"Task", "Basic"} <= resources.keys()


def test_topics_are_discoverable_as_basic(client: httpx.Client) -> None:
    found = valid(client.get("/Basic", params={"code": TOPIC_TYPE}).json())
    assert found["type"] == "searchset" and found["total"] == 1
    basic = found["entry"][0]["resource"]
    urls = [e["valueUri"] for e in basic["extension"] if e["url"].endswith(".url")]
    assert urls == [HREX_TOPIC]
    filters = [
        p["valueString"]
        for e in basic["extension"]
        if e["url"].endswith(".canFilterBy")
        for p in e["extension"]
        if p["url"] == "filterParameter"
    ]
    assert filters == ["code", "owner", "requester", "status", "_lastUpdated"]
    # As the IG's R4 example Basic/r4-encounter-complete: status is a modifier (as in R5),
    # the complex elements use the R4B extensions.
    r5 = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic."
    r4b = "http://hl7.org/fhir/4.3/StructureDefinition/extension-SubscriptionTopic."
    assert basic["modifierExtension"] == [{"url": r5 + "status", "valueCode": "active"}]
    assert {e["url"] for e in basic["extension"]} == {
        *(r5 + name for name in ("url", "version", "name", "title", "description")),
        r4b + "resourceTrigger",
        r4b + "canFilterBy",
    }
    assert valid(client.get(f"/Basic/{basic['id']}").json()) == basic
    assert client.get("/Basic", params={"code": "http://x|Other"}).json()["total"] == 0
    assert client.get("/Basic/nope").status_code == 404
    assert (
        client.get(
            "/Basic", params={"colour": "red"}, headers={"Prefer": "handling=strict"}
        ).status_code
        == 400
    )


def test_subscription_search_and_operations_emit_valid_resources(client: httpx.Client) -> None:
    with Receiver() as receiver:
        created = client.post(
            "/Subscription",
            json=subscription(receiver.url, "Organization/v", "t"),
            headers={"Content-Type": FHIR_JSON},
        )
        sub = valid(created.json())
        wait_status(client, sub["id"], "active")
        put(client, task("v1", "Organization/v"))
        receiver.wait_for(lambda r: len(r.of_kind("event-notification")) == 1)
        for note in receiver.received:
            valid(note.body)

        by_status = valid(client.get("/Subscription", params={"status": "active"}).json())
        assert [e["resource"]["id"] for e in by_status["entry"]] == [sub["id"]]
        assert client.get("/Subscription", params={"status": "off"}).json()["total"] == 0
        by_url = client.get("/Subscription", params={"url": receiver.url}).json()
        assert by_url["total"] == 1
        by_topic = client.get("/Subscription", params={"topic": HREX_TOPIC}).json()
        assert by_topic["total"] == 1

        valid(client.get(f"/Subscription/{sub['id']}/$status").json())
        valid(client.get("/Subscription/$status").json())
        events = valid(client.get(f"/Subscription/{sub['id']}/$events").json())
        assert len(events["entry"]) == 2
        valid(client.get("/Task/v1").json())
        valid(client.put("/Task/v1", json={"resourceType": "Task"}).json())  # an OperationOutcome
