"""Token search on code, Coding, CodeableConcept, Identifier and boolean elements."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from herald.core.errors import SearchParameterError
from herald.core.search._parameters import SearchParameter
from herald.core.search._values import Predicate, fold, split_unescaped, unescape, unknown_modifier

MODIFIERS = ("missing", "not", "text")

_UNSUPPORTED = {
    "in": "ValueSet membership (':in') is not supported",
    "not-in": "ValueSet membership (':not-in') is not supported",
    "above": "subsumption (':above') is not supported",
    "below": "subsumption (':below') is not supported",
    "of-type": "':of-type' is not supported",
}


@dataclass(frozen=True)
class Token:
    """One token search value: `code`, `system|code`, `|code` or `system|`."""

    system: str | None  # None: any system; "": explicitly no system
    code: str | None  # None: any code in the system

    def matches(self, system: str | None, code: str | None) -> bool:
        """Whether a (system, code) pair found in a resource satisfies this value."""
        if self.code is not None and code != self.code:
            return False
        if self.system is None:
            return True
        if self.system == "":
            return not system
        return system == self.system


def parse_token(parameter: SearchParameter, raw: str) -> Token:
    """Parse one escaped token value."""
    parts = split_unescaped(raw, "|")
    if len(parts) == 1:
        return Token(None, unescape(raw))
    if len(parts) > 2:
        raise SearchParameterError(
            f"Malformed token {raw!r} for search parameter '{parameter.name}': "
            "more than one '|' (escape a literal '|' as '\\|')"
        )
    system, code = unescape(parts[0]), unescape(parts[1])
    if not system and not code:
        raise SearchParameterError(
            f"Malformed token {raw!r} for search parameter '{parameter.name}': "
            "expected code, system|code, |code or system|"
        )
    return Token(system, code or None)


def codes(
    element: Any, implied_system: str | None = None
) -> Iterator[tuple[str | None, str | None]]:
    """The (system, code) pairs of an element, whatever its token-able type."""
    if isinstance(element, bool):
        yield None, "true" if element else "false"
    elif isinstance(element, str):
        yield implied_system, element
    elif isinstance(element, dict):
        if "coding" in element or ("text" in element and "code" not in element):
            for coding in element.get("coding") or ():
                if isinstance(coding, dict):
                    yield coding.get("system"), coding.get("code")
        elif "code" in element or "value" not in element:
            yield element.get("system"), element.get("code")
        else:  # Identifier (or ContactPoint)
            yield element.get("system"), element.get("value")


def _texts(element: Any) -> Iterator[str]:
    """The human-readable texts `:text` searches: CodeableConcept.text and Coding.display."""
    if not isinstance(element, dict):
        return
    for key in ("text", "display"):
        if isinstance(element.get(key), str):
            yield element[key]
    for coding in element.get("coding") or ():
        if isinstance(coding, dict) and isinstance(coding.get("display"), str):
            yield coding["display"]
    if "value" in element and "code" not in element:  # Identifier: its type's text
        yield from _texts(element.get("type"))


def _compile_text(values: tuple[str, ...]) -> Predicate:
    # A value matches a text when it starts the text or any word of it (after folding).
    patterns = [re.compile(r"(?:^|\W)" + re.escape(fold(unescape(value)))) for value in values]

    def predicate(elements: Sequence[Any], now: datetime | None) -> bool:
        return any(
            pattern.search(fold(text))
            for element in elements
            for text in _texts(element)
            for pattern in patterns
        )

    return predicate


def compile_token(
    parameter: SearchParameter, modifier: str | None, values: tuple[str, ...]
) -> Predicate:
    """Compile a token condition (any modifier but `:missing`)."""
    if modifier == "text":
        return _compile_text(values)
    if modifier in _UNSUPPORTED:
        raise SearchParameterError(
            f"{_UNSUPPORTED[modifier]} (search parameter '{parameter.name}')"
        )
    if modifier not in (None, "not"):
        raise unknown_modifier(parameter, modifier, MODIFIERS)
    tokens = tuple(parse_token(parameter, value) for value in values)
    implied = parameter.implied_system

    def found(elements: Sequence[Any]) -> bool:
        return any(
            token.matches(system, code)
            for element in elements
            for system, code in codes(element, implied)
            for token in tokens
        )

    if modifier == "not":
        # FHIR R4: `:not` negates the whole comma list, and an absent element matches.
        return lambda elements, now: not found(elements)
    return lambda elements, now: found(elements)
