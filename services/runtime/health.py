"""The operational endpoints every service serves: /metrics, /healthz, /readyz."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from herald.runtime.metrics import Metrics

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]


def health_routes(metrics: Metrics, readiness: ReadinessCheck) -> list[Route]:
    """Routes for /metrics, /healthz and /readyz."""

    async def metrics_endpoint(_: Request) -> Response:
        # Readiness as a metric: a process whose database is gone still answers /metrics.
        metrics.ready.set(all((await readiness()).values()))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(_: Request) -> Response:
        checks = await readiness()
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    return [
        Route("/metrics", metrics_endpoint),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
    ]


def health_app(metrics: Metrics, readiness: ReadinessCheck) -> Starlette:
    """A small app with only the operational endpoints (matcher, dispatcher)."""
    return Starlette(routes=health_routes(metrics, readiness))
