"""Hostile input and hostile endpoints against `herald run`: one regression test per finding of
the attack on Herald (each row of the table in the hardening issue), over real HTTP."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.conftest import StartHerald
from tests.e2e.scenario import subscription, task, wait_status
from tests.support.fhir import backport_subscription
from tests.support.herald import HeraldProcess, herald_env
from tests.support.receiver import Receiver
from tests.support.services import free_port

pytestmark = pytest.mark.e2e
FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A client of one `herald run` (embedded, permissive endpoint policy) for the module; the
    rate limit is off so that the many requests here are not throttled, the request-head timeout
    and the per-origin quota are small so that they can be seen."""
    tmp_path = tmp_path_factory.mktemp("hostile")
    port = free_port()
    env = herald_env(
        database_url=f"sqlite:///{tmp_path / 'herald.db'}",
        port=str(port),
        rate_limit="0",
        header_timeout="1",
        max_subscriptions_per_origin="3",
    )
    process = HeraldProcess("run", env, tmp_path, f"http://127.0.0.1:{port}/readyz")
    process.wait_ready()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}/fhir", timeout=30) as client:
        yield client
    assert process.stop() == 0, process.log()
    assert "unexpected error" not in process.log(), process.log()


def _task(**extra: Any) -> dict[str, Any]:
    return {**task(f"h-{uuid.uuid4().hex[:8]}", "Organization/1"), **extra}


def _refused(response: httpx.Response, status: int = 400, expression: str | None = None) -> None:
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    if expression is not None:
        assert outcome["issue"][0]["expression"] == [expression], outcome


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"url": "http://example.org/x", "valueString": "leaf"}
    for _ in range(depth - 1):
        node = {"url": "http://example.org/x", "extension": [node]}
    return node


INVALID_TASKS: dict[str, tuple[dict[str, Any], str]] = {
    "extensions nested 125 deep": ({"extension": [_nested(125)]}, ""),
    "a control character": ({"description": "bad \u0001 byte"}, "Task.description"),
    "input that is not a list": ({"input": "notalist"}, "Task.input"),
    "a contained resource of unknown type": (
        {"contained": [{"resourceType": "NotAType"}]},
        "Task.contained[0].resourceType",
    ),
    "an unknown element": ({"foo": 1}, "Task.foo"),
    "an invalid dateTime": ({"authoredOn": "2026-13-01"}, "Task.authoredOn"),
    "a narrative with a script": (
        {
            "text": {
                "status": "generated",
                "div": '<div xmlns="http://www.w3.org/1999/xhtml"><script>x()</script></div>',
            }
        },
        "Task.text.div",
    ),
    "a narrative with an event attribute": (
        {
            "text": {
                "status": "generated",
                "div": '<div xmlns="http://www.w3.org/1999/xhtml">'
                '<img src="a.png" onerror="x()"/></div>',
            }
        },
        "Task.text.div",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID_TASKS))
def test_structurally_invalid_tasks_are_refused_and_not_stored(
    client: httpx.Client, case: str
) -> None:
    extra, expression = INVALID_TASKS[case]
    body = _task(**extra)
    response = client.put(f"/Task/{body['id']}", json=body)
    _refused(response, 400, expression or None)
    assert client.get(f"/Task/{body['id']}").status_code == 404
    # Search and both formats keep working for everyone.
    assert client.get("/Task", params={"_count": "5"}).status_code == 200
    assert client.get("/Task", params={"_count": "5", "_format": "xml"}).status_code == 200


XML_ATTACKS = {
    "narrative with a script": '<text><status value="generated"/><div '
    'xmlns="http://www.w3.org/1999/xhtml"><script>x()</script></div></text>',
    "narrative with onerror": '<text><status value="generated"/><div '
    'xmlns="http://www.w3.org/1999/xhtml"><img src="a.png" onerror="x()"/></div></text>',
    "unknown element": '<foo value="1"/>',
    "contained of unknown type": "<contained><NotAType/></contained>",
    "invalid dateTime": '<authoredOn value="2026-13-01"/>',
}


