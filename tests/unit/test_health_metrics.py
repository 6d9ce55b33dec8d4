"""Readiness and the outbox age as metrics, so that alerts need not probe /readyz."""

from __future__ import annotations

from datetime import timedelta

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from herald.core.contracts import NotificationRequest, encode
from herald.core.fhir import format_instant, utc_now
from herald.ingest.relay import _age
from herald.runtime.health import health_app
from herald.runtime.metrics import Metrics


def _sample(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.parametrize(("database", "expected"), [(True, 1.0), (False, 0.0)])
async def test_herald_ready_follows_readiness_at_each_scrape(database: bool, expected: float):
    async def readiness() -> dict[str, bool]:
        return {"database": database, "bus": True}

    app = health_app(Metrics(), readiness)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://health") as client:
        assert (await client.get("/readyz")).status_code == (200 if database else 503)
        scraped = await client.get("/metrics")
    assert scraped.status_code == 200
    assert _sample(scraped.text, "herald_ready") == expected


def test_outbox_age_is_read_from_the_record_timestamp():
    written = format_instant(utc_now() - timedelta(seconds=90))
    request = NotificationRequest("r", "handshake", "s", "e", requested_at=written)
    assert 89 <= _age(encode(request)) <= 95
    assert _age(orjson.dumps({"occurred_at": format_instant(utc_now())})) < 5
    assert _age(orjson.dumps({"no": "timestamp"})) == 0.0
