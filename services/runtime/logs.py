"""Logging setup: one record per line, JSON in deployment, key=value text for people.

Both formats carry the same fields: UTC time with milliseconds, level, logger, message, the
fields passed in `extra`, and the request id of the work being done (see `request_id`).
"""

from __future__ import annotations

import logging
import re
import sys
import time
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from itertools import islice
from types import TracebackType
from typing import Any

import orjson
from sqlalchemy.exc import StatementError

from herald.core.fhir import utc_second

# A log record's message and its exception text are cut to these many characters: one bad
# request or a poisoned event must not fill the disk.
MAX_MESSAGE = 2000
MAX_EXCEPTION = 8000
# Frames of a traceback kept (the innermost ones).
MAX_FRAMES = 12

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
Fields = dict[str, object]


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
    return utc_second(whole) + _MILLISECONDS[micros // 1000]


def _head_fields(created: float, level: str, name: str, message: str) -> dict[str, object]:
    return {
        "time": utc_time(created),
        "level": level,
        "logger": name,
        "message": _cut(message, MAX_MESSAGE),
    }


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields = _head_fields(record.created, record.levelname, record.name, record.getMessage())
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

    def line(self, created: float, level: str, name: str, message: str, fields: Fields) -> str:
        """The line `format` writes for a record of these and these `extra` fields (see
        log_line), without the record."""
        entry = _head_fields(created, level, name, message)
        entry.update(fields)
        return orjson.dumps(entry, default=str).decode()


_NEEDS_QUOTES = re.compile(r'[ "=\n\t]')
# Types whose str() never needs quotes (no space, quote, equals sign or control character).
_BARE = frozenset({int, float, bool})
# Fields of the line's head: a field of `extra` by one of these names takes its place there.
_HEAD = frozenset({"time", "level", "logger", "message", "exception"})


def _text_head(created: float, level: str, name: str, message: str) -> str:
    message = _cut(message, MAX_MESSAGE).replace("\n", "\\n")
    return f"{utc_time(created)} {level:<7} {name}: {message}"


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
        line = [_text_head(record.created, record.levelname, record.name, record.getMessage())]
        for key, value in items:
            if key in _STANDARD or value is None:
                continue
            if key in _HEAD:
                return self._format_fields(record)
            line.append(f"{key}={_text_value(value)}")
        if record.exc_info:
            line.append(f"exception={_text_value(self.formatException(record.exc_info))}")
        return " ".join(line)

    def line(self, created: float, level: str, name: str, message: str, fields: Fields) -> str:
        """The line `format` writes for a record of these and these `extra` fields (see
        log_line), without the record."""
        line = [_text_head(created, level, name, message)]
        line.extend(f"{k}={_text_value(v)}" for k, v in fields.items() if v is not None)
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


# The handler `configure` installed: log_line writes to it directly when it is the only one.
_own: logging.StreamHandler[Any] | None = None
_FORMATTERS = (TextFormatter, JsonFormatter)


def _sole_handler(logger: logging.Logger, level: int) -> logging.StreamHandler[Any] | None:
    """Herald's own handler when a record of this logger and level would reach it and nothing
    else would look at the record: no filter, no other handler, no other record factory, logger
    class or formatter; else None."""
    own = _own
    if (
        own is None
        or logger.filters
        or type(logger) is not logging.Logger
        or level < own.level
        or own.filters
        or type(own.formatter) not in _FORMATTERS
        or logging.getLogRecordFactory() is not _record_with_request_id
    ):
        return None
    current: logging.Logger | None = logger
    while current is not None and not current.handlers:
        current = current.parent if current.propagate else None
    if current is None or len(current.handlers) != 1 or current.handlers[0] is not own:
        return None  # none (logging's last resort), or another one
    while current.propagate and current.parent is not None:
        current = current.parent
        if current.handlers:
            return None
    return own


def log_line(logger: logging.Logger, level: int, fields: Fields, msg: str, *args: object) -> None:
    """`logger.log(level, msg, *args, extra=fields)` of an enabled level, written without the
    LogRecord and the handler chain when the record would only reach Herald's own handler: the
    same line from the same values (`fields` are named neither like a LogRecord's attributes nor
    like the line's head; `args` are positional). Any other handler (pytest's caplog, one an
    embedding application adds) gets the record as logging makes it."""
    handler = _sole_handler(logger, level)
    if handler is None:
        logger.log(level, msg, *args, extra=fields)
        return
    created = time.time()
    current = request_id.get()
    # Where the record factory puts the request id: before the `extra` fields.
    values = fields if current is None else {"request_id": current, **fields}
    formatter: TextFormatter | JsonFormatter = handler.formatter  # type: ignore[assignment]
    with handler.lock:  # type: ignore[union-attr]
        try:
            line = formatter.line(
                created,
                logging.getLevelName(level),
                logger.name,
                msg % args if args else msg,
                values,
            )
            handler.stream.write(line + handler.terminator)
            handler.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 -- as StreamHandler.emit: reported, never raised
            record = logger.makeRecord(logger.name, level, "", 0, msg, args, None, extra=fields)
            handler.handleError(record)


def configure(level: str, fmt: str) -> None:
    """Configure the root logger once, at process start."""
    stamp_request_ids()
    # Neither format writes where a record was logged from, nor its thread or process: they
    # are not worked out for every record (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    global _own
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    _own = handler
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(str(level).upper())
    # httpx logs request URLs at INFO; endpoints may carry tokens, so the HTTP clients (aiohttp
    # is the sender's) say only warnings. Herald writes its own access log (herald.access)
    # instead of uvicorn's.
    for noisy in ("httpx", "httpcore", "aiohttp", "aiokafka", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
