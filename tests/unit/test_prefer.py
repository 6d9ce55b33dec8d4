"""The Prefer header (RFC 7240): one reading for `return=` and `handling=`."""

from __future__ import annotations

import pytest

from herald.ingest.fhirhttp import preferences, return_preference
from herald.ingest.search import is_strict


@pytest.mark.parametrize(
    ("header", "strict", "returned"),
    [
        (None, False, "representation"),
        ("", False, "representation"),
        ("handling=strict", True, "representation"),
        ("return=minimal, handling=strict", True, "minimal"),
        ("return=minimal;handling=strict", True, "minimal"),
        ('Handling="strict" , RETURN=OperationOutcome', True, "OperationOutcome"),
        ("handling=lenient", False, "representation"),
        ("handling=lenient, handling=strict", False, "representation"),  # the first counts
        ("return=everything", False, "representation"),
        ("respond-async", False, "representation"),
    ],
)
def test_one_reading_of_prefer_for_return_and_handling(
    header: str | None, strict: bool, returned: str
) -> None:
    assert is_strict(header) is strict
    assert return_preference(header) == returned


def test_a_preference_without_a_value_is_present_and_empty() -> None:
    assert preferences("respond-async, wait=10") == {"respond-async": "", "wait": "10"}
