"""String search: case- and accent-insensitive "starts with", `:exact` and `:contains`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from herald.core.search._parameters import SearchParameter
from herald.core.search._values import Predicate, fold, unescape, unknown_modifier

MODIFIERS = ("missing", "exact", "contains")

# Parts of complex types (HumanName, Address, ...) that are not text to search.
_NOT_TEXT = frozenset({"extension", "id", "period", "system", "type", "use"})


def _strings(element: Any) -> Iterator[str]:
    """The strings of an element; for a complex type, those of its parts (name.given, ...)."""
    if isinstance(element, str):
        yield element
    elif isinstance(element, list):
        for item in element:
            yield from _strings(item)
    elif isinstance(element, dict):
        for key, value in element.items():
            if key not in _NOT_TEXT and not key.startswith("_"):
                yield from _strings(value)


def compile_string(
    parameter: SearchParameter, modifier: str | None, values: tuple[str, ...]
) -> Predicate:
    """Compile a string condition (any modifier but `:missing`)."""
    texts = tuple(unescape(value) for value in values)
    if modifier == "exact":

        def test(text: str) -> bool:
            return text in texts

    elif modifier == "contains":
        folded = tuple(fold(value) for value in texts)

        def test(text: str) -> bool:
            candidate = fold(text)
            return any(value in candidate for value in folded)

    elif modifier is None:
        prefixes = tuple(fold(value) for value in texts)

        def test(text: str) -> bool:
            return fold(text).startswith(prefixes)

    else:
        raise unknown_modifier(parameter, modifier, MODIFIERS)

    def predicate(elements: Sequence[Any], now: datetime | None) -> bool:
        return any(test(text) for element in elements for text in _strings(element))

    return predicate
