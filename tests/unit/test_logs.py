"""Logs are bounded in size, never carry SQL statements or their parameters, and say when in UTC."""

from __future__ import annotations

import io
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import orjson
import pytest
from sqlalchemy.exc import OperationalError

from herald.runtime import logs
from herald.runtime.logs import (
    MAX_EXCEPTION,
    MAX_MESSAGE,
    JsonFormatter,
    TextFormatter,
    configure,
    log_line,
    request_id,
    utc_time,
)


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


def test_record_times_read_as_datetime_writes_them() -> None:
    def reference(created: float) -> str:
        return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"

    edges = [0.0, 1.9999995, 1.9999996, 1.0000005, 1764790000.9999999, 1764790000.0004995]
    rng = random.Random(15)
    # Around the rounding boundaries of microseconds and milliseconds, and anywhere.
    near = [
        1764790000 + rng.randrange(10**7) / 1e6 + rng.choice((0, 5e-7, -5e-7)) for _ in range(5000)
    ]
    anywhere = [rng.uniform(0, 4e9) for _ in range(5000)]
    for created in [*edges, *near, *anywhere]:
        assert utc_time(created) == reference(created), created


def test_a_text_line_is_written_as_from_its_fields() -> None:
    # TextFormatter writes a line straight from the record; _format_fields writes it from the
    # fields both formats share (and serves records with a field named like the head's).
    formatter = TextFormatter()
    plain = logging.LogRecord("herald.x", logging.INFO, "", 0, "a\nb %s", ("c d",), None)
    values: dict[str, object] = {"n": 3, "f": 1.5, "yes": True, "none": None, "empty": ""}
    values |= {"spaced": "a b", "quoted": 'x"y', "eq": "a=b", "tab": "\t", "obj": [1, "x"]}
    for record in (plain, _record("failed", OperationalError("SELECT 1", {}, Exception("x")))):
        for name, value in values.items():
            setattr(record, name, value)
        for extra in ({}, {"time": "then"}, {"level": 3}, {"logger": "l"}, {"exception": "e"}):
            for name, value in extra.items():
                setattr(record, name, value)
            assert formatter.format(record) == formatter._format_fields(record)
            for name in extra:
                delattr(record, name)
    line = formatter.format(plain)
    assert line.endswith(' n=3 f=1.5 yes=True empty="" spaced="a b" quoted="x\\"y" eq="a=b"'
                         ' tab="\\t" obj="[1, \'x\']"')  # fmt: skip
    assert " INFO    herald.x: a\\nb c d n=3" in line


