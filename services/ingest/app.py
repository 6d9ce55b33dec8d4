"""The ingest service: the FHIR API and the outbox relay."""

from __future__ import annotations

from functools import partial

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.responses import Response

from herald import __version__
from herald.core.capability import capability_statement
from herald.core.fhir import format_instant, utc_now
from herald.ingest import canvas, discovery, history, operations, subscriptions, tasks
from herald.ingest import search as task_search
from herald.ingest.context import Ctx, IngestContext
from herald.ingest.fhirhttp import (
    FhirResponse,
    check_accept,
    install_error_handlers,
    unsupported_router,
)
from herald.ingest.openapi import openapi_document
from herald.runtime.access import AccessLog
from herald.runtime.health import ReadinessCheck, health_routes
from herald.runtime.limits import RequestLimits


def create_app(ctx: IngestContext, readiness: ReadinessCheck) -> FastAPI:
    """The FastAPI app serving /fhir and the operational endpoints."""

    app = FastAPI(
        title="Herald FHIR API",
        version=__version__,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.herald = ctx
    app.openapi = partial(openapi_document, app, ctx.topics)  # type: ignore[method-assign]
    app.add_middleware(RequestLimits, limits=ctx.settings.request_limits)
    # Outside the limits, so that the access log shows their refusals too.
    app.add_middleware(AccessLog)
    origins = [o.strip() for o in ctx.settings.cors_origins.split(",") if o.strip()]
    if origins:
        # Outermost, so that refusals (413, 429…) carry the CORS headers a browser needs to
        # show them to the script.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Accept", "If-Match"],
            expose_headers=["ETag", "Location", "Retry-After"],
        )
    install_error_handlers(app)
    app.router.routes.extend(health_routes(ctx.metrics, readiness))

    @app.get("/fhir/metadata", dependencies=[Depends(check_accept)])
    async def metadata(ctx: Ctx) -> Response:
        """The CapabilityStatement."""
        return FhirResponse(
            capability_statement(ctx.settings.fhir_base, ctx.topics, date=format_instant(utc_now()))
        )

    # History first: /Task/_history must not be read as a Task id, nor /Subscription/_history.
    app.include_router(history.router, prefix="/fhir")
    app.include_router(tasks.router, prefix="/fhir")
    app.include_router(canvas.router)
    app.include_router(task_search.router, prefix="/fhir")
    # Operations first: /Subscription/$status must not be read as a Subscription id.
    app.include_router(operations.router, prefix="/fhir")
    app.include_router(discovery.router, prefix="/fhir")
    app.include_router(subscriptions.router, prefix="/fhir")
    app.include_router(unsupported_router(), prefix="/fhir")
    return app
