"""Search semantics in a form a database can evaluate: index entries and decomposed search values.

`index_entries` turns one resource into the rows a database search looks at (one per token
pair, reference and date range of each indexed parameter; for `:missing`, a parameter that has
elements but no value row in its table gets one all-empty "present" row instead). `_id` has no
rows: a search reads the resource's own id column (see `ID`). `search_values` takes a parsed
`Condition` apart into the values a SQL clause compares those rows with. Both use the same
helpers as the in-memory predicates (`codes`, `applicable`, `_resource_ref`, `parse_token`,
`_element_range`), so that the database search and `Condition.matches` mean the same thing;
the agreement test checks it.

An entry's `present` row has every value column empty, and no search value can match an empty
column: a token value always names a code or a system, a reference value a literal, and a date
comparison with an empty range is false (SQL NULL). So `:missing` asks whether the parameter has
any row at all; a value row says "present" as well as a present row would (half the rows of a
typical Task, written on every version, are spared that way).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from herald.core.errors import SearchParameterError
from herald.core.search._criteria import Condition
from herald.core.search._date import (
    _APPROXIMATION_FLOOR,
    DateRange,
    _element_range,
    _plus,
    _search_value,
)
from herald.core.search._parameters import SearchParameter
from herald.core.search._reference import _resource_ref, applicable
from herald.core.search._reference import _search_value as _reference_value
from herald.core.search._token import Token, codes, parse_token
from herald.core.search._uri import MODIFIERS as URI_MODIFIERS
from herald.core.search._uri import is_below
from herald.core.search._values import resolve, unescape, unknown_modifier
from herald.core.types import JsonObject

ID = "_id"
"""The parameter searched on the resource's id column, not on index rows (every resource has
exactly one id, so the index would only repeat it)."""

IDENTIFIER = ":identifier"
"""Suffix of the pseudo-parameter holding a reference parameter's `Reference.identifier` tokens."""


# Named tuples, not dataclasses: a few are made and hashed on every write (a dataclass
# instance cost four times as much), and their fields are the index rows' columns in order.
class TokenEntry(NamedTuple):
    """A (system, code) pair of a token parameter; both None on the `present` row."""

    param: str
    system: str | None
    code: str | None


class ReferenceEntry(NamedTuple):
    """A reference value; every field None on the `present` row."""

    param: str
    literal: str | None
    type: str | None
    id: str | None
    base: str | None


class DateEntry(NamedTuple):
    """A date range as fixed-width UTC text (sortable); both None on the `present` row."""

    param: str
    low: str | None
    high: str | None


@dataclass(frozen=True)
class IndexEntries:
    """Every index entry of one resource."""

    tokens: tuple[TokenEntry, ...]
    references: tuple[ReferenceEntry, ...]
    dates: tuple[DateEntry, ...]


def instant_key(moment: datetime) -> str:
    """A UTC moment as fixed-width text that sorts like the moment (year 1 to 9999)."""
    if moment.tzinfo is UTC:  # every range of an index entry: isoformat ends in "+00:00"
        return moment.isoformat(timespec="microseconds")[:-6]
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def _elements(parameter: SearchParameter, resource: JsonObject) -> list[object]:
    found = resolve(resource, parameter.path)
    return applicable(parameter, found) if parameter.type == "reference" else found


class IndexPlan:
    """The indexed parameters of a type by the top-level element their path starts at, so that
    indexing a resource looks only at the parameters of the elements it has (most name an
    element a resource does not have, and every version of a Task is indexed)."""

    def __init__(self, parameters: Iterable[SearchParameter]) -> None:
        self._by_root: dict[str, list[tuple[SearchParameter, str | None]]] = {}
        for parameter in parameters:
            if parameter.name != ID:
                root, _, rest = parameter.path.partition(".")
                second = rest.partition(".")[0] or None
                self._by_root.setdefault(root, []).append((parameter, second))

    def candidates(self, resource: JsonObject) -> Iterator[SearchParameter]:
        """The parameters whose path's first two steps find something in the resource."""
        for key, value in resource.items():
            for parameter, second in self._by_root.get(key, ()):
                if second is None or not isinstance(value, dict) or second in value:
                    yield parameter


def index_entries(
    resource: JsonObject, parameters: Iterable[SearchParameter] | IndexPlan
) -> IndexEntries:
    """The index entries of a resource for the given (token, reference, date, uri) parameters."""
    if not isinstance(parameters, IndexPlan):
        parameters = IndexPlan(parameters)
    tokens: dict[TokenEntry, None] = {}
    references: dict[ReferenceEntry, None] = {}
    dates: dict[DateEntry, None] = {}
    for parameter in parameters.candidates(resource):
        elements = _elements(parameter, resource)
        if not elements:
            continue
        name = parameter.name
        if parameter.type == "token":
            found = len(tokens)
            for element in elements:
                if isinstance(element, str):  # a code (status, intent): what codes() yields
                    tokens[TokenEntry(name, parameter.implied_system, element)] = None
                    continue
                for system, code in codes(element, parameter.implied_system):
                    if system is not None or code is not None:
                        tokens[TokenEntry(name, system, code)] = None
            if len(tokens) == found:
                tokens[TokenEntry(name, None, None)] = None
        elif parameter.type == "reference":
            found = len(references)
            for element in elements:
                ref = _resource_ref(element)
                if ref is not None:
                    references[ReferenceEntry(name, ref.literal, ref.type, ref.id, ref.base)] = None
                if isinstance(element, dict):
                    for system, code in codes(element.get("identifier")):
                        if system is not None or code is not None:
                            tokens[TokenEntry(name + IDENTIFIER, system, code)] = None
            if len(references) == found:
                references[ReferenceEntry(name, None, None, None, None)] = None
        elif parameter.type == "uri":
            # A uri is stored as a token without a system (its own kind of search value below).
            found = len(tokens)
            for element in elements:
                if isinstance(element, str):
                    tokens[TokenEntry(name, None, element)] = None
            if len(tokens) == found:
                tokens[TokenEntry(name, None, None)] = None
        elif parameter.type == "date":
            found = len(dates)
            for element in elements:
                span = _element_range(element)
                if span is not None:
                    dates[DateEntry(name, instant_key(span.low), instant_key(span.high))] = None
            if len(dates) == found:
                dates[DateEntry(name, None, None)] = None
        else:
            raise ValueError(f"{parameter.type} parameters are not indexed ({name})")
    return IndexEntries(tuple(tokens), tuple(references), tuple(dates))


