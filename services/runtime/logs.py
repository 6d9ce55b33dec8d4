"""Logging setup: JSON lines in deployment, plain text for people."""

from __future__ import annotations

import logging
import sys
import traceback
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
    """Messages and tracebacks cut to size, SQL left out."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The record's message, cut to MAX_MESSAGE."""
        record.message = _cut(record.message, MAX_MESSAGE)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        """See format_exception."""
        return format_exception(ei)


# Attributes every LogRecord has; anything else was passed in `extra` and is logged as a field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(_Bounded):
    """One JSON object per line with time, level, logger, message and the `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record."""
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": _cut(record.getMessage(), MAX_MESSAGE),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(level: str, fmt: str) -> None:
    """Configure the root logger once, at process start."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_Bounded("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs request URLs at INFO; endpoints may carry tokens.
    for noisy in ("httpx", "httpcore", "aiokafka", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