@pytest.fixture(params=["text", "json"])
def configured(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    """Herald's logging as `configure` sets it up, writing into a string; restored after."""
    root = logging.getLogger()
    noisy = {name: logging.getLogger(name).level for name in ("httpx", "aiohttp", "alembic")}
    noisy |= {name: logging.getLogger(name).level for name in ("httpcore", "aiokafka")}
    noisy["uvicorn.access"] = logging.getLogger("uvicorn.access").level
    saved = (root.handlers[:], root.level, logging.getLogRecordFactory(), logging._srcfile)
    flags = (logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    configure("INFO", request.param)
    stream = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    try:
        yield stream
    finally:
        root.handlers[:], _, factory, logging._srcfile = saved
        root.setLevel(saved[1])
        logging.setLogRecordFactory(factory)
        logging.logThreads, logging.logProcesses, logging.logMultiprocessing = flags
        for name, level in noisy.items():
            logging.getLogger(name).setLevel(level)
        logs._own = None


@contextmanager
def _alone() -> Iterator[logging.Handler]:
    """Herald's handler the root logger's only one (pytest adds its own to every test)."""
    root = logging.getLogger()
    own = logs._own
    assert own is not None
    saved = root.handlers[:]
    root.handlers[:] = [own]
    try:
        yield own
    finally:
        root.handlers[:] = saved


_CASES: list[tuple[dict[str, object], str, tuple[object, ...]]] = [
    (
        {"method": "PUT", "path": "/fhir/Task/t1", "query_keys": "", "status": 201,
         "duration_ms": 1.5, "client_id": None},
        "request",
        (),
    ),
    (
        {"at": "2026-01-01T00:00:00.000Z", "client_id": "c 1", "interaction": "update",
         "resource_type": "Task", "resource_id": None, "status": 200},
        "%s %s/%s %s by %s",
        ("update", "Task", "-", 200, "c 1"),
    ),
    (
        {"quoted": 'x"y', "eq": "a=b", "tab": "\t", "obj": [1, "x"], "empty": "", "yes": True},
        "a\nb %s" + "x" * (MAX_MESSAGE + 10),
        ("c d",),
    ),
]  # fmt: skip


@pytest.mark.parametrize("rid", [None, "r-1"])
def test_a_line_written_directly_is_the_line_logging_writes(
    configured: io.StringIO, monkeypatch: pytest.MonkeyPatch, rid: str | None
) -> None:
    monkeypatch.setattr(time, "time", lambda: 1764790000.1234567)
    logger = logging.getLogger("herald.test.direct")
    token = request_id.set(rid)
    with _alone():
        for fields, msg, args in _CASES:
            for level in (logging.INFO, logging.WARNING):
                assert logs._sole_handler(logger, level) is logs._own
                log_line(logger, level, fields, msg, *args)
                direct = configured.getvalue()
                configured.seek(0)
                configured.truncate()
                logger.addFilter(bool)  # any filter: the record goes through logging
                try:
                    log_line(logger, level, fields, msg, *args)
                finally:
                    logger.removeFilter(bool)
                assert direct == configured.getvalue() and direct.endswith("\n")
                assert direct.count("\n") == 1 and ("r-1" in direct) == (rid is not None)
                configured.seek(0)
                configured.truncate()
    request_id.reset(token)


def test_any_other_handler_gets_the_record(configured: io.StringIO) -> None:
    logger = logging.getLogger("herald.test.sole")
    parent = logging.getLogger("herald.test")
    root = logging.getLogger()
    own = logs._own
    assert own is not None
    with _alone():
        _check_changes(logger, parent, root, own)


def _check_changes(
    logger: logging.Logger, parent: logging.Logger, root: logging.Logger, own: logging.Handler
) -> None:
    assert logs._sole_handler(logger, logging.INFO) is own
    formatter = own.formatter
    other = logging.NullHandler()
    changes: list[tuple[Callable[[], object], Callable[[], object]]] = [
        (lambda: root.addHandler(other), lambda: root.removeHandler(other)),
        (lambda: parent.addHandler(other), lambda: parent.removeHandler(other)),
        (lambda: logger.addHandler(own), lambda: logger.removeHandler(own)),
        (lambda: setattr(parent, "propagate", False), lambda: setattr(parent, "propagate", True)),
        (lambda: own.addFilter(bool), lambda: own.removeFilter(bool)),
        (lambda: logger.addFilter(bool), lambda: logger.removeFilter(bool)),
        (lambda: own.setLevel(logging.ERROR), lambda: own.setLevel(logging.NOTSET)),
        (lambda: own.setFormatter(logging.Formatter()), lambda: own.setFormatter(formatter)),
        (
            lambda: logging.setLogRecordFactory(logging.LogRecord),
            lambda: logging.setLogRecordFactory(logs._record_with_request_id),
        ),
    ]
    for change, undo in changes:
        change()
        try:
            assert logs._sole_handler(logger, logging.INFO) is None
        finally:
            undo()
        assert logs._sole_handler(logger, logging.INFO) is own


def test_a_failed_write_is_reported_as_logging_reports_it(
    configured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported: list[logging.LogRecord] = []
    own = logs._own
    assert own is not None
    monkeypatch.setattr(own, "handleError", reported.append)
    monkeypatch.setattr(configured, "write", _closed)
    with _alone():
        log_line(logging.getLogger("herald.test.broken"), logging.INFO, {"n": 1}, "a %s", "b")
    assert [(r.getMessage(), r.__dict__["n"]) for r in reported] == [("a b", 1)]


def _closed(_: str) -> int:
    raise ValueError("I/O operation on closed file")
