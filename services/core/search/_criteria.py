"""Conditions and criteria, and the parsers for search queries and backport filter strings."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from herald.core.errors import SearchParameterError
from herald.core.search._date import compile_date
from herald.core.search._parameters import PARAMETERS, SearchParameter
from herald.core.search._reference import applicable, compile_reference
from herald.core.search._string import compile_string
from herald.core.search._token import compile_token
from herald.core.search._uri import compile_uri
from herald.core.search._values import Predicate, resolve, split_unescaped
from herald.core.types import JsonObject

_COMPILERS: Mapping[str, Callable[[SearchParameter, str | None, tuple[str, ...]], Predicate]] = {
    "date": compile_date,
    "reference": compile_reference,
    "string": compile_string,
    "token": compile_token,
    "uri": compile_uri,
}

# Spellings seen in the wild for real parameter names (HRex's polling text writes `_lastupdated`).
_ALIASES = {"_lastupdated": "_lastUpdated"}

_TYPE_PREFIX = re.compile(r"(?P<type>[A-Z][A-Za-z]*)\.(?P<rest>.*)", re.DOTALL)


def _compile_missing(parameter: SearchParameter, values: tuple[str, ...]) -> Predicate:
    if values not in (("true",), ("false",)):
        raise SearchParameterError(
            f"':missing' on search parameter '{parameter.name}' takes one value, true or false, "
            f"not {','.join(values)!r}"
        )
    missing = values == ("true",)
    return lambda elements, now: (not elements) == missing


@dataclass(frozen=True)
class Condition:
    """One search parameter with its modifier and OR'ed values, compiled when created."""

    parameter: SearchParameter
    modifier: str | None
    # In FHIR search syntax, split on unescaped commas with the backslash escapes kept
    # (`a\,b` stays one value), so that ",".join(values) gives the original value back.
    values: tuple[str, ...]
    _predicate: Predicate = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        values = tuple(self.values)
        object.__setattr__(self, "values", values)
        name = self.parameter.name
        if not values or any(not value.strip() for value in values):
            raise SearchParameterError(f"Search parameter '{name}' has an empty value")
        if self.modifier == "":
            raise SearchParameterError(f"Search parameter '{name}' has an empty modifier")
        if self.modifier == "missing":
            predicate = _compile_missing(self.parameter, values)
        else:
            predicate = _COMPILERS[self.parameter.type](self.parameter, self.modifier, values)
        object.__setattr__(self, "_predicate", predicate)

    def elements(self, resource: JsonObject) -> list[Any]:
        """The values this condition looks at in a resource."""
        found = resolve(resource, self.parameter.path)
        if self.parameter.type == "reference":
            return applicable(self.parameter, found)
        return found

    def matches(
        self,
        resource: JsonObject,
        *,
        now: datetime | None = None,
        cache: dict[str, list[Any]] | None = None,
    ) -> bool:
        """Whether the resource satisfies this condition (`now`: for `ap` dates; default: now).

        `cache`: the elements found per parameter name in this same resource, filled as
        conditions are tested, so that many criteria tested on one resource (the matcher's
        candidates) look each parameter up once.
        """
        if cache is None:
            return self._predicate(self.elements(resource), now)
        name = self.parameter.name
        elements = cache.get(name)
        if elements is None:
            elements = cache[name] = self.elements(resource)
        return self._predicate(elements, now)

    def __str__(self) -> str:
        modifier = "" if self.modifier is None else f":{self.modifier}"
        return f"{self.parameter.name}{modifier}={','.join(self.values)}"


