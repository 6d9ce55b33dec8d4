"""The ingest service: the FHIR API and the outbox relay."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from starlette.responses import Response

from herald import __version__
from herald.core.capability import capability_statement
from herald.core.errors import Unauthenticated
from herald.core.fhir import format_instant, utc_now
from herald.ingest import canvas, discovery, history, operations, subscriptions, tasks
from herald.ingest import search as task_search
from herald.ingest.auth import audit
from herald.ingest.auth import routes as auth_routes
from herald.ingest.auth.middleware import AuthMiddleware, challenge
from herald.ingest.context import Ctx, IngestContext
from herald.ingest.direct_route import HeraldAPI
from herald.ingest.fhirhttp import (
    FhirResponse,
    check_accept,
    install_error_handlers,
    outcome_response,
    unsupported_router,
)
from herald.ingest.openapi import openapi_document
from herald.runtime.access import AccessLog
from herald.runtime.health import ReadinessCheck, health_routes
from herald.runtime.limits import RequestLimits


def create_app(ctx: IngestContext, readiness: ReadinessCheck) -> FastAPI:
    """The FastAPI app serving /fhir and the operational endpoints."""

    app = HeraldAPI(
        title="Herald FHIR API",
        version=__version__,
        docs_url="/docs",
        openapi_url="/openapi.json",
        # Herald's metrics are Prometheus's and its request log its own: FastAPI's OpenTelemetry
        # hooks would only look for providers on every request (3.4 µs each).
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.herald = ctx
    app.state.auth = ctx.auth
    app.openapi = partial(openapi_document, app, ctx.topics)  # type: ignore[method-assign]
    install_error_handlers(app)
    install_auth_error_handler(app)
    if ctx.auth is None:
        # With authentication on, these are served on the admin port instead.
        app.router.routes.extend(health_routes(ctx.metrics, readiness))
    else:
        add_routes(app, auth_routes.router)
    # Starlette runs the middleware added last first. The limits read the client id that
    # AuthMiddleware sets, so they are added before it (and run after it).
    app.add_middleware(RequestLimits, limits=ctx.settings.request_limits)
    app.add_middleware(AuthMiddleware, server=ctx.auth, metrics=ctx.metrics)
    # Outside auth and the limits: its request id is the audit line's too, and both lines
    # record their refusals (401, 413, 429…) as well. The audit line is written as the access
    # log sees each request end: one pass over the response for both.
    app.add_middleware(AccessLog, answered=audit.record)
    origins = [o.strip() for o in ctx.settings.cors_origins.split(",") if o.strip()]
    if origins:
        # Outermost, so that refusals (401, 413, 429…) carry the CORS headers a browser needs to
        # show them to the script.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Accept", "If-Match"],
            expose_headers=["ETag", "Location", "Retry-After"],
        )

    @app.get("/fhir/metadata", dependencies=[Depends(check_accept)])
    async def metadata(ctx: Ctx) -> Response:
        """The CapabilityStatement."""
        return FhirResponse(
            capability_statement(
                ctx.settings.fhir_base,
                ctx.topics,
                date=format_instant(utc_now()),
                token_url=ctx.auth.token_url if ctx.auth else None,
            )
        )

    # History first: /Task/_history must not be read as a Task id, nor /Subscription/_history.
    # Operations first: /Subscription/$status must not be read as a Subscription id.
    for router in (
        history.router,
        tasks.router,
        canvas.router,
        task_search.router,
        operations.router,
        discovery.router,
        subscriptions.router,
        unsupported_router(),
    ):
        add_routes(app, router)
    return app


def add_routes(app: FastAPI, router: APIRouter) -> None:
    """Serve a router's routes (built with its prefix and dependencies) from the app's own list.

    What app.include_router(router) serves, without its cost: FastAPI matches the routes of an
    included router through a wrapper, up to three times per request.
    """
    app.router.routes.extend(router.routes)


def install_auth_error_handler(app: FastAPI) -> None:
    """Answer Unauthenticated with 401, an OperationOutcome and WWW-Authenticate (RFC 6750)."""

    @app.exception_handler(Unauthenticated)
    async def unauthenticated(_: Request, exc: Unauthenticated) -> Response:
        response = outcome_response(401, exc.diagnostics, exc.issue_code)
        response.headers["WWW-Authenticate"] = challenge(exc)
        return response
