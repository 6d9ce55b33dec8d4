"""Logging setup: one record per line, JSON in deployment, key=value text for people.

Both formats carry the same fields: UTC time with milliseconds, level, logger, message, the
fields passed in `extra`, and the request id of the work being done (see `request_id`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

# Attributes every LogRecord has; anything else was passed in `extra` and is logged as a field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    # uvicorn repeats its message with ANSI colour escapes here.
    "color_message",
}

request_id: ContextVar[str | None] = ContextVar("herald_request_id", default=None)
"""The id of the request whose work is being done: a FHIR request, or the request a bus
record carries. Every record logged meanwhile carries it."""


@contextmanager
def logging_request(value: str | None) -> Iterator[None]:
    """Log what is done inside with this request id (when there is one)."""
    token = request_id.set(value)
    try:
        yield
    finally:
        request_id.reset(token)


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields: dict[str, object] = {
        "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6]
        + "Z",
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
    }
    fields.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record."""
        entry = _fields(record)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def _text_value(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n\t'):
        return orjson.dumps(text).decode()
    return text


class TextFormatter(logging.Formatter):
    """One line per record: time, level, logger, message, then the fields as key=value (those
    without a value left out)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record."""
        fields = _fields(record)
        head = f"{fields.pop('time')} {fields.pop('level'):<7} {fields.pop('logger')}:"
        message = str(fields.pop("message")).replace("\n", "\\n")
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        tail = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items() if v is not None)
        return f"{head} {message}" + (f" {tail}" if tail else "")


_plain_factory = logging.getLogRecordFactory()


def _record_with_request_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _plain_factory(*args, **kwargs)
    current = request_id.get()
    if current is not None:
        record.request_id = current
    return record


def stamp_request_ids() -> None:
    """Make every record carry the request id current where it is logged (idempotent)."""
    logging.setLogRecordFactory(_record_with_request_id)


def configure(level: str, fmt: str) -> None:
    """Configure the root logger once, at process start."""
    stamp_request_ids()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(str(level).upper())
    # httpx logs request URLs at INFO; endpoints may carry tokens. Herald writes its own
    # access log (herald.access) instead of uvicorn's.
    for noisy in ("httpx", "httpcore", "aiokafka", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
