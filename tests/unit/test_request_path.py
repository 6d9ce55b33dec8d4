"""The request path of the FHIR API: nothing runs in a worker thread, the hot routes called
without FastAPI's dependency solving, one JSON read that still refuses a key given twice, the
depth limit."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from typing import Annotated

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from herald.core.errors import Forbidden, InvalidResource
from herald.core.structure import MAX_DEPTH, check_depth
from herald.ingest.app import create_app
from herald.ingest.context import IngestContext
from herald.ingest.direct_route import DirectRoute
from herald.ingest.fhirhttp import read_resource
from herald.runtime.metrics import Metrics
from herald.runtime.packaged import load_topics
from herald.runtime.settings import Settings


async def _no_readiness() -> dict[str, bool]:
    return {}


def _calls(dependant: Dependant) -> Iterator[object]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def test_every_route_and_dependency_is_a_coroutine() -> None:
    # FastAPI runs a plain function (route or dependency) in a worker thread: a thread hop and
    # a GIL hand-off per call and request.
    settings = Settings(auth="smart", canvas_secret="whsec_" + "A" * 44)
    ctx = IngestContext(settings, None, load_topics(settings.topics_dir), Metrics())  # type: ignore[arg-type]
    app = create_app(ctx, _no_readiness)
    routes = [r for r in iter_route_contexts(app.routes) if isinstance(r.original_route, APIRoute)]
    calls = {(route.path, call) for route in routes for call in _calls(route.dependant)}
    assert len(routes) > 30 and len(calls) > 3 * len(routes)
    plain = {f"{path} {call}" for path, call in calls if not inspect.iscoroutinefunction(call)}
    assert not plain


def _request(body: bytes) -> Request:
    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    headers = [(b"content-type", b"application/fhir+json")]
    return Request({"type": "http", "method": "PUT", "headers": headers}, receive)


@pytest.mark.parametrize(
    "body",
    [
        b'{"resourceType":"Task","status":"draft","status":"requested"}',
        b'{"resourceType": "Task", "status": "draft", "status": "requested"}',
        b'{"resourceType":"Task","owner":{"reference":"a","reference":"b"}}',
        b'{"resourceType":"Task","input":[{"valueString":"x","valueString":"y"}]}',
        b'{"resourceType":"Task","note":[{"text":"\\u00e9"}],"status":"a","status":"b"}',
    ],
    ids=["compact", "spaced", "nested", "in an array", "escaped"],
)
async def test_a_key_given_twice_is_refused_wherever_it_is(body: bytes) -> None:
    with pytest.raises(
        InvalidResource, match=r"holds the key '(status|reference|valueString)' more than once"
    ):
        await read_resource(_request(body))


@pytest.mark.parametrize(
    "body",
    [
        b'{"resourceType":"Task","status":"requested","owner":{"reference":"Organization/1"}}',
        b'{ "resourceType" : "Task",\n  "note": [{"text": "caf\\u00e9"}], "priority": 1E2 }',
    ],
    ids=["compact", "spaced"],
)
async def test_a_body_without_repeated_keys_reads_as_sent(body: bytes) -> None:
    assert await read_resource(_request(body)) == json.loads(body)


def test_the_depth_limit_counts_objects_and_arrays() -> None:
    def nested(depth: int) -> object:
        value: object = "leaf"
        for level in range(depth):
            value = [value] if level % 2 else {"a": value, "b": 1}
        return value

    check_depth(nested(MAX_DEPTH))
    check_depth({"a": [1, "x", None]}, limit=2)
    with pytest.raises(InvalidResource, match=f"nested deeper than {MAX_DEPTH} levels"):
        check_depth(nested(MAX_DEPTH + 1))
    with pytest.raises(InvalidResource, match="nested deeper than 2 levels"):
        check_depth({"a": [1, {"b": {}}], "c": "x"}, limit=2)


def test_the_task_routes_are_served_without_fastapis_dependency_solving() -> None:
    settings = Settings(auth="smart", canvas_secret="whsec_" + "A" * 44)
    ctx = IngestContext(settings, None, load_topics(settings.topics_dir), Metrics())  # type: ignore[arg-type]
    app = create_app(ctx, _no_readiness)
    direct = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute) and getattr(route, "direct", False)
        for method in route.methods or ()
    }
    for method, path in [
        ("PUT", "/fhir/Task/{task_id}"),
        ("POST", "/fhir/Task"),
        ("GET", "/fhir/Task/{task_id}"),
        ("GET", "/fhir/Task"),
        ("POST", "/fhir/Subscription"),
    ]:
        assert (method, path) in direct


_CALLS: list[str] = []


async def _who(request: Request) -> str:
    _CALLS.append("who")
    return "someone"


Who = Annotated[str, Depends(_who)]


def _direct_app(calls: list[str]) -> FastAPI:
    async def negotiated(request: Request) -> None:
        calls.append("router")

    async def allowed(request: Request) -> None:
        calls.append("route")
        if request.headers.get("x-refuse"):
            raise Forbidden("refused")

    router = APIRouter(prefix="/p", dependencies=[Depends(negotiated)], route_class=DirectRoute)

    @router.put("/{item}", dependencies=[Depends(allowed)])
    async def put(item: str, request: Request, caller: Who, again: Who) -> Response:
        return Response(f"{request.method} {item} by {caller} {again}", status_code=201)

    @router.get("/{item}")
    async def get(item: str, q: str) -> Response:
        return Response(f"{item} {q}")

    app = FastAPI()

    @app.exception_handler(Forbidden)
    async def forbidden(_: Request, exc: Forbidden) -> Response:
        return Response(exc.diagnostics, status_code=403)

    app.router.routes.extend(router.routes)  # as herald.ingest.app.add_routes does
    return app


async def _call(
    app: FastAPI, method: str, path: str, query: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.replace(" ", "%20").encode(),
        "query_string": query,
        "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_a_direct_route_makes_fastapis_calls_in_fastapis_order() -> None:
    calls = _CALLS
    calls.clear()
    app = _direct_app(calls)
    route = next(r for r in app.routes if isinstance(r, APIRoute) and "PUT" in (r.methods or ()))
    assert getattr(route, "direct", False)
    assert await _call(app, "PUT", "/p/a b") == (201, b"PUT a b by someone someone")
    # The router's dependency, the route's, then the parameters' (one dependency once).
    assert calls == ["router", "route", "who"]
    calls.clear()
    assert await _call(app, "PUT", "/p/x", headers={"x-refuse": "1"}) == (403, b"refused")
    assert calls == ["router", "route"]


async def test_a_route_with_more_to_solve_is_left_to_fastapi() -> None:
    app = _direct_app([])
    route = next(r for r in app.routes if isinstance(r, APIRoute) and "GET" in (r.methods or ()))
    assert not getattr(route, "direct", False)
    assert await _call(app, "GET", "/p/a", b"q=1") == (200, b"a 1")
    status, _ = await _call(app, "GET", "/p/a")
    assert status == 422
