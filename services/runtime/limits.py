"""Request limits applied to every route before any handler runs (an ASGI middleware).

- a body over `max_body_bytes` is refused with 413: at once when Content-Length says so, and
  while it streams in otherwise (chunked bodies are counted, never buffered past the limit);
- a body without Content-Type is refused with 415 (a browser's "simple" cross-origin request
  must not be read as FHIR JSON);
- a query string over `max_query_bytes` gets 414, more than `max_query_parameters`
  parameters 400;
- each client (its authenticated id when there is one, else its address) may make
  `rate` requests a second on average, in bursts of up to `burst`; beyond, 429 with Retry-After.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from herald.core.errors import PayloadTooLarge
from herald.core.fhir import FHIR_JSON, operation_outcome

# Requests whose path starts with one of these are never rate limited (probes, scrapes).
UNLIMITED_PATHS = ("/healthz", "/readyz", "/metrics")
# Token buckets of clients not seen for this long are dropped (memory stays bounded).
IDLE_BUCKET_SECONDS = 300.0


@dataclass(frozen=True)
class Limits:
    """The limits of one HTTP server."""

    max_body_bytes: int = 1024 * 1024
    max_query_bytes: int = 8 * 1024
    max_query_parameters: int = 100
    rate: float = 50.0
    """Requests per second per client, on average; 0 turns rate limiting off."""
    burst: int = 100


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """Token buckets per client key."""

    rate: float
    burst: int
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _swept: float = 0.0

    def take(self, key: str) -> float:
        """Take one token; return 0 when granted, else the seconds until one is available."""
        now = time.monotonic()
        if now - self._swept > IDLE_BUCKET_SECONDS:
            self._swept = now
            self._buckets = {
                k: b for k, b in self._buckets.items() if now - b.at < IDLE_BUCKET_SECONDS
            }
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


def _client_key(scope: Scope) -> str:
    """The authenticated client id when authentication set one, else the peer address."""
    state = scope.get("state") or {}
    client_id = state.get("client_id") if isinstance(state, dict) else None
    if client_id:
        return f"client:{client_id}"
    peer = scope.get("client")
    return f"address:{peer[0] if peer else 'unknown'}"


async def refuse(
    send: Send, status: int, diagnostics: str, code: str, headers: list[tuple[bytes, bytes]]
) -> None:
    """Answer from an ASGI middleware with an OperationOutcome (and these extra headers)."""
    body = orjson.dumps(operation_outcome(diagnostics, code=code))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", f"{FHIR_JSON}; charset=utf-8".encode()),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    """The ASGI middleware enforcing `Limits`."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits
        self.rates = RateLimiter(limits.rate, limits.burst) if limits.rate > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse what breaks a limit; pass the rest on with a counting `receive`."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._check(scope)
        if refusal is not None:
            await refuse(send, *refusal)
            return
        limit = self.limits.max_body_bytes
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"the body is larger than {limit} bytes")
            return message

        await self.app(scope, counting_receive, send)

    def _check(self, scope: Scope) -> tuple[int, str, str, list[tuple[bytes, bytes]]] | None:
        limits = self.limits
        if self.rates is not None and not scope["path"].startswith(UNLIMITED_PATHS):
            wait = self.rates.take(_client_key(scope))
            if wait > 0:
                retry = str(max(1, math.ceil(wait))).encode()
                return 429, "too many requests; slow down", "throttled", [(b"retry-after", retry)]
        query: bytes = scope.get("query_string", b"")
        if len(query) > limits.max_query_bytes:
            return (
                414,
                f"the query string is longer than {limits.max_query_bytes} bytes",
                "too-costly",
                [],
            )
        if query.count(b"&") + 1 > limits.max_query_parameters:
            return (
                400,
                f"more than {limits.max_query_parameters} query parameters",
                "too-costly",
                [],
            )
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        chunked = b"transfer-encoding" in headers
        if declared is not None:
            size = int(declared) if declared.isdigit() else -1
            if size < 0:
                return 400, "invalid Content-Length", "invalid", []
            if size > limits.max_body_bytes:
                return (
                    413,
                    f"the body is larger than {limits.max_body_bytes} bytes",
                    "too-costly",
                    [(b"connection", b"close")],
                )
        has_body = chunked or (declared is not None and declared != b"0")
        if has_body and not headers.get(b"content-type", b"").strip():
            return 415, "a request body needs a Content-Type", "not-supported", []
        return None
