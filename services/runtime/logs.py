"""Logging setup: one record per line, JSON in deployment, key=value text for people.

Both formats carry the same fields: UTC time with milliseconds, level, logger, message, the
fields passed in `extra`, and the request id of the work being done (see `request_id`).
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from itertools import islice
from types import TracebackType
from typing import Any

import orjson
from sqlalchemy.exc import StatementError

# A log record's message and its exception text are cut to these many characters: one bad
# request or a poisoned event must not fill the disk.
MAX_MESSAGE = 2000
MAX_EXCEPTION = 8000
# Frames of a traceback kept (the innermost ones).
MAX_FRAMES = 12

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit} more)"


def _exception_message(exc: BaseException) -> str:
    """An exception's message without SQL statements or their parameters (SQLAlchemy puts
    both in its messages; the driver's own error says what went wrong)."""
    if isinstance(exc, StatementError):
        orig = exc.orig
        inner = f"{type(orig).__name__}: {str(orig).splitlines()[0] if str(orig) else ''}"
        return f"{type(exc).__name__} (statement not logged) from {inner}"
    return f"{type(exc).__name__}: {exc}"


def format_exception(exc_info: ExcInfo) -> str:
    """A bounded traceback: the innermost frames and each chained exception's safe message."""
    parts: list[str] = []
    seen: set[int] = set()
    exc: BaseException | None = exc_info[1]
    while exc is not None and id(exc) not in seen and len(seen) < 5:
        seen.add(id(exc))
        frames = traceback.format_tb(exc.__traceback__)[-MAX_FRAMES:]
        parts.append("".join(frames) + _cut(_exception_message(exc), MAX_MESSAGE))
        exc = exc.__cause__ or exc.__context__
    return _cut("\n-- caused by --\n".join(parts), MAX_EXCEPTION)


class _Bounded(logging.Formatter):
    """Tracebacks cut to size, SQL left out (messages are cut in `_fields`)."""

    def formatException(self, ei: Any) -> str:
        """See format_exception."""
        return format_exception(ei)


# Attributes every LogRecord has; anything else was passed in `extra` and is logged as a field.
_PLAIN_RECORD = logging.LogRecord("", 0, "", 0, "", None, None)
_STANDARD_SET_FIRST = len(_PLAIN_RECORD.__dict__)
_STANDARD = set(_PLAIN_RECORD.__dict__) | {
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


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


_MILLISECONDS = tuple(f".{ms:03d}Z" for ms in range(1000))


def utc_time(created: float) -> str:
    """A time.time() as UTC ISO 8601 with milliseconds (`2026-01-01T00:00:00.000Z`).

    The same text as datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
    which rounds to microseconds half to even first, with the date and time of the second
    worked out once per second rather than once per record, and the milliseconds' text once.
    """
    whole = int(created)  # toward zero, as math.modf splits
    micros = round((created - whole) * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    return _utc_second(whole) + _MILLISECONDS[micros // 1000]


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields: dict[str, object] = {
        "time": utc_time(record.created),
        "level": record.levelname,
        "logger": record.name,
        "message": _cut(record.getMessage(), MAX_MESSAGE),
    }
    items: Iterable[tuple[str, object]] = record.__dict__.items()
    if type(record) is logging.LogRecord:
        # A LogRecord sets its standard attributes first; `extra` and the request id come
        # after them, so only those few are looked at.
        items = islice(items, _STANDARD_SET_FIRST, None)
    fields.update({k: v for k, v in items if k not in _STANDARD})
    return fields


class JsonFormatter(_Bounded):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record."""
        entry = _fields(record)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


_NEEDS_QUOTES = re.compile(r'[ "=\n\t]')
# Types whose str() never needs quotes (no space, quote, equals sign or control character).
_BARE = frozenset({int, float, bool})
# Fields of the line's head: a field of `extra` by one of these names takes its place there.
_HEAD = frozenset({"time", "level", "logger", "message", "exception"})


def _text_value(value: object) -> str:
    if type(value) in _BARE:
        return str(value)
    text = str(value)
    if not text or _NEEDS_QUOTES.search(text):
        return orjson.dumps(text).decode()
    return text


class TextFormatter(_Bounded):
    """One line per record: time, level, logger, message, then the fields as key=value (those
    without a value left out)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record."""
        items: Iterable[tuple[str, object]] = record.__dict__.items()
        if type(record) is logging.LogRecord:
            items = islice(items, _STANDARD_SET_FIRST, None)  # as in _fields
        line = [
            f"{utc_time(record.created)} {record.levelname:<7} {record.name}: "
            + _cut(record.getMessage(), MAX_MESSAGE).replace("\n", "\\n")
        ]
        for key, value in items:
            if key in _STANDARD or value is None:
                continue
            if key in _HEAD:
                return self._format_fields(record)
            line.append(f"{key}={_text_value(value)}")
        if record.exc_info:
            line.append(f"exception={_text_value(self.formatException(record.exc_info))}")
        return " ".join(line)

    def _format_fields(self, record: logging.LogRecord) -> str:
        """The same line through _fields, for a record with a field named like the head's."""
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
    # Neither format writes where a record was logged from, nor its thread or process: they
    # are not worked out for every record (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(str(level).upper())
    # httpx logs request URLs at INFO; endpoints may carry tokens, so the HTTP clients (aiohttp
    # is the sender's) say only warnings. Herald writes its own access log (herald.access)
    # instead of uvicorn's.
    for noisy in ("httpx", "httpcore", "aiohttp", "aiokafka", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
