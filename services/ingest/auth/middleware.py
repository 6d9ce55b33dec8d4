"""Authentication of every request under /fhir and /canvas, as pure ASGI middleware.

It runs before routing, so a route added later is protected without doing anything. It sets
`request.state.client_id` (str, or None without authentication) for other middlewares (access
log, quotas) and `request.state.caller` for the routes. Public: the CapabilityStatement, the
SMART configuration and the token endpoint; the Canvas endpoint authenticates each delivery by
its Standard Webhooks signature instead.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from herald.core.errors import Unauthenticated
from herald.ingest.auth.server import ANONYMOUS, AuthServer
from herald.runtime.limits import refuse
from herald.runtime.metrics import Metrics

PUBLIC_PATHS = frozenset(
    {
        "/fhir/metadata",
        "/fhir/.well-known/smart-configuration",
        "/.well-known/smart-configuration",
        "/fhir/auth/token",
        "/fhir/auth/jwks",
    }
)
SIGNED_PATHS = frozenset({"/canvas/integration-tasks", "/fhir/canvas/integration-tasks"})
PROTECTED_PREFIXES = ("/fhir", "/canvas")
CANVAS_CLIENT = "canvas"
"""The client id requests of the Canvas source are recorded under."""
_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f]')


def challenge(exc: Unauthenticated) -> str:
    """The WWW-Authenticate value of a 401 (RFC 6750 §3)."""
    parts = ['Bearer realm="herald"']
    if exc.error is not None:
        parts.append(f'error="{exc.error}"')
        parts.append(f'error_description="{_UNSAFE.sub("", exc.diagnostics)}"')
    return ", ".join(parts)


def _protected(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PROTECTED_PREFIXES)


class AuthMiddleware:
    """Finds the Caller of each request from its bearer token (when authentication is on)."""

    def __init__(self, app: ASGIApp, server: AuthServer | None, metrics: Metrics) -> None:
        self.app = app
        self.server = server
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Set the caller, or answer 401 with an OperationOutcome."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        path = scope["path"]
        state["client_id"] = None
        if self.server is None:
            state["caller"] = ANONYMOUS
        elif path in SIGNED_PATHS:
            state["client_id"] = CANVAS_CLIENT
        elif _protected(path) and path not in PUBLIC_PATHS:
            try:
                caller = await self.server.authenticate(_bearer(scope))
            except Unauthenticated as exc:
                self.metrics.rejected_requests.labels("401").inc()
                await refuse(
                    send,
                    401,
                    exc.diagnostics,
                    exc.issue_code,
                    [
                        (b"www-authenticate", challenge(exc).encode("latin-1", "replace")),
                        (b"cache-control", b"no-store"),
                    ],
                )
                return
            state["caller"] = caller
            state["client_id"] = caller.client_id
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str:
    values = [v for k, v in scope["headers"] if k == b"authorization"]
    if not values:
        raise Unauthenticated(
            "this request needs an access token (Authorization: Bearer)", error=None
        )
    scheme, _, token = bytes(values[0]).decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(
            "the Authorization header must be 'Bearer <access token>'", error="invalid_request"
        )
    return token.strip()
