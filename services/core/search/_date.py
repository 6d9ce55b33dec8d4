"""Date search on date, dateTime, instant and Period elements.

Every date is a half-open UTC range [low, high) set by its precision: `2024` covers the whole
year, `2024-05-03T10:00` one minute, `...T10:00:00.25` a hundredth of a second. A value without
a time zone is taken as UTC (FHIR leaves it to the server). A space where the zone's '+' should
be (`...T10:00:00 02:00`, what form-decoding makes of an unescaped '+') is read as '+'.

Prefixes follow FHIR R4 (search.html#prefix), with S the search range and R the resource's:
eq: S contains R; ne: not eq; gt: R reaches above S; lt: R reaches below S; ge: gt or eq;
le: lt or eq; sa: R starts at or after S ends; eb: R ends at or before S starts;
ap: R overlaps S widened on both sides by 10% of the time between S and now, at least one day.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, datetime, timedelta, timezone
from typing import Any

from herald.core.errors import SearchParameterError
from herald.core.search._parameters import SearchParameter
from herald.core.search._values import Predicate, unescape, unknown_modifier

MODIFIERS = ("missing",)
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")

EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)

_DATE = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?"
    r"(?P<zone>Z|[+\- ]\d{2}:\d{2})?)?)?)?"
)
_FORMS = "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.fff]][Z|+hh:mm|-hh:mm]"
_APPROXIMATION_FLOOR = timedelta(days=1)


@dataclass(frozen=True)
class DateRange:
    """The half-open UTC interval [low, high) a date, dateTime, instant or Period covers."""

    low: datetime
    high: datetime


def _zone(text: str | None) -> timezone:
    if text is None or text == "Z":
        return UTC
    hours, minutes = int(text[1:3]), int(text[4:6])
    if minutes > 59 or hours * 60 + minutes > 14 * 60:  # FHIR allows -14:00 to +14:00
        raise ValueError(f"bad time zone offset {text!r}")
    sign = -1 if text[0] == "-" else 1
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return EARLIEST if moment.year == 1 else LATEST


def _plus(moment: datetime, delta: timedelta) -> datetime:
    try:
        return moment + delta
    except OverflowError:
        return LATEST if delta > timedelta(0) else EARLIEST


def _months_later(start: datetime, months: int) -> datetime | None:
    year, month = divmod(start.year * 12 + start.month - 1 + months, 12)
    return None if year > MAXYEAR else start.replace(year=year, month=month + 1)


def parse_date_range(text: str) -> DateRange:
    """The UTC range a FHIR date, dateTime or instant covers; ValueError if it is not one."""
    match = _DATE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a FHIR date: {text!r}")
    fraction = match["fraction"] or ""
    start = datetime(
        int(match["year"]),
        int(match["month"] or 1),
        int(match["day"] or 1),
        int(match["hour"] or 0),
        int(match["minute"] or 0),
        int(match["second"] or 0),
        int(fraction[:6].ljust(6, "0")),
        tzinfo=_zone(match["zone"]),
    )
    end: datetime | None
    if fraction:
        end = _plus(start, timedelta(microseconds=10 ** (6 - min(len(fraction), 6))))
    elif match["second"]:
        end = _plus(start, timedelta(seconds=1))
    elif match["minute"]:
        end = _plus(start, timedelta(minutes=1))
    elif match["day"]:
        end = _plus(start, timedelta(days=1))
    else:
        end = _months_later(start, 1 if match["month"] else 12)
    return DateRange(_utc(start), LATEST if end is None else _utc(end))


# An instant as Herald writes them (meta.lastUpdated, one on every version of every resource):
# millisecond precision in UTC, the one form datetime.fromisoformat reads alone, at a tenth of
# parse_date_range's cost. Anything else, or a value it refuses, takes the general path.
_INSTANT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
_MILLISECOND = timedelta(milliseconds=1)


def _instant_range(text: str) -> DateRange | None:
    """parse_date_range of a UTC instant with milliseconds; None for any other text."""
    if len(text) != 24 or _INSTANT.fullmatch(text) is None:
        return None
    try:
        start = datetime.fromisoformat(text)
        return DateRange(start, start + _MILLISECOND)
    except (ValueError, OverflowError):
        return None


def _element_range(element: Any) -> DateRange | None:
    """The range of a resource's date value or Period; None if it has none or is invalid."""
    try:
        if isinstance(element, str):
            return _instant_range(element) or parse_date_range(element)
        if isinstance(element, dict) and ("start" in element or "end" in element):
            start, end = element.get("start"), element.get("end")
            low = parse_date_range(start).low if isinstance(start, str) else EARLIEST
            high = parse_date_range(end).high if isinstance(end, str) else LATEST
            return DateRange(low, high)
    except ValueError:
        return None
    return None


def _eq(s: DateRange, r: DateRange) -> bool:
    return s.low <= r.low and r.high <= s.high


def _gt(s: DateRange, r: DateRange) -> bool:
    return r.high > s.high


def _lt(s: DateRange, r: DateRange) -> bool:
    return r.low < s.low


_COMPARISONS: dict[str, Callable[[DateRange, DateRange], bool]] = {
    "eq": _eq,
    "ne": lambda s, r: not _eq(s, r),
    "gt": _gt,
    "lt": _lt,
    "ge": lambda s, r: _gt(s, r) or _eq(s, r),
    "le": lambda s, r: _lt(s, r) or _eq(s, r),
    "sa": lambda s, r: r.low >= s.high,
    "eb": lambda s, r: r.high <= s.low,
}


def approximately(search: DateRange, target: DateRange, now: datetime) -> bool:
    """The `ap` prefix: whether target overlaps search widened by 10% of its distance to now."""
    margin = max(abs(now - search.low) / 10, _APPROXIMATION_FLOOR)
    return target.low < _plus(search.high, margin) and target.high > _plus(search.low, -margin)


def _search_value(parameter: SearchParameter, raw: str) -> tuple[str, DateRange]:
    value = unescape(raw)
    prefix = "eq"
    if value[:2].isalpha() and value[2:3] in ("", *"0123456789"):
        prefix, value = value[:2], value[2:]
        if prefix not in PREFIXES:
            raise SearchParameterError(
                f"Unknown prefix '{prefix}' in {raw!r} for date search parameter "
                f"'{parameter.name}'; use one of {', '.join(PREFIXES)}"
            )
    try:
        return prefix, parse_date_range(value)
    except ValueError:
        raise SearchParameterError(
            f"Malformed date {raw!r} for search parameter '{parameter.name}': expected an "
            f"optional prefix ({', '.join(PREFIXES)}) and {_FORMS}"
        ) from None


def compile_date(
    parameter: SearchParameter, modifier: str | None, values: tuple[str, ...]
) -> Predicate:
    """Compile a date condition (no modifier but `:missing` applies to dates)."""
    if modifier is not None:
        raise unknown_modifier(parameter, modifier, MODIFIERS)
    searches = tuple(_search_value(parameter, value) for value in values)

    def predicate(elements: Sequence[Any], now: datetime | None) -> bool:
        for element in elements:
            target = _element_range(element)
            if target is None:
                continue
            for prefix, search in searches:
                if prefix == "ap":
                    if approximately(search, target, now or datetime.now(UTC)):
                        return True
                elif _COMPARISONS[prefix](search, target):
                    return True
        return False

    return predicate
