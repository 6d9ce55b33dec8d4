"""Logs are bounded in size, never carry SQL statements or their parameters, and say when in UTC."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime

import orjson
from sqlalchemy.exc import OperationalError

from herald.runtime.logs import MAX_EXCEPTION, MAX_MESSAGE, JsonFormatter, TextFormatter, utc_time


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