@pytest.mark.parametrize("case", sorted(XML_ATTACKS))
def test_structurally_invalid_xml_tasks_are_refused(client: httpx.Client, case: str) -> None:
    task_id = f"x-{uuid.uuid4().hex[:8]}"
    xml = (
        f'<Task xmlns="http://hl7.org/fhir"><id value="{task_id}"/>{XML_ATTACKS[case]}'
        '<status value="requested"/><intent value="order"/></Task>'
    )
    response = client.put(f"/Task/{task_id}", content=xml, headers={"Content-Type": FHIR_XML})
    _refused(response, 400)
    assert client.get(f"/Task/{task_id}").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("get", "/Task", {"params": {"_count": "\u00b2"}}),
        ("get", "/Task/x/_history/99999999999999999999", {}),
        ("get", "/Subscription/x/$events", {"params": {"eventsSinceNumber": "\u00b2"}}),
        (
            "post",
            "/Subscription/$status",
            {"json": {"resourceType": "Parameters", "parameter": 5}},
        ),
        ("put", "/Task/abc%0A", {"json": {**task("abc\n", "Organization/1")}}),
        (
            "post",
            "/Task",
            {
                "content": b'{"resourceType":"Subscription","status":"requested",'
                b'"intent":"order","resourceType":"Task"}',
                "headers": {"Content-Type": FHIR_JSON},
            },
        ),
        (
            "post",
            "/Task",
            {
                "content": b'{"resourceType":"Task","a":' * 200 + b"1" + b"}" * 200,
                "headers": {"Content-Type": FHIR_JSON},
            },
        ),
        (
            "post",
            "/Task",
            {
                "content": b'<Task xmlns="http://hl7.org/fhir">'
                + b"<extension>" * 240
                + b"</extension>" * 240
                + b"</Task>",
                "headers": {"Content-Type": FHIR_XML},
            },
        ),
    ],
    ids=[
        "_count superscript",
        "vread overflow",
        "eventsSinceNumber superscript",
        "$status parameter 5",
        "id with a trailing newline",
        "duplicate JSON keys",
        "JSON nested 200 deep",
        "XML nested 240 deep",
    ],
)
def test_malformed_requests_get_a_4xx_outcome(
    client: httpx.Client, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    response = client.request(method.upper(), path, **kwargs)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def test_a_body_without_content_type_is_refused(client: httpx.Client) -> None:
    body = orjson.dumps(_task())
    _refused(client.post("/Task", content=body, headers={"Content-Type": ""}), 415)
    subscription_body = orjson.dumps(subscription("https://example.org/hook", "O/1", "t"))
    _refused(
        client.post("/Subscription", content=subscription_body, headers={"Content-Type": ""}), 415
    )


def test_oversized_search_and_query_are_refused_at_once(client: httpx.Client) -> None:
    started = time.monotonic()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    _refused(client.post("/Task/_search", content=b"status=ready&" * 160_000, headers=form), 413)
    _refused(client.post("/Task/_search", content=b"status=ready&" * 1000, headers=form), 413)
    _refused(client.get("/Task", params={"status": "a" * 9000}), 414)
    _refused(client.get("/Task?" + "&".join(["status=ready"] * 150)), 400)
    assert time.monotonic() - started < 10
    assert client.get("/Task", params={"_count": "1"}).status_code == 200


def test_a_chunked_body_is_refused_without_being_read_whole(client: httpx.Client) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(50 * 16):  # 50 MB in 64 KB chunks, if anyone read them all
            sent += 65_536
            yield b" " * 65_536

    try:
        response = client.post("/Task", content=chunks(), headers={"Content-Type": FHIR_JSON})
    except httpx.HTTPError:
        pass  # the server may close the connection while the client still writes
    else:
        _refused(response, 413)
    assert sent < 10 * 1024 * 1024


HEADER_ATTACKS = [
    "X-A: a\r\nX-Injected: 1",
    "X-A: a\x00b",
    "X-A: caf\u00e9",
    "Host: internal.example",
    "Content-Length: 5",
    "Transfer-Encoding: chunked",
    "Content-Type: text/plain",
]


@pytest.mark.parametrize("header", HEADER_ATTACKS)
def test_smuggling_headers_are_refused_at_create(client: httpx.Client, header: str) -> None:
    body = backport_subscription("http://127.0.0.1:9/hook", headers=[header])
    response = client.post("/Subscription", json=body)
    _refused(response, 400, "Subscription.channel.header[0]")


def test_too_many_or_too_large_headers_and_filters_are_refused(client: httpx.Client) -> None:
    many = backport_subscription("http://127.0.0.1:9/", headers=[f"X-{n}: v" for n in range(2000)])
    _refused(client.post("/Subscription", json=many), 400)
    big = backport_subscription("http://127.0.0.1:9/", headers=["X-Big: " + "a" * 900_000])
    _refused(client.post("/Subscription", json=big), 400)
    filters = backport_subscription("http://127.0.0.1:9/", *(["Task?status=ready"] * 7000))
    _refused(client.post("/Subscription", json=filters), 400)


def test_with_the_strict_policy_only_allowlisted_hosts_get_a_connection(
    start_herald: StartHerald,
) -> None:
    client = start_herald(
        allow_private_endpoints="false", allow_http_endpoints="true", endpoint_allow="localhost"
    )
    with Receiver() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        # Literal forms are refused when the subscription is written.
        for host in ("sub.localhost.", "127.0.0.1.", "[::127.0.0.1]", "[64:ff9b::7f00:1]",
                     "[2002:7f00:1::]", "100.64.0.1", "192.0.0.8", "%31%32%37.0.0.1"):  # fmt: skip
            body = backport_subscription(f"http://{host}:{port}/hook")
            _refused(client.post("/Subscription", json=body), 400)
        # A name from the hosts file passes the URL check, and is refused where it is resolved.
        name = socket.gethostname()
        assert socket.gethostbyname(name).startswith("127.")
        created = client.post(
            "/Subscription", json=backport_subscription(f"http://{name}:{port}/hook")
        )
        assert created.status_code == 201, created.text
        refused_id = created.json()["id"]
        # The allowlisted name reaches the same receiver.
        allowed = client.post(
            "/Subscription", json=backport_subscription(f"http://localhost:{port}/hook")
        )
        assert allowed.status_code == 201, allowed.text
        wait_status(client, allowed.json()["id"], "active")
        wait_status(client, refused_id, "error")
        error = client.get(f"/Subscription/{refused_id}").json()["error"]
        assert "loopback" in str(error)
        assert [r.headers["Host"] for r in receiver.received] == [f"localhost:{port}"]


def test_slow_connections_are_closed_after_the_header_timeout(client: httpx.Client) -> None:
    host, port = client.base_url.host, client.base_url.port
    assert port is not None
    slow = []
    for _ in range(50):
        connection = socket.create_connection((host, port), timeout=5)
        connection.sendall(b"GET /fhir/metadata HTTP/1.1\r\nHost: h\r\n")
        slow.append(connection)
    started = time.monotonic()
    closed: set[int] = set()
    while len(closed) < len(slow) and time.monotonic() - started < 10:
        for number, connection in enumerate(slow):
            if number in closed:
                continue
            try:
                connection.sendall(b"X")  # one more header byte now and then (slowloris)
                connection.settimeout(0.01)
                if connection.recv(1) == b"":
                    closed.add(number)
            except TimeoutError:
                pass
            except OSError:
                closed.add(number)
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    for connection in slow:
        connection.close()
    assert len(closed) == len(slow) and elapsed < 5, (len(closed), elapsed)
    assert client.get("/metadata").status_code == 200


def test_an_endpoint_origin_holds_at_most_its_quota_of_live_subscriptions(
    client: httpx.Client,
) -> None:
    created = [
        client.post("/Subscription", json=backport_subscription(f"http://127.0.0.3:9/{n}"))
        for n in range(3)
    ]
    assert [r.status_code for r in created] == [201, 201, 201]
    one_more = backport_subscription("http://127.0.0.3:9/other-path")
    _refused(client.post("/Subscription", json=one_more), 403, "Subscription.channel.endpoint")
    # Another origin is not affected; turning one off frees its place.
    assert (
        client.post("/Subscription", json=backport_subscription("http://127.0.0.4:9/")).status_code
        == 201
    )
    first = created[0].json()
    assert client.put(f"/Subscription/{first['id']}", json={**first, "status": "off"}).is_success
    assert client.post("/Subscription", json=one_more).status_code == 201
