"""Reference search.

Matching rule: a reference is compared on its trailing `Type/id` when both the search value and
the resource's reference are FHIR REST references (relative `Type/id` or absolute
`http(s)://base/Type/id`); a `/_history/n` version is ignored on both sides. A relative
reference is taken to be on the local server, so it matches an absolute one with any base; two
absolute references must also share the base (scheme and host case-insensitive, trailing '/'
ignored). A plain `id` search value matches a REST reference of any (allowed) type with that id.
Other references (`urn:uuid:...`, `#contained`, non-REST URLs) match only literally.

A resource reference whose type (from `reference` or `Reference.type`) is outside the
parameter's target types is not a value of that parameter at all, so `patient` (Task.for where
it is a Patient) treats `for: Group/1` as missing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from herald.core.errors import SearchParameterError
from herald.core.search._parameters import SearchParameter
from herald.core.search._token import codes, parse_token
from herald.core.search._values import Predicate, unescape, unknown_modifier

MODIFIERS = ("missing", "identifier", "[type]")

_ID = r"[A-Za-z0-9\-.]{1,64}"
_TYPE = r"[A-Z][A-Za-z]+"
_HISTORY = rf"(?:/_history/{_ID})?"
_RELATIVE = re.compile(rf"(?P<type>{_TYPE})/(?P<id>{_ID}){_HISTORY}")
_ABSOLUTE = re.compile(rf"(?P<base>(?i:https?)://\S+?)/(?P<type>{_TYPE})/(?P<id>{_ID}){_HISTORY}/?")
_ID_ONLY = re.compile(_ID)
_TYPE_ONLY = re.compile(_TYPE)
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+")


@dataclass(frozen=True)
class _Ref:
    """A parsed reference; `id` is None unless it is a FHIR REST reference."""

    literal: str
    type: str | None = None
    id: str | None = None
    base: str | None = None  # normalised; None for relative references

    def matches(self, other: _Ref) -> bool:
        """Whether a search value (self) designates the same resource as another reference."""
        if self.id is None or other.id is None:
            return self.literal == other.literal
        if self.id != other.id or (self.type is not None and self.type != other.type):
            return False
        return self.base is None or other.base is None or self.base == other.base


def _base_key(base: str) -> str:
    parts = urlsplit(base)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


@lru_cache(maxsize=65536)
def _parse(reference: str) -> _Ref:
    """Parse a reference leniently (resources are data, not queries); memoised, as the
    matcher meets the same owners over and over."""
    if match := _RELATIVE.fullmatch(reference):
        return _Ref(reference, match["type"], match["id"])
    if match := _ABSOLUTE.fullmatch(reference):
        return _Ref(reference, match["type"], match["id"], _base_key(match["base"]))
    return _Ref(reference)


def normalize_reference(ref: str) -> str:
    """The trailing `Type/id` of a relative or absolute REST reference; anything else as given."""
    parsed = _parse(ref.strip())
    return f"{parsed.type}/{parsed.id}" if parsed.id is not None else parsed.literal


def _resource_ref(element: Any) -> _Ref | None:
    if isinstance(element, str):
        return _parse(element)
    if isinstance(element, dict) and isinstance(element.get("reference"), str):
        return _parse(element["reference"])
    return None


def _element_type(element: Any) -> str | None:
    parsed = _resource_ref(element)
    if parsed is not None and parsed.type is not None:
        return parsed.type
    declared = element.get("type") if isinstance(element, dict) else None
    # Reference.type may be a StructureDefinition URL for a resource type.
    return declared.rsplit("/", 1)[-1] if isinstance(declared, str) else None


def applicable(parameter: SearchParameter, elements: Sequence[Any]) -> list[Any]:
    """The elements that are values of this parameter: those of an allowed target type."""
    if not parameter.target_types:
        return list(elements)
    return [
        element
        for element in elements
        if (kind := _element_type(element)) is None or kind in parameter.target_types
    ]


def _malformed(parameter: SearchParameter, raw: str, why: str) -> SearchParameterError:
    return SearchParameterError(
        f"Malformed reference {raw!r} for search parameter '{parameter.name}': {why}"
    )


def _search_value(parameter: SearchParameter, resource_type: str | None, raw: str) -> _Ref:
    value = unescape(raw)
    if _ID_ONLY.fullmatch(value):
        literal = value if resource_type is None else f"{resource_type}/{value}"
        return _Ref(literal, resource_type, value)
    parsed = _parse(value)
    if parsed.id is None and (resource_type is not None or not _URI.fullmatch(value)):
        raise _malformed(parameter, raw, "expected Type/id, an id or an absolute URL")
    if resource_type is not None and parsed.type != resource_type:
        raise _malformed(
            parameter, raw, f"the modifier ':{resource_type}' asks for {resource_type}"
        )
    if parsed.type and parameter.target_types and parsed.type not in parameter.target_types:
        raise _malformed(
            parameter, raw, f"'{parsed.type}' is not a target type ({_targets(parameter)})"
        )
    return parsed


def _targets(parameter: SearchParameter) -> str:
    return ", ".join(parameter.target_types)


def _compile_identifier(parameter: SearchParameter, values: tuple[str, ...]) -> Predicate:
    tokens = tuple(parse_token(parameter, value) for value in values)

    def predicate(elements: Sequence[Any], now: datetime | None) -> bool:
        return any(
            token.matches(system, code)
            for element in elements
            if isinstance(element, dict)
            for system, code in codes(element.get("identifier"))
            for token in tokens
        )

    return predicate


def compile_reference(
    parameter: SearchParameter, modifier: str | None, values: tuple[str, ...]
) -> Predicate:
    """Compile a reference condition (any modifier but `:missing`)."""
    if modifier == "identifier":
        return _compile_identifier(parameter, values)
    if modifier is not None:
        if not _TYPE_ONLY.fullmatch(modifier):
            raise unknown_modifier(parameter, modifier, MODIFIERS)
        if parameter.target_types and modifier not in parameter.target_types:
            raise SearchParameterError(
                f"Type modifier ':{modifier}' is not a target of search parameter "
                f"'{parameter.name}' ({_targets(parameter)})"
            )
    wanted = tuple(_search_value(parameter, modifier, value) for value in values)

    def predicate(elements: Sequence[Any], now: datetime | None) -> bool:
        for element in elements:
            actual = _resource_ref(element)
            if actual is not None and any(value.matches(actual) for value in wanted):
                return True
        return False

    return predicate
