"""The request id and the access log of the HTTP API, and the two log formats."""

from __future__ import annotations

import json
import logging
import uuid

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from herald.ingest.auth import audit
from herald.runtime.access import AccessLog
from herald.runtime.logs import JsonFormatter, TextFormatter, request_id, stamp_request_ids


async def _echo(request: Request) -> PlainTextResponse:
    logging.getLogger("herald.test").info("handling", extra={"resource": "Task/t1"})
    if request.query_params.get("as"):
        request.state.client_id = request.query_params["as"]
    return PlainTextResponse(request_id.get() or "")


async def _get(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    app = Starlette(routes=[Route("/fhir/Task", _echo)])
    app.add_middleware(AccessLog)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://herald.test") as client:
        return await client.get(url, headers=headers)


def _access(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    return next(r for r in caplog.records if r.name == "herald.access")


async def test_a_given_request_id_is_kept_answered_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    stamp_request_ids()
    response = await _get("/fhir/Task", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    assert response.text == "abc-123"  # the work in the request sees it
    handled = next(r for r in caplog.records if r.getMessage() == "handling")
    assert "request_id=abc-123" in TextFormatter().format(handled)


@pytest.mark.parametrize("given", [None, "", "a b", "x" * 129, "id;drop"])
async def test_a_missing_or_unusual_request_id_is_replaced(given: str | None) -> None:
    headers = {} if given is None else {"X-Request-ID": given}
    response = await _get("/fhir/Task", headers=headers)
    assert response.headers["X-Request-ID"] != given
    made = uuid.UUID(hex=response.headers["X-Request-ID"])
    assert (made.hex, made.version, made.variant) == (
        response.headers["X-Request-ID"],
        4,
        uuid.RFC_4122,
    )


async def test_the_access_record_has_query_names_but_not_their_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    await _get("/fhir/Task?owner=Organization/secret-org&owner=x&_count=5&as=client-7")
    record = _access(caplog)
    line = json.loads(JsonFormatter().format(record))
    assert line["method"] == "GET"
    assert line["path"] == "/fhir/Task"
    assert line["query_keys"] == "owner,_count,as"
    assert line["status"] == 200
    assert line["client_id"] == "client-7"
    assert isinstance(line["duration_ms"], float)
    assert "secret-org" not in json.dumps(line)


def test_both_formats_carry_the_same_fields_in_utc_with_milliseconds() -> None:
    record = logging.LogRecord("herald.x", logging.WARNING, "", 0, "moved to %s", ("error",), None)
    record.subscription_id = "s1"
    record.reason = 'HTTP 500 "busy"'
    record.color_message = "\x1b[31mcolour\x1b[0m"
    as_json = json.loads(JsonFormatter().format(record))
    assert as_json["time"].endswith("Z") and len(as_json["time"]) == len("2026-01-01T00:00:00.000Z")
    assert as_json["message"] == "moved to error"
    assert (as_json["subscription_id"], as_json["reason"]) == ("s1", 'HTTP 500 "busy"')
    assert "color_message" not in as_json
    text = TextFormatter().format(record)
    assert text.startswith(as_json["time"] + " WARNING herald.x: moved to error ")
    assert text.endswith('subscription_id=s1 reason="HTTP 500 \\"busy\\""')
    assert "\x1b" not in text and "\n" not in text


async def _create(request: Request) -> PlainTextResponse:
    request.state.client_id = "c1"
    return PlainTextResponse("", status_code=201, headers={"Location": "/fhir/Task/t9/_history/1"})


async def test_the_audit_line_is_written_as_the_access_log_sees_the_request_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    stamp_request_ids()
    app = Starlette(routes=[Route("/fhir/Task", _create, methods=["POST"])])
    app.add_middleware(AccessLog, answered=audit.record)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://herald.test") as client:
        await client.post("/fhir/Task", headers={"X-Request-ID": "r-1"}, content=b"{}")
        await client.post("/elsewhere", headers={"X-Request-ID": "r-2"})
    lines = [r for r in caplog.records if r.name in ("herald.audit", "herald.access")]
    assert [r.name for r in lines] == ["herald.audit", "herald.access", "herald.access"]
    entry = lines[0].__dict__
    assert lines[0].getMessage() == "create Task/t9 201 by c1"
    assert (entry["request_id"], entry["status"], entry["client_id"]) == ("r-1", 201, "c1")
