"""Routes whose endpoint FastAPI would call with only the request, its path and its dependencies
on the request: called directly, without FastAPI's per-request dependency solving.

The FHIR routes take the Request, str path parameters and dependencies that each read only the
request (`check_accept`, a scope check, the IngestContext, the Caller); they read their body
themselves and answer a Response. For such a route, FastAPI's machinery per request (a cache key
per dependency, parameter validation of already-valid strings, two exit stacks, an exception
wrapper the app's own ExceptionMiddleware repeats) is most of the route's cost. A DirectRoute
makes the same calls in the same order (the route's own dependencies, then the parameters',
each dependency once per request) and serves the endpoint's Response. The route keeps its
dependant, so its OpenAPI operation is FastAPI's. Any route with something else to solve (a
query, header or body parameter, a dependency with sub-dependencies or one that yields, a
response model) is served by FastAPI as usual.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_typed_return_annotation
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

Handler = Callable[[Request], Awaitable[Response]]


class DirectRoute(APIRoute):
    """An APIRoute calling its endpoint directly when its parameters allow (see the module)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        handler = direct_handler(self)
        if handler is None:
            return  # FastAPI's own request handling

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await handler(Request(scope, receive, send))
            await response(scope, receive, send)

        self.app = app
        self.direct = True


def _reads_only_the_request(dependency: Dependant) -> bool:
    call = dependency.call
    return (
        call is not None
        and inspect.iscoroutinefunction(call)
        and dependency.request_param_name is not None
        and len(inspect.signature(call).parameters) == 1
        and not dependency.dependencies
        and _nothing_else(dependency)
    )


def _nothing_else(dependant: Dependant) -> bool:
    return not (
        dependant.query_params
        or dependant.header_params
        or dependant.cookie_params
        or dependant.body_params
        or dependant.websocket_param_name
        or dependant.http_connection_param_name
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
    )


def _answers_a_response(endpoint: Callable[..., Any]) -> bool:
    returned = get_typed_return_annotation(endpoint)
    return inspect.isclass(returned) and issubclass(returned, Response)


def direct_handler(route: APIRoute) -> Handler | None:
    """The route's endpoint called with its request, path and dependencies, or None when the
    route needs FastAPI's dependency solving."""
    dependant = route.dependant
    endpoint = dependant.call
    if (
        endpoint is None
        or not inspect.iscoroutinefunction(endpoint)
        or not _answers_a_response(endpoint)
        or route.response_field is not None
        or route.body_field is not None
        or not _nothing_else(dependant)
        or not all(_reads_only_the_request(d) for d in dependant.dependencies)
        or not all(
            p.field_info.annotation is str and p.field_info.is_required()
            for p in dependant.path_params
        )
    ):
        return None
    # In FastAPI's order: the route's own dependencies (no name), then the parameters'.
    calls = [(d.name, d.call) for d in dependant.dependencies]
    paths = [(p.name, p.alias) for p in dependant.path_params]
    request_name = dependant.request_param_name

    async def handle(request: Request) -> Response:
        values: dict[str, Any] = {}
        done: dict[Any, Any] = {}  # each dependency once per request, as FastAPI caches them
        for name, call in calls:
            value = done[call] if call in done else await call(request)  # type: ignore[misc]
            done[call] = value
            if name is not None:
                values[name] = value
        if paths:
            given = request.path_params
            for name, alias in paths:
                values[name] = given[alias]
        if request_name is not None:
            values[request_name] = request
        response: Response = await endpoint(**values)
        return response

    return handle
