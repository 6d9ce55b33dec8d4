"""FHIR instants as Herald writes them: UTC, milliseconds (truncated), a Z zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from herald.core.fhir import format_instant


@pytest.mark.parametrize(
    ("moment", "written"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, 999_999, tzinfo=UTC), "2026-01-02T03:04:05.999Z"),
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05.000Z"),
        (
            datetime(2026, 1, 1, 1, 0, 0, 1_500, tzinfo=timezone(timedelta(hours=5))),
            "2025-12-31T20:00:00.001Z",
        ),
        (datetime(999, 5, 6, 7, 8, 9, tzinfo=UTC), "0999-05-06T07:08:09.000Z"),
    ],
)
def test_an_instant_is_utc_with_milliseconds(moment: datetime, written: str) -> None:
    assert format_instant(moment) == written
