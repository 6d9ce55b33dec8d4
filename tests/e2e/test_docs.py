"""The docs work as written: README "Try it", docs/subscribing.md and docs/canvas.md, run against
`herald run` and `herald receive` as real processes, their answers compared with the docs."""

from __future__ import annotations

import difflib
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.e2e.conftest import Running, wait
from tests.support.herald import herald_env
from tests.support.services import free_port

ROOT = Path(__file__).resolve().parents[2]


def _section(text: str, heading: str) -> str:
    start = text.index(f"## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def test_readme_try_it_works_as_written(running: Running) -> None:
    section = _section((ROOT / "README.md").read_text(), "Try it")
    start, subscribe, change, inspect = _blocks(section, "sh")
    assert start.splitlines()[0].startswith("make run")  # `running` started these two
    assert ".venv/bin/herald receive" in start.splitlines()[1]
    expected = re.findall(r"prints `([^`]+)`", section)
    assert [e.split()[0] for e in expected] == ["handshake", "event-notification"]

    created = json.loads(running.shell(subscribe))
    assert (created["resourceType"], created["status"]) == ("Subscription", "requested")
    sid = created["id"]
    handshake = expected[0].replace("<id>", sid)
    wait(lambda: handshake in running.received(), handshake)

    task = json.loads(running.shell(change))
    assert (task["id"], task["meta"]["versionId"]) == ("t1", "1")
    notified = expected[1].replace("<id>", sid)
    wait(lambda: notified in running.received(), notified)

    listing, shown = running.shell(inspect.replace("<id>", sid)).split("subscription(s)\n")
    assert re.search(rf"^{sid}\s+active\s+1\s+1\s", listing, re.M), listing
    assert f"Subscription/{sid}\n  status       active\n" in shown


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
REQUEST_ID = re.compile(r"X-Request-ID: [0-9a-f]{32}")


def _normal(text: str) -> list[str]:
    text = REQUEST_ID.sub("X-Request-ID: <id>", INSTANT.sub("<instant>", UUID.sub("<uuid>", text)))
    return text.splitlines()


def test_the_worked_example_in_docs_subscribing_is_what_herald_answers_now() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "subscribing_example.py")],
        env=herald_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    documented = _normal((ROOT / "docs" / "subscribing.md").read_text())
    diff = list(difflib.unified_diff(documented, _normal(done.stdout), "docs", "now", lineterm=""))
    assert not diff, "docs/subscribing.md is stale; regenerate it:\n" + "\n".join(diff[:80])


def test_the_snapshot_example_of_docs_canvas_is_answered_as_documented(running: Running) -> None:
    text = (ROOT / "docs" / "canvas.md").read_text()
    snapshot = json.loads(
        _blocks(_section(text, "The endpoint: `POST /canvas/integration-tasks`"), "json")[0]
    )
    base = f"http://127.0.0.1:{running.port}"
    with httpx.Client(base_url=base, timeout=10) as client:
        first = client.post("/canvas/integration-tasks", json=snapshot)
        assert (first.status_code, first.headers["X-Herald-Canvas-Outcome"]) == (201, "created")
        again = client.post("/fhir/canvas/integration-tasks", json=snapshot)
        assert (again.status_code, again.headers["X-Herald-Canvas-Outcome"]) == (200, "unchanged")
        task_id = snapshot["integration_task"]["id"]
        assert client.get(f"/fhir/Task/{task_id}").json()["status"] == "in-progress"  # REA

        unsigned = client.post(
            "/canvas/integration-tasks", content=b"{}", headers={"Content-Type": "text/plain"}
        )
        assert unsigned.status_code == 415  # the documented answer to a non-JSON body


def test_the_fastapi_subscriber_example_works_as_its_readme_says(
    running: Running, tmp_path: Path
) -> None:
    folder = ROOT / "examples" / "fastapi_subscriber"
    readme = (folder / "README.md").read_text()
    port = free_port()
    log = tmp_path / "example.log"
    with log.open("wb") as out:
        app = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port)],
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait(lambda: "Uvicorn running" in log.read_text(), "the example to start")
        subscribe = _blocks(_section((ROOT / "README.md").read_text(), "Try it"), "sh")[1]
        created = json.loads(
            running.shell(subscribe.replace("127.0.0.1:9000", f"127.0.0.1:{port}"))
        )
        fhir = f"http://127.0.0.1:{running.port}/fhir"
        expected = [
            e.replace("<id>", created["id"]).replace("127.0.0.1:8080", f"127.0.0.1:{running.port}")
            for e in re.findall(r"`((?:handshake|event) [^`]+)`", readme)
        ]
        assert len(expected) == 2 and fhir in expected[0]
        wait(lambda: expected[0] in log.read_text(), expected[0])
        task = {
            "resourceType": "Task",
            "id": "t1",
            "status": "requested",
            "intent": "order",
            "owner": {"reference": "Organization/123"},
        }
        # 201, or 200 when an earlier test of this module wrote t1 already
        assert httpx.put(f"{fhir}/Task/t1", json=task).status_code in (200, 201)
        wait(lambda: expected[1] in log.read_text(), expected[1])
    finally:
        app.terminate()
        app.wait(30)
