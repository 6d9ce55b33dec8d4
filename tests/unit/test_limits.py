"""RequestLimits: body, query, Content-Type and rate limits in front of every route."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald.core.errors import PayloadTooLarge
from herald.runtime.limits import Limits, RateLimiter, RequestLimits


async def _echo(request: Request) -> Response:
    return Response(str(len(await request.body())))


def _client(limits: Limits) -> httpx.AsyncClient:
    app = RequestLimits(Starlette(routes=[Route("/", _echo, methods=["GET", "POST"])]), limits)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_bodies_queries_and_missing_content_types_are_refused() -> None:
    limits = Limits(max_body_bytes=1024, max_query_bytes=512, max_query_parameters=100, rate=0)
    async with _client(limits) as client:
        json = {"Content-Type": "application/fhir+json"}
        assert (await client.post("/", content=b"x" * 1024, headers=json)).text == "1024"
        too_large = await client.post("/", content=b"x" * 1025, headers=json)
        assert too_large.status_code == 413
        assert too_large.json()["issue"][0]["code"] == "too-costly"
        assert (await client.post("/", content=b"{}")).status_code == 415
        assert (await client.get("/?q=" + "a" * 512)).status_code == 414
        assert (await client.get("/?" + "&".join(["a=1"] * 101))).status_code == 400
        assert (await client.get("/?a=1")).status_code == 200


async def test_a_chunked_body_is_counted_while_it_streams_in() -> None:
    async def chunks(size: int) -> AsyncIterator[bytes]:
        for _ in range(size // 256):
            yield b"x" * 256
        yield b"x" * (size % 256)

    json = {"Content-Type": "application/fhir+json"}
    async with _client(Limits(max_body_bytes=1024, rate=0)) as client:
        fits = await client.post("/", content=chunks(1024), headers=json)
        assert "content-length" not in fits.request.headers
        assert fits.text == "1024"
        # No Content-Length to refuse it early: the app's error handlers answer this with 413.
        with pytest.raises(PayloadTooLarge):
            await client.post("/", content=chunks(1025), headers=json)


def test_the_rate_limiter_grants_a_burst_then_says_when_to_come_back() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("a")
    assert 0 < wait <= 0.5
    assert limiter.take("b") == 0.0  # clients have their own buckets


async def test_a_client_over_its_rate_gets_429_with_retry_after() -> None:
    async with _client(Limits(rate=0.5, burst=2)) as client:
        assert [(await client.get("/")).status_code for _ in range(2)] == [200, 200]
        throttled = await client.get("/")
        assert throttled.status_code == 429
        assert throttled.headers["Retry-After"] == "2"
        assert throttled.json()["issue"][0]["code"] == "throttled"
