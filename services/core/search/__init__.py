"""FHIR R4 search semantics, evaluated in memory against one resource (a JSON dict).

Shared by the subscription matcher (topic query criteria, backport filter criteria) and the
Task search API. Parse once with `parse_query` or `parse_filter`, then call
`Criteria.matches(resource)` as often as needed: each `Condition` is compiled when created, and
any unknown, unsupported or malformed part raises `SearchParameterError` naming the parameter.

Decisions beyond the FHIR text:
- Query values are percent-decoded but '+' is kept (not read as a space), so that
  `gt2024-05-03T10:00+02:00` works unencoded in filter strings.
- Dates without a time zone are UTC; `ap` allows 10% of the distance to now, at least a day
  (see `_date`).
- References compare on their trailing `Type/id`; two absolute references must also share the
  base (see `_reference`).
- A bare `code` element carries its binding's `implied_system` (e.g. Task.status), so
  `status=http://hl7.org/fhir/task-status|completed` matches and `status=|completed` does not.
- `:text` on tokens matches a case- and accent-insensitive prefix of any word of
  CodeableConcept.text, Coding.display or Identifier.type.text.
- `:in`, `:not-in`, `:above`, `:below` and `:of-type` on tokens are rejected; chained
  parameters are rejected; `_lastupdated` is accepted as `_lastUpdated`.

For a database search, `index_entries` gives the rows to store per resource and
`search_values` decomposes a parsed `Condition` into what SQL compares them with (see `_index`).
"""

from herald.core.search._criteria import Condition, Criteria, parse_filter, parse_query
from herald.core.search._date import DateRange, parse_date_range
from herald.core.search._index import (
    DATABASE_UNSUPPORTED_MODIFIERS,
    ID,
    IDENTIFIER,
    DateEntry,
    DateValue,
    IndexEntries,
    IndexPlan,
    ReferenceEntry,
    ReferenceValue,
    SearchValues,
    TokenEntry,
    UriValue,
    index_entries,
    instant_key,
    search_values,
)
from herald.core.search._parameters import (
    DATABASE_SEARCHED,
    PARAMETERS,
    SUBSCRIPTION_PARAMETERS,
    TASK_PARAMETERS,
    SearchParameter,
)
from herald.core.search._reference import normalize_reference
from herald.core.search._token import Token

__all__ = [
    "DATABASE_SEARCHED",
    "DATABASE_UNSUPPORTED_MODIFIERS",
    "ID",
    "IDENTIFIER",
    "PARAMETERS",
    "SUBSCRIPTION_PARAMETERS",
    "TASK_PARAMETERS",
    "Condition",
    "Criteria",
    "DateEntry",
    "DateRange",
    "DateValue",
    "IndexEntries",
    "IndexPlan",
    "ReferenceEntry",
    "ReferenceValue",
    "SearchParameter",
    "SearchValues",
    "Token",
    "TokenEntry",
    "UriValue",
    "index_entries",
    "instant_key",
    "normalize_reference",
    "parse_date_range",
    "parse_filter",
    "parse_query",
    "search_values",
]