@dataclass(frozen=True)
class Criteria:
    """Conditions on one resource type, all of which must hold."""

    resource_type: str
    conditions: tuple[Condition, ...] = ()

    def matches(
        self,
        resource: JsonObject,
        *,
        now: datetime | None = None,
        cache: dict[str, list[Any]] | None = None,
    ) -> bool:
        """Whether the resource is of this type and satisfies every condition (`cache`: see
        `Condition.matches`; only for one resource)."""
        kind = resource.get("resourceType")
        if kind is not None and kind != self.resource_type:
            return False
        for condition in self.conditions:
            if not condition.matches(resource, now=now, cache=cache):
                return False
        return True

    def names(self) -> frozenset[str]:
        """The names of the parameters used."""
        return frozenset(condition.parameter.name for condition in self.conditions)

    def __str__(self) -> str:
        return f"{self.resource_type}?{'&'.join(str(c) for c in self.conditions)}"


def _parameters(resource_type: str) -> Mapping[str, SearchParameter]:
    parameters = PARAMETERS.get(resource_type)
    if parameters is None:
        known = ", ".join(sorted(PARAMETERS))
        raise SearchParameterError(
            f"Searching resource type {resource_type!r} is not supported (supported: {known})"
        )
    return parameters


def _without_type(resource_type: str, text: str) -> str:
    """Drop a leading `Type?`, which must name the resource type searched."""
    head, question_mark, tail = text.partition("?")
    if not question_mark or "=" in head or "&" in head:
        return text
    if head and head != resource_type:
        raise SearchParameterError(
            f"Criteria {text!r} are for resource type {head!r}, not {resource_type!r}"
        )
    return tail


def _lookup(
    resource_type: str,
    parameters: Mapping[str, SearchParameter],
    name: str,
    allowed: Collection[str] | None,
) -> SearchParameter:
    canonical = _ALIASES.get(name, name)
    if "." in name:
        raise SearchParameterError(
            f"Chained search parameters are not supported ({name!r} on {resource_type})"
        )
    if allowed is not None and canonical not in allowed and name not in allowed:
        raise SearchParameterError(
            f"Filtering on '{name}' is not allowed here; allowed: {', '.join(sorted(allowed))}"
        )
    parameter = parameters.get(canonical)
    if parameter is None:
        raise SearchParameterError(
            f"Unknown search parameter '{name}' for {resource_type}; "
            f"known: {', '.join(sorted(parameters))}"
        )
    return parameter


def _parse(
    resource_type: str, text: str, allowed: Collection[str] | None, *, dotted: bool
) -> Criteria:
    parameters = _parameters(resource_type)
    conditions: list[Condition] = []
    for segment in _without_type(resource_type, text.strip()).split("&"):
        if not segment:
            continue  # tolerate "a=b&" and "a=b&&c=d"
        raw_name, equals, raw_value = segment.partition("=")
        if not equals:
            raise SearchParameterError(f"Search parameter {segment!r} has no '=' and value")
        name = unquote(raw_name)
        if dotted and (match := _TYPE_PREFIX.fullmatch(name)):
            if match["type"] != resource_type:
                raise SearchParameterError(
                    f"Filter {segment!r} is for resource type {match['type']!r}, "
                    f"not {resource_type!r}"
                )
            name = match["rest"]
        name, colon, modifier = name.partition(":")
        parameter = _lookup(resource_type, parameters, name, allowed)
        values = tuple(split_unescaped(unquote(raw_value), ","))
        conditions.append(Condition(parameter, modifier if colon else None, values))
    return Criteria(resource_type, tuple(conditions))


def parse_query(
    resource_type: str, query: str, *, allowed: Collection[str] | None = None
) -> Criteria:
    """Parse 'a=b&c:mod=d' (URL-decoded values; optional leading 'Type?')."""
    return _parse(resource_type, query, allowed, dotted=False)


def parse_filter(
    resource_type: str, text: str, *, allowed: Collection[str] | None = None
) -> Criteria:
    """Parse a backport filter-criteria string: 'Type?p=v', 'Type.p=v' or 'p=v', '&'-joined."""
    if not text.strip():
        raise SearchParameterError("Filter criteria are empty")
    criteria = _parse(resource_type, text, allowed, dotted=True)
    if not criteria.conditions:
        raise SearchParameterError(f"Filter criteria {text!r} name no search parameter")
    return criteria
