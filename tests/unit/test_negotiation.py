"""Format negotiation (Accept) and the Last-Modified date, read once per header or second."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from herald.ingest.fhirhttp import _accepted_xml, http_date


@pytest.mark.parametrize(
    ("accept", "xml"),
    [
        ("", False),
        ("*/*", False),
        ("application/fhir+json", False),
        ("application/fhir+xml", True),
        ("application/fhir+json;q=0.5, application/fhir+xml", True),
        ("application/fhir+xml;q=0.1, application/json;q=0.9", False),
        ("text/html", False),  # a browser: answered in JSON
        ("image/png", None),
        ("application/fhir+xml;q=0", None),
    ],
)
def test_an_accept_header_chooses_the_format(accept: str, xml: bool | None) -> None:
    assert _accepted_xml(accept) is xml
    assert _accepted_xml(accept) is xml  # and again, from the cache


@pytest.mark.parametrize(
    "instant",
    [
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00.999Z",
        "2026-12-31T23:59:59.5+00:00",
        "2024-02-29T12:00:00.001Z",
    ],
)
def test_last_modified_is_the_instants_http_date(instant: str) -> None:
    expected = format_datetime(datetime.fromisoformat(instant), usegmt=True)
    assert http_date(instant) == expected
    assert http_date(instant) == expected


def test_an_instant_outside_utc_is_refused_as_before() -> None:
    with pytest.raises(ValueError):
        http_date("2026-01-01T01:00:00+01:00")


@pytest.mark.parametrize(
    "instant", ["2026-13-01T00:00:00.000Z", "2026-01-01T00:00:60.000Z", "2026-01-01T00:00:00.0a0Z"]
)
def test_an_invalid_instant_is_refused_in_any_form(instant: str) -> None:
    with pytest.raises(ValueError):
        http_date(instant)


def test_instants_of_the_same_second_share_their_text() -> None:
    rng = random.Random(15)
    for _ in range(2000):
        moment = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.uniform(0, 3e8))
        instant = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        assert http_date(instant) == format_datetime(moment.replace(microsecond=0), usegmt=True)
