"""Retry-After: delta-seconds or an HTTP-date, anything else ignored."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta

import pytest

from herald.runtime.sender import retry_after_seconds


@pytest.mark.parametrize(
    ("value", "expected"),
    [("120", 120.0), (" 0 ", 0.0), (None, None), ("", None), ("soon", None), ("-5", None)],
)
def test_delta_seconds(value: str | None, expected: float | None) -> None:
    assert retry_after_seconds(value) == expected


def test_an_http_date_gives_the_seconds_until_it() -> None:
    later = datetime.now(UTC) + timedelta(seconds=90)
    seconds = retry_after_seconds(email.utils.format_datetime(later, usegmt=True))
    assert seconds is not None and 85 <= seconds <= 90


def test_a_past_date_means_now() -> None:
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_a_date_without_zone_is_read_as_utc() -> None:
    later = (datetime.now(UTC) + timedelta(seconds=60)).strftime("%a, %d %b %Y %H:%M:%S")
    seconds = retry_after_seconds(later)
    assert seconds is not None and 55 <= seconds <= 60
