"""URI search: exact match, `:below` (a path prefix of the value) and `:above` (its reverse)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from herald.core.search._parameters import SearchParameter
from herald.core.search._values import Predicate, unescape, unknown_modifier

MODIFIERS = ("missing", "below", "above")


def is_below(uri: str, prefix: str) -> bool:
    """Whether uri equals prefix or continues it with more path segments."""
    if uri == prefix:
        return True
    return uri.startswith(prefix if prefix.endswith("/") else prefix + "/")


_TESTS: dict[str | None, Callable[[str, str], bool]] = {
    None: lambda resource, search: resource == search,
    "below": is_below,
    "above": lambda resource, search: is_below(search, resource),
}


def compile_uri(
    parameter: SearchParameter, modifier: str | None, values: tuple[str, ...]
) -> Predicate:
    """Compile a uri condition (any modifier but `:missing`)."""
    test = _TESTS.get(modifier)
    if test is None:
        raise unknown_modifier(parameter, modifier or "", MODIFIERS)
    uris = tuple(unescape(value) for value in values)

    def predicate(elements: Sequence[Any], now: datetime | None) -> bool:
        return any(
            test(element, uri) for element in elements if isinstance(element, str) for uri in uris
        )

    return predicate
