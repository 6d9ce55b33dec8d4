"""Logs are bounded in size and never carry SQL statements or their parameters."""

from __future__ import annotations

import logging

import orjson
from sqlalchemy.exc import OperationalError

from herald.runtime.logs import MAX_EXCEPTION, MAX_MESSAGE, JsonFormatter


def _record(message: str, exc: Exception) -> logging.LogRecord:
    try:
        raise exc
    except Exception as raised:  # noqa: BLE001 -- any exception, to have its traceback
        info = (type(raised), raised, raised.__traceback__)
    return logging.LogRecord("t", logging.ERROR, __file__, 1, message, None, info)


def test_sql_and_its_parameters_stay_out_of_logs() -> None:
    statement = "SELECT secret_column FROM resources WHERE content = ?"
    error = OperationalError(statement, ("patient-name-" * 1000,), Exception("database is locked"))
    entry = orjson.loads(JsonFormatter().format(_record("search failed", error)))
    assert "SELECT" not in entry["exception"] and "patient-name" not in entry["exception"]
    assert "database is locked" in entry["exception"]


def test_huge_messages_and_exceptions_are_cut() -> None:
    entry = orjson.loads(JsonFormatter().format(_record("x" * 100_000, ValueError("y" * 100_000))))
    assert len(entry["message"]) < MAX_MESSAGE + 50
    assert len(entry["exception"]) < MAX_EXCEPTION + 50
