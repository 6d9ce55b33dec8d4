"""Requests for direct routes skip FastAPI's router and its no-op layers (HeraldAPI): every
answer, log line and metric is the same as through FastAPI's own stack, refusals and failures
included."""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry
from starlette.responses import Response

from herald.core.errors import NotSupported
from herald.ingest import writes
from herald.ingest.app import create_app
from herald.ingest.auth.server import AuthServer
from herald.ingest.context import IngestContext
from herald.ingest.direct_route import HeraldAPI, _Lanes
from herald.ingest.fhirhttp import fhir_router
from herald.runtime.logs import stamp_request_ids
from herald.runtime.metrics import Metrics
from herald.runtime.packaged import load_topics
from herald.runtime.settings import Settings
from herald.runtime.store import clients
from herald.runtime.store.database import Database
from tests.support.smart import ALL_SCOPES, ApiClient

BASE = "http://herald.test/fhir"
TOKEN_URL = f"{BASE}/auth/token"
MAX_BODY = 4096
_JSON = {"Content-Type": "application/fhir+json"}
# Differ between any two answers, whichever path served them.
_UNSTABLE = {"date", "x-request-id", "last-modified"}


async def _ready() -> dict[str, bool]:
    return {"database": True}


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[HeraldAPI]:
    database = Database(f"sqlite:///{tmp_path / 'herald.db'}")
    await database.migrate()
    settings = Settings(
        database_url="sqlite://", base_url=BASE, auth="smart", max_body_bytes=MAX_BODY
    )
    auth = AuthServer(settings, database)
    built = create_app(
        IngestContext(settings, database, load_topics(), Metrics(), auth=auth), _ready
    )
    assert isinstance(built, HeraldAPI)
    try:
        yield built
    finally:
        await auth.aclose()
        await database.aclose()


class Lanes:
    """Which path each request took; `routed` turns the direct lane off."""

    def __init__(self) -> None:
        self.taken: list[bool] = []
        self.routed = False


@pytest.fixture
def lanes(monkeypatch: pytest.MonkeyPatch) -> Lanes:
    state = Lanes()
    match = HeraldAPI._match

    def spied(self: HeraldAPI, scope: dict[str, Any]) -> Any:
        found = None if state.routed else match(self, scope)
        state.taken.append(found is not None)
        return found

    monkeypatch.setattr(HeraldAPI, "_match", spied)
    return state


async def _token(http: httpx.AsyncClient, database: Database, client_id: str, scope: str) -> str:
    client = ApiClient(client_id)
    async with database.transaction() as connection:
        await clients.add(connection, client.registration(scope))
    answer = await http.post("/fhir/auth/token", data=client.token_form(TOKEN_URL, scope))
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def _registry(app: FastAPI) -> CollectorRegistry:
    registry: CollectorRegistry = app.state.herald.metrics.registry
    return registry


def _samples(app: FastAPI) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in _registry(app).collect()
        for s in family.samples
    }


Renames = list[tuple[str, str]]


def _renamed(text: str, renames: Renames) -> str:
    for old, new in renames:
        text = text.replace(old, new)
    return text


def _renames(response: httpx.Response, lane: str) -> Renames:
    """The lane's name in paths and ids, and the id Herald gave a created resource."""
    renames = [(lane, "LANE")]
    created = response.headers.get("location", "").partition("/Task/")[2].split("/")[0]
    if response.status_code == 201 and created and lane not in created:
        renames.append((created, "CREATED"))
    return renames


def _answer(response: httpx.Response, renames: Renames) -> dict[str, Any]:
    """A response without what differs between any two requests (ids, times)."""
    body: Any = _renamed(response.content.decode(), renames)
    if response.headers.get("content-type", "").startswith("application/fhir+json") and body:
        body = orjson.loads(body)
        if isinstance(body, dict) and "meta" in body:
            body["meta"].pop("lastUpdated", None)
    headers = sorted(
        (k, _renamed(v, renames)) for k, v in response.headers.items() if k not in _UNSTABLE
    )
    return {"status": response.status_code, "headers": headers, "body": body}


_LOGGED = {"method", "path", "query_keys", "status", "client_id", "interaction"}
_LOGGED |= {"resource_type", "resource_id"}


def _log_lines(records: list[logging.LogRecord], renames: Renames) -> list[Any]:
    return [
        (
            record.name,
            _renamed(record.getMessage(), renames),
            {k: _renamed(str(v), renames) for k, v in vars(record).items() if k in _LOGGED},
        )
        for record in records
        if record.name in ("herald.access", "herald.audit")
    ]


