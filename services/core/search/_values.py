"""What the parameter types share: FHIR search escapes, element paths and text folding."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from herald.core.errors import SearchParameterError
from herald.core.search._parameters import SearchParameter
from herald.core.types import JsonObject

# A compiled condition: given the values found at the parameter's path (and the time to call
# "now" for `ap` dates), whether the condition holds.
Predicate = Callable[[Sequence[Any], datetime | None], bool]

_ESCAPE = re.compile(r"\\([,$|\\])")


def split_unescaped(text: str, separator: str) -> list[str]:
    """Split text on each separator not escaped by a backslash, keeping the escapes."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            current.append(char + next(chars, ""))
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    """Undo the FHIR search escapes `\\,` `\\$` `\\|` and `\\\\`."""
    return _ESCAPE.sub(r"\1", text)


def fold(text: str) -> str:
    """Text without case or accents, for FHIR's case- and accent-insensitive string matching."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()


def _present(item: Any) -> bool:
    return item is not None and item != "" and item != {}


def resolve(resource: JsonObject, path: str) -> list[Any]:
    """The non-empty values at a dotted path; lists along the way are flattened."""
    if "." not in path:  # the common case (status, owner, code), on the matcher's hot path
        value = resource.get(path)
        if isinstance(value, list):
            return [item for item in value if _present(item)]
        return [value] if _present(value) else []
    items: list[Any] = [resource]
    for key in path.split("."):
        found: list[Any] = []
        for item in items:
            if isinstance(item, dict):
                value = item.get(key)
                found.extend(value if isinstance(value, list) else [value])
        items = found
    return [item for item in items if _present(item)]


def unknown_modifier(
    parameter: SearchParameter, modifier: str, supported: Iterable[str]
) -> SearchParameterError:
    """The error for a modifier a parameter type does not define."""
    listed = ", ".join(f":{name}" for name in supported)
    return SearchParameterError(
        f"Unknown modifier ':{modifier}' on {parameter.type} search parameter "
        f"'{parameter.name}'; supported: {listed}"
    )
