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

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_typed_return_annotation
from fastapi.routing import APIRoute
from starlette.middleware import Middleware
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

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


# Where HeraldAPI leaves the direct route it matched, for the inner end of its middlewares.
_MATCHED = "herald.direct_route"
# What a route's match adds to the scope; anything else is left to FastAPI's router.
_PLAIN_CHILD = frozenset({"endpoint", "path_params", "route"})


class HeraldAPI(FastAPI):
    """FastAPI serving each request for a direct route (see DirectRoute) through fewer layers.

    FastAPI's stack around a route: ServerErrorMiddleware, its exception telemetry, its body
    limit, the app's own middlewares, ExceptionMiddleware, an exit stack (for uploaded files),
    the router matching every route in turn, the route's handle. For a direct route the
    telemetry and the body limit have nothing to do when they are off (Herald turns telemetry
    off and sets no FastAPI body limit; its own RequestLimits count the body), nor the exit
    stack; and the router's choice is made on the routes that accept the request's method
    alone, since a route that does not accept it never fully matches (the router takes the
    first full match). Such a request is matched before the middlewares and served by a
    ServerErrorMiddleware with the same handler, the same middleware instances (shared rate
    limits), an ExceptionMiddleware with the same handlers and the route's app, with the scope
    the router would set. Any other request goes through FastAPI's stack as built by FastAPI.
    """

    _direct_stack: ASGIApp | None = None
    _by_method: dict[str, list[BaseRoute]]
    _routes_seen: int = -1

    def build_middleware_stack(self) -> ASGIApp:
        """FastAPI's own stack, whose app middlewares the direct routes' stack shares."""
        error_handler = None  # as FastAPI's build_middleware_stack finds it
        handlers = {}
        for key, value in self.exception_handlers.items():
            if key in (500, Exception):
                error_handler = value
            else:
                handlers[key] = value
        direct = ExceptionMiddleware(
            _call_matched(self.router), handlers=handlers, debug=self.debug
        )

        def entered(app: ASGIApp) -> ASGIApp:
            # The outermost of the app's middlewares, as FastAPI builds them.
            self._direct_stack = ServerErrorMiddleware(app, handler=error_handler, debug=self.debug)
            return app

        own = self.user_middleware
        self.user_middleware = [
            Middleware(entered),
            *own,
            Middleware(_Lanes, direct=direct),
        ]
        try:
            return super().build_middleware_stack()
        finally:
            self.user_middleware = own

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a request for a direct route through the shorter stack, any other as FastAPI."""
        if (
            scope["type"] == "http"
            and self.max_body_size is None
            and MAX_BODY_SIZE_SCOPE_KEY not in scope
            and "fastapi.telemetry" not in scope
            and not self.router.form_limits
            and not self._native_telemetry.enabled()
        ):
            if self.middleware_stack is None:
                self.middleware_stack = self.build_middleware_stack()
            if self.root_path:
                scope["root_path"] = self.root_path
            matched = self._match(scope)
            if matched is not None:
                scope["app"] = self
                scope[_MATCHED] = matched
                await self._direct_stack(scope, receive, send)  # type: ignore[misc]
                return
        await super().__call__(scope, receive, send)

    def _match(self, scope: Scope) -> tuple[BaseRoute, Scope] | None:
        """The route FastAPI's router would choose and its child scope, when that route is a
        direct one; else None."""
        routes = self.router.routes
        if len(routes) != self._routes_seen:
            self._by_method = {}
            self._routes_seen = len(routes)
        method = scope["method"]
        candidates = self._by_method.get(method)
        if candidates is None:
            candidates = self._by_method[method] = [
                r
                for r in routes
                if not (isinstance(r, Route) and r.methods and method not in r.methods)
            ]
        for route in candidates:
            match, child = route.matches(scope)
            if match is Match.FULL:
                if getattr(route, "direct", False) and child.keys() <= _PLAIN_CHILD:
                    return route, child
                return None
        return None


class _Lanes:
    """The innermost of the app's middlewares: on to a matched direct route, or to FastAPI's
    ExceptionMiddleware and router."""

    def __init__(self, app: ASGIApp, direct: ASGIApp) -> None:
        self.app = app
        self.direct = direct

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _MATCHED in scope:
            await self.direct(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _call_matched(router: Router) -> ASGIApp:
    """The matched route's app, called with the scope the router sets (Router.app)."""

    async def call(scope: Scope, receive: Receive, send: Send) -> None:
        route, child = scope.pop(_MATCHED)
        if "router" not in scope:
            scope["router"] = router
        scope.update(child)
        await route.app(scope, receive, send)

    return call
