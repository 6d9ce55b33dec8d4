"""The SMART discovery document, the token endpoint and Herald's public keys."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from herald.core.scopes import supported_scopes
from herald.ingest.auth.server import CLIENT_ALGORITHMS, AuthServer, OAuthError
from herald.ingest.fhirhttp import read_body

router = APIRouter()
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def server(request: Request) -> AuthServer:
    """The AuthServer of this app."""
    found: AuthServer = request.app.state.auth
    return found


def smart_configuration(auth: AuthServer) -> dict[str, Any]:
    """The SMART App Launch 2.x discovery document (Backend Services subset)."""
    return {
        "issuer": auth.issuer,
        "jwks_uri": f"{auth.issuer}/auth/jwks",
        "token_endpoint": auth.token_url,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(CLIENT_ALGORITHMS),
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": supported_scopes(),
        "response_types_supported": ["token"],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
    }


@router.get("/fhir/.well-known/smart-configuration")
@router.get("/.well-known/smart-configuration", include_in_schema=False)
async def discovery(request: Request) -> Response:
    """Where and how to get a token."""
    return JSONResponse(smart_configuration(server(request)))


@router.get("/fhir/auth/jwks")
async def jwks(request: Request) -> Response:
    """The public keys that verify the access tokens Herald issues."""
    return JSONResponse(await server(request).keys.public_jwks())


@router.post("/fhir/auth/token")
async def token(request: Request) -> Response:
    """client_credentials with a JWT client assertion → a bearer access token (RFC 6749 §4.4)."""
    try:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise OAuthError(
                "invalid_request", "the body must be application/x-www-form-urlencoded"
            )
        pairs = parse_qsl((await read_body(request)).decode("utf-8", "replace"))
        names = [name for name, _ in pairs]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise OAuthError("invalid_request", f"parameters given twice: {', '.join(repeated)}")
        client_id, answer = await server(request).issue(dict(pairs))
        request.state.client_id = client_id  # for the audit trail
    except OAuthError as exc:
        request.app.state.herald.metrics.token_requests.labels(exc.error).inc()
        headers = dict(NO_STORE)
        if exc.status_code == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="herald"'
        return JSONResponse(
            {"error": exc.error, "error_description": exc.description},
            status_code=exc.status_code,
            headers=headers,
        )
    request.app.state.herald.metrics.token_requests.labels("issued").inc()
    return JSONResponse(answer, headers=NO_STORE)
