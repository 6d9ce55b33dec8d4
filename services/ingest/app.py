"""The ingest service: the FHIR API and the outbox relay."""

from __future__ import annotations

from fastapi import Depends, FastAPI
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
from herald.runtime.access import AccessLog
from herald.runtime.health import ReadinessCheck, health_routes


def create_app(ctx: IngestContext, readiness: ReadinessCheck) -> FastAPI:
    """The FastAPI app serving /fhir and the operational endpoints."""

    app = FastAPI(
        title="Herald FHIR API",
        version=__version__,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.herald = ctx
    app.add_middleware(AccessLog)
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