Case = tuple[str, str, dict[str, Any]]


async def _compare(
    app: HeraldAPI,
    lanes: Lanes,
    caplog: pytest.LogCaptureFixture,
    case: Case,
    *,
    direct: bool = True,
    raise_app_exceptions: bool = True,
) -> dict[str, Any]:
    """The same request through the direct lane and through FastAPI's stack: same answer, log
    lines and metric changes. A path or str body may hold `{lane}`, named after the path
    taken; a callable body is called for each."""
    method, path, kwargs = case
    seen: list[Any] = []
    for lane in ("direct", "routed"):
        lanes.routed = lane == "routed"
        lanes.taken.clear()
        caplog.clear()
        before = _samples(app)
        given = dict(kwargs)
        content = given.get("content")
        if isinstance(content, str):
            given["content"] = content.replace("{lane}", lane)
        elif callable(content):
            given["content"] = content()
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://herald.test") as http:
            response = await http.request(method, path.replace("{lane}", lane), **given)
        after = _samples(app)
        changed = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k)}
        renames = _renames(response, lane)
        seen.append(
            (
                _answer(response, renames),
                _log_lines(caplog.records, renames),
                changed,
                lanes.taken[:],
            )
        )
    (answer, lines, metrics, direct_taken), (answer2, lines2, metrics2, routed_taken) = seen
    assert direct_taken == [direct] and routed_taken == [False]
    assert answer == answer2
    assert lines == lines2 and len(lines) == 2
    assert metrics == metrics2
    same: dict[str, Any] = answer
    return same


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    stamp_request_ids()
    caplog.set_level(logging.INFO)
    return caplog


