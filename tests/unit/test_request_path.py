"""What every request of the FHIR API costs: nothing runs in a worker thread."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from herald.ingest.app import create_app
from herald.ingest.context import IngestContext
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