@dataclass(frozen=True)
class ReferenceValue:
    """A reference search value: matches by (type, id, base) or, without an id, by literal."""

    literal: str
    type: str | None
    id: str | None
    base: str | None


@dataclass(frozen=True)
class DateValue:
    """A date search value: its prefix and range (as `instant_key` text and as datetimes)."""

    prefix: str
    range: DateRange

    @property
    def low(self) -> str:
        """The start of the range as index text."""
        return instant_key(self.range.low)

    @property
    def high(self) -> str:
        """The end of the range as index text."""
        return instant_key(self.range.high)

    def approximate(self, now: datetime) -> tuple[str, str]:
        """For `ap`: the widened (low, high) a resource's range must overlap (see `_date`)."""
        margin = max(abs(now - self.range.low) / 10, _APPROXIMATION_FLOOR)
        return instant_key(_plus(self.range.low, -margin)), instant_key(
            _plus(self.range.high, margin)
        )


@dataclass(frozen=True)
class UriValue:
    """A uri search value: equal to `uri`, or (`:below`) under it, or (`:above`) one of `above`."""

    uri: str
    below: bool = False
    above: tuple[str, ...] = ()


def _uri_value(modifier: str | None, text: str) -> UriValue:
    uri = unescape(text)
    if modifier == "below":
        return UriValue(uri, below=True)
    if modifier == "above":
        # The stored uris `is_below` would accept: the value and each of its path prefixes,
        # with and without the slash that ends them.
        cuts = [i for i, char in enumerate(uri) if char == "/"]
        prefixes = {uri} | {uri[:i] for i in cuts} | {uri[: i + 1] for i in cuts}
        return UriValue(uri, above=tuple(sorted(p for p in prefixes if is_below(uri, p))))
    return UriValue(uri)


# Modifiers the in-memory search has and a database search has not (it keeps no text).
DATABASE_UNSUPPORTED_MODIFIERS = frozenset({"text"})


@dataclass(frozen=True)
class SearchValues:
    """A condition taken apart: which index table and param, and the OR'ed values."""

    kind: str  # "token", "reference", "date", "uri" or "missing"
    param: str  # the index param name (`owner:identifier` for the identifier modifier)
    negated: bool  # `:not`, or `:missing=true`: no entry may match
    tokens: tuple[Token, ...] = ()
    references: tuple[ReferenceValue, ...] = ()
    dates: tuple[DateValue, ...] = ()
    uris: tuple[UriValue, ...] = ()
    table: str = ""  # for "missing": the table of the parameter's type


def search_values(condition: Condition) -> SearchValues:
    """Decompose a condition for a database search; SearchParameterError if it cannot run there."""
    parameter, modifier, values = condition.parameter, condition.modifier, condition.values
    name = parameter.name
    if modifier == "missing":
        return SearchValues("missing", name, values == ("true",), table=parameter.type)
    if parameter.type == "token":
        if modifier not in (None, "not"):
            raise SearchParameterError(
                f"The modifier ':{modifier}' on '{name}' is not supported by a database search "
                "(it is in subscription filters)"
            )
        tokens = tuple(parse_token(parameter, value) for value in values)
        return SearchValues("token", name, modifier == "not", tokens=tokens)
    if parameter.type == "reference":
        if modifier == "identifier":
            tokens = tuple(parse_token(parameter, value) for value in values)
            return SearchValues("token", name + IDENTIFIER, False, tokens=tokens)
        refs = tuple(_reference_value(parameter, modifier, value) for value in values)
        return SearchValues(
            "reference",
            name,
            False,
            references=tuple(ReferenceValue(r.literal, r.type, r.id, r.base) for r in refs),
        )
    if parameter.type == "date":
        dates = tuple(DateValue(*_search_value(parameter, value)) for value in values)
        return SearchValues("date", name, False, dates=dates)
    if parameter.type == "uri":
        if modifier not in (None, "below", "above"):
            raise unknown_modifier(parameter, modifier or "", URI_MODIFIERS)
        uris = tuple(_uri_value(modifier, value) for value in values)
        return SearchValues("uri", name, False, uris=uris)
    raise SearchParameterError(f"{parameter.type} parameter '{name}' is not supported by search")