def _task(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order", **extra}


async def _bearer(app: HeraldAPI, client_id: str, scope: str = ALL_SCOPES) -> dict[str, str]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://herald.test") as http:
        token = await _token(http, app.state.herald.database, client_id, scope)
    return {"Authorization": f"Bearer {token}"}


async def test_answers_and_refusals_are_those_of_fastapis_stack(
    app: HeraldAPI, lanes: Lanes, logs: pytest.LogCaptureFixture
) -> None:
    writer = await _bearer(app, "w")
    read_only = await _bearer(app, "r", "system/Task.rs")
    body = orjson.dumps(_task(id="t-{lane}")).decode()

    def put(headers: dict[str, str], content: Any, path: str = "/fhir/Task/t-{lane}") -> Case:
        return "PUT", path, {"headers": headers, "content": content}

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"resourceType": "Task", "note": [{"text": "'
        yield b"x" * MAX_BODY
        yield b'"}]}'

    statuses = []
    for case in (
        put({**_JSON, **writer}, body),  # created
        put({**_JSON, **writer}, body),  # updated
        put({**_JSON, **writer, "Prefer": "return=OperationOutcome"}, body),
        ("GET", "/fhir/Task/t-{lane}", {"headers": writer}),
        ("GET", "/fhir/Task/t-{lane}", {"headers": {**writer, "If-None-Match": 'W/"3"'}}),
        ("POST", "/fhir/Task", {"headers": {**_JSON, **writer}, "content": body}),
        put(_JSON, body),  # no token
        put({**_JSON, "Authorization": "Bearer nonsense"}, body),
        put({**_JSON, **read_only}, body),  # forbidden: no write scope
        put({**_JSON, **writer}, '{"resourceType": "Task", '),  # not JSON
        put({**_JSON, **writer}, '{"resourceType": "Task", "id": 1, "id": 2}'),
        put({**_JSON, **writer}, orjson.dumps(_task(id="other"))),  # id mismatch
        put({**_JSON, **writer}, orjson.dumps({"resourceType": "Task", "bogus": 1})),
        put({"Content-Type": "text/plain", **writer}, body),
        put(writer, body),  # no Content-Type
        put({**_JSON, **writer}, "x" * (MAX_BODY + 1)),  # declared too large
        put({**_JSON, **writer}, chunks),  # too large while it streams in
        put({**_JSON, **writer, "Accept": "image/png"}, body),
        put({**_JSON, **writer}, body, "/fhir/Nothing/t-{lane}"),
        put({**_JSON, **writer}, body, "/fhir/_history"),
        ("DELETE", "/fhir/Task/t-{lane}", {"headers": writer}),
    ):
        answer = await _compare(app, lanes, logs, case)
        statuses.append(answer["status"])
    assert statuses == [
        201, 200, 200, 200, 304, 201, 401, 401, 403, 400, 400, 400, 400, 415, 415, 413, 413,
        406, 404, 405, 204,
    ]  # fmt: skip


async def test_other_routes_keep_fastapis_stack(
    app: HeraldAPI, lanes: Lanes, logs: pytest.LogCaptureFixture
) -> None:
    for case in (
        ("GET", "/fhir/.well-known/smart-configuration", {}),
        ("POST", "/fhir/auth/token", {"data": {"grant_type": "client_credentials"}}),
    ):
        await _compare(app, lanes, logs, case, direct=False)


async def test_a_failure_is_a_500_outcome_and_raised_again(
    app: HeraldAPI,
    lanes: Lanes,
    logs: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("broken store")

    headers = {**_JSON, **await _bearer(app, "w")}
    monkeypatch.setattr(writes, "write", broken)
    case: Case = (
        "PUT",
        "/fhir/Task/t",
        {"headers": headers, "content": orjson.dumps(_task(id="t"))},
    )
    for routed in (False, True):
        lanes.routed = routed
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://herald.test") as http:
            with pytest.raises(RuntimeError, match="broken store"):
                await http.request(case[0], case[1], **case[2])
    answer = await _compare(app, lanes, logs, case, raise_app_exceptions=False)
    assert answer["status"] == 500
    assert answer["body"]["issue"][0]["code"] == "exception"


def test_fastapis_stack_is_fastapis_own(app: HeraldAPI) -> None:
    # The direct lane shares the app's middlewares; everything else is FastAPI's build.
    def layers(outer: Any) -> list[type]:
        found = []
        while outer is not app.router:
            found.append(type(outer))
            outer = outer.app
        return found

    own = layers(app.build_middleware_stack())
    assert own.count(_Lanes) == 1
    assert [t for t in own if t is not _Lanes] == layers(FastAPI.build_middleware_stack(app))


class _SentLate(Response):
    """A response class of its own (not Starlette's plain Response): it fails before it sends
    anything when its status says so."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.status_code == 599:
            raise NotSupported("refused before the answer started")
        await super().__call__(scope, receive, send)


def _late_routes(app: HeraldAPI) -> None:
    router = fhir_router()

    @router.get("/Late/{kind}")
    async def late(request: Request, kind: str) -> Response:
        if kind == "refused":
            return _SentLate(b"", status_code=599)
        if kind == "plain":
            return Response(b"plain", media_type="text/plain")
        return _SentLate(b"late", status_code=200, media_type="text/plain")

    app.router.routes[:0] = router.routes  # before the catch-all of unsupported paths


async def test_responses_of_other_classes_and_failures_while_sending(
    app: HeraldAPI, lanes: Lanes, logs: pytest.LogCaptureFixture
) -> None:
    _late_routes(app)
    reader = await _bearer(app, "r", "system/Task.rs")
    for kind, status in (("plain", 200), ("fine", 200), ("refused", 405)):
        answer = await _compare(
            app, lanes, logs, ("GET", f"/fhir/Late/{kind}", {"headers": reader})
        )
        assert answer["status"] == status
    failures: list[tuple[type[BaseException], str, type[BaseException] | None]] = []
    for fails_with in (NotSupported("while sending"), OSError("connection reset")):

        async def failing(
            scope: Any, receive: Any, send: Any, fails: Exception = fails_with
        ) -> None:
            async def broken(message: Any) -> None:
                if message["type"] == "http.response.start":
                    raise fails
                await send(message)

            await app(scope, receive, broken)

        for kind, routed in itertools.product(("plain", "fine"), (False, True)):
            lanes.routed = routed
            lanes.taken.clear()
            transport = httpx.ASGITransport(app=failing)
            async with httpx.AsyncClient(transport=transport, base_url="http://h.test") as http:
                with pytest.raises(Exception) as raised:
                    await http.get(f"/fhir/Late/{kind}", headers=reader)
            assert lanes.taken == [not routed]
            cause = raised.value.__cause__
            failures.append(
                (type(raised.value), str(raised.value), cause if cause is None else type(cause))
            )
    assert (
        failures
        == [
            (RuntimeError, "Caught handled exception, but response already started.", NotSupported),
        ]
        * 4
        + [(OSError, "connection reset", None)] * 4
    )
