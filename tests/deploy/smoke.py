"""Black-box checks of a running Herald, for the deploy checks (not collected by pytest).

    python -m tests.deploy.smoke embedded BASE_URL   # metadata in JSON and XML, one notification
    python -m tests.deploy.smoke scenario BASE_URL   # the end-to-end backbone scenario

Herald may run in a container: --bind and --advertise set where the receiver listens and the
host name Herald is given for it (e.g. 0.0.0.0 and host.containers.internal).
"""

from __future__ import annotations

import argparse
import time
import uuid

import httpx
from lxml import etree

from tests.e2e.scenario import FHIR_JSON, put, run_backbone, subscription, task, wait_status
from tests.support.receiver import Receiver

FHIR_XML = "application/fhir+xml"
FHIR_NS = "http://hl7.org/fhir"


def wait_ready(base_url: str, timeout: float) -> None:
    """Poll /readyz (next to /fhir) until it answers 200."""
    ready_url = base_url.rsplit("/fhir", 1)[0] + "/readyz"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{ready_url} did not answer 200 within {timeout} s")


def check_metadata(client: httpx.Client) -> None:
    """The CapabilityStatement in JSON and in XML."""
    as_json = client.get("/metadata", headers={"Accept": FHIR_JSON})
    assert as_json.status_code == 200, as_json.text
    assert as_json.json()["resourceType"] == "CapabilityStatement"
    as_xml = client.get("/metadata", headers={"Accept": FHIR_XML})
    assert as_xml.status_code == 200, as_xml.text
    assert as_xml.headers["Content-Type"].startswith(FHIR_XML)
    root = etree.fromstring(as_xml.content)
    assert root.tag == f"{{{FHIR_NS}}}CapabilityStatement", root.tag


def check_notification(client: httpx.Client, receiver: Receiver) -> None:
    """A subscription becomes active and a matching Task write is notified."""
    owner = f"Organization/{uuid.uuid4().hex[:8]}"
    created = client.post(
        "/Subscription",
        json=subscription(receiver.url, owner, uuid.uuid4().hex),
        headers={"Content-Type": FHIR_JSON},
    )
    assert created.status_code == 201, created.text
    wait_status(client, created.json()["id"], "active", timeout=60)
    task_id = f"smoke-{uuid.uuid4().hex[:8]}"
    assert put(client, task(task_id, owner)).status_code == 201
    receiver.wait_for(lambda r: len(r.of_kind("event-notification")) == 1, timeout=60)
    note = receiver.of_kind("event-notification")[0]
    focus = note.parameters["notification-event"][0]["focus"]["valueReference"]["reference"]
    assert focus.endswith(f"Task/{task_id}"), focus


def main() -> None:
    """Run one check against BASE_URL."""
    parser = argparse.ArgumentParser(prog="python -m tests.deploy.smoke")
    parser.add_argument("check", choices=["embedded", "scenario"])
    parser.add_argument("base_url")
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--advertise")
    parser.add_argument("--ready-timeout", type=float, default=120)
    args = parser.parse_args()
    wait_ready(args.base_url, args.ready_timeout)
    with Receiver(args.bind, args.advertise) as receiver:
        if args.check == "scenario":
            run_backbone(args.base_url, receiver)
        else:
            with httpx.Client(base_url=args.base_url, timeout=10) as client:
                check_metadata(client)
                check_notification(client, receiver)
    print(f"{args.check} check passed against {args.base_url}")


if __name__ == "__main__":
    main()
