"""The database search and the in-memory matcher agree (property-based, SQLite and PostgreSQL).

Hypothesis generates Tasks (references of every form in each reference element, codes with and
without systems, identifiers, meta tags and profiles, dates and periods and lastUpdated instants
in several zones) and search criteria over every R4 Task search parameter (modifiers, comma ORs,
date prefixes and precisions). The
ids the SQL search finds must be exactly the Tasks for which `Criteria.matches` holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from herald.core.errors import SearchParameterError
from herald.core.resources import with_version
from herald.core.search import TASK_PARAMETERS, Criteria, parse_query
from herald.runtime.store import resources
from herald.runtime.store.database import Database
from herald.runtime.store.search import search_ids
from herald.runtime.store.tables import (
    resource_versions,
    search_dates,
    search_references,
    search_tokens,
)
from herald.runtime.store.tables import resources as resource_table

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

REFERENCES = [
    "Organization/1",
    "Organization/2",
    "Practitioner/1",
    "http://a.example/fhir/Organization/1",
    "https://b.example/fhir/Organization/1/_history/3",
    "urn:uuid:0f1e",
    "Organization/1/_history/2",
    "Patient/1",
]
SYSTEMS = [None, "", "http://example.org/codes", "http://other.example/codes"]
CODES = ["a", "b", "c"]
STATUSES = ["requested", "accepted", "completed", "draft"]
INSTANTS = [
    "2024-05-03T10:00:00.000Z",
    "2024-05-03T10:00:30.500Z",
    "2024-05-03T23:59:59.999Z",
    "2024-05-04T00:30:00.000+02:00",
    "2024-12-31T22:00:00.000-05:00",
    "2025-05-31T12:00:00.000Z",
    "2025-06-01T11:00:00.000Z",
]


@cache
def _reference_element() -> st.SearchStrategy[dict[str, Any]]:
    identifier = st.fixed_dictionaries(
        {
            "system": st.sampled_from(["http://npi", "http://other"]),
            "value": st.sampled_from(["1", "2"]),
        }
    )
    return st.one_of(
        st.builds(lambda r: {"reference": r}, st.sampled_from(REFERENCES)),
        st.builds(lambda i: {"identifier": i}, identifier),
        st.builds(
            lambda r, i: {"reference": r, "identifier": i}, st.sampled_from(REFERENCES), identifier
        ),
        st.just({"display": "someone"}),
    )


@cache
def _coding() -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda system, code: {
            **({"system": system} if system else {}),
            **({"code": code} if code else {}),
        },
        st.sampled_from(SYSTEMS),
        st.sampled_from([*CODES, None]),
    )


@cache
def _code() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.builds(lambda c: {"coding": c}, st.lists(_coding(), max_size=2)),
        st.just({"text": "free text"}),
    )


@cache
def _codings() -> st.SearchStrategy[list[dict[str, Any]]]:
    return st.lists(_coding(), min_size=1, max_size=2)


@cache
def _identifiers() -> st.SearchStrategy[list[dict[str, Any]]]:
    return st.lists(_identifier(), min_size=1, max_size=2)


# Strategies are built once (functools.cache): building them on every draw costs more than
# the searches.
@st.composite
def tasks(draw: st.DrawFn) -> list[dict[str, Any]]:
    found = []
    for number in range(draw(st.integers(0, 12))):
        task: dict[str, Any] = {
            "resourceType": "Task",
            "status": draw(st.sampled_from(STATUSES)),
        }
        if draw(st.booleans()):
            task["intent"] = draw(st.sampled_from(["order", "plan"]))
        if draw(st.booleans()):
            task["owner"] = draw(_reference_element())
        if draw(st.booleans()):
            task["requester"] = draw(_reference_element())
        if draw(st.booleans()):
            task["code"] = draw(_code())
        for element, many in OTHER_REFERENCES.items():
            if draw(st.booleans()):
                value = draw(_reference_element())
                task[element] = [value] if many else value
        for element, many in OTHER_CODINGS.items():
            if draw(st.booleans()):
                concept = {"coding": draw(_codings())}
                task[element] = [concept] if many else concept
        if draw(st.booleans()):
            task["priority"] = draw(st.sampled_from(["routine", "urgent"]))
        if draw(st.booleans()):
            task["identifier"] = draw(_identifiers())
        if draw(st.booleans()):
            task["groupIdentifier"] = draw(_identifier())
        for element in ("authoredOn", "lastModified"):
            if draw(st.booleans()):
                task[element] = draw(st.sampled_from(INSTANTS + DATES))
        if draw(st.booleans()):
            task["executionPeriod"] = draw(_period())
        meta = draw(_meta())
        stamped = with_version(task, f"t{number}", 1, draw(st.sampled_from(INSTANTS)))
        stamped["meta"] = {**meta, **stamped["meta"]}
        found.append(stamped)
    return found


# Reference and CodeableConcept elements beyond owner/requester/code (True: a list in R4).
OTHER_REFERENCES = {
    "basedOn": True,
    "partOf": True,
    "focus": False,
    "for": False,
    "encounter": False,
}
OTHER_CODINGS = {"businessStatus": False, "performerType": True}
DATES = ["2024-05-03", "2024-05", "2024"]
PROFILES = [
    "http://p.example/fhir/StructureDefinition/a",
    "http://p.example/fhir/StructureDefinition/a/b",
    "http://p.example/fhir",
]


@cache
def _identifier() -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda s, v: {**({"system": s} if s else {}), "value": v},
        st.sampled_from([None, "http://example.org/codes", "http://other.example/codes"]),
        st.sampled_from(CODES),
    )


@cache
def _period() -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda start, end: {
            **({"start": start} if start else {}),
            **({"end": end} if end else {}),
        },
        st.sampled_from([None, *INSTANTS[:3], "2024-05-03"]),
        st.sampled_from([None, *INSTANTS[3:], "2025"]),
    )


@cache
def _meta() -> st.SearchStrategy[dict[str, Any]]:
    codings = st.lists(_coding(), max_size=2)
    return st.builds(
        lambda tag, security, profile, source: {
            k: v
            for k, v in (
                ("tag", tag),
                ("security", security),
                ("profile", profile),
                ("source", source),
            )
            if v
        },
        codings,
        codings,
        st.lists(st.sampled_from(PROFILES), max_size=2, unique=True),
        st.sampled_from([None, "http://s.example/app", "http://s.example"]),
    )


def _token_value() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from([*CODES, *STATUSES, "order", "plan"]),
        st.builds(
            lambda s, c: f"{s}|{c}",
            st.sampled_from(["", "http://example.org/codes", "http://hl7.org/fhir/task-status"]),
            st.sampled_from([*CODES, *STATUSES]),
        ),
        st.just("http://example.org/codes|"),
    )


def _date_value() -> st.SearchStrategy[str]:
    moments = [
        "2024",
        "2024-05",
        "2024-05-03",
        "2024-05-03T10:00",
        "2024-05-03T10:00:30",
        "2024-05-03T10:00:30.5",
        "2024-05-03T12:00+02:00",
        "2025-06-01",
        "2024-12-31T22:00:00.000-05:00",
    ]
    prefixes = ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]
    return st.builds(lambda p, m: p + m, st.sampled_from(prefixes), st.sampled_from(moments))


def _or(values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(values, min_size=1, max_size=3).map(",".join)


def _condition() -> st.SearchStrategy[str]:
    reference_value = st.sampled_from(
        [*REFERENCES, "1", "2", "http://a.example/fhir/Organization/2"]
    )
    missing = st.sampled_from(["true", "false"])
    reference = st.sampled_from([p.name for p in TASK_PARAMETERS.values() if p.type == "reference"])
    token = st.sampled_from([p.name for p in TASK_PARAMETERS.values() if p.type == "token"])
    dates = st.sampled_from([p.name for p in TASK_PARAMETERS.values() if p.type == "date"])
    uri_value = st.sampled_from([*PROFILES, "http://s.example/app", "http://p.example"])
    return st.one_of(
        st.builds(lambda n, v: f"{n}={v}", reference, _or(reference_value)),
        st.builds(lambda n, v: f"{n}:missing={v}", reference, missing),
        st.builds(
            lambda n, v: f"{n}:Organization={v}", reference, _or(st.sampled_from(["1", "2"]))
        ),
        st.builds(
            lambda n, v: f"{n}:identifier={v}",
            reference,
            _or(st.sampled_from(["http://npi|1", "1", "|2", "http://other|"])),
        ),
        st.builds(lambda n, v: f"{n}={v}", token, _or(_token_value())),
        st.builds(lambda n, v: f"{n}:not={v}", token, _or(_token_value())),
        st.builds(lambda n, v: f"{n}:missing={v}", token, missing),
        st.builds(lambda n, v: f"{n}={v}", dates, _or(_date_value())),
        st.builds(lambda n, v: f"{n}:missing={v}", dates, missing),
        st.builds(
            lambda n, m, v: f"{n}{m}={v}",
            st.sampled_from(["_profile", "_source"]),
            st.sampled_from(["", ":below", ":above", ":missing"]),
            _or(uri_value),
        ),
        st.builds(lambda v: f"_id={v}", _or(st.sampled_from(["t0", "t1", "t2", "x"]))),
    )


def criteria() -> st.SearchStrategy[Criteria | None]:
    def parse(parts: list[str]) -> Criteria | None:
        try:
            return parse_query("Task", "&".join(parts))
        except SearchParameterError:
            return None  # e.g. owner:Organization=... with a value of another type, :missing=x

    return st.lists(_condition(), min_size=1, max_size=3).map(parse)


async def _reset(database: Database) -> None:
    async with database.transaction() as connection:
        for table in (search_tokens, search_references, search_dates, resource_versions):
            await connection.execute(delete(table))
        await connection.execute(delete(resource_table))


TALLY: Counter[str] = Counter()
"""Generated searches checked against the database, and those skipped (unparsable)."""


@pytest.fixture(scope="module", autouse=True)
def most_generated_searches_are_checked() -> Iterator[None]:
    """Fail the module when most generated searches were skipped: the test would prove little."""
    yield
    total = TALLY["checked"] + TALLY["skipped"]
    if total:
        assert TALLY["skipped"] <= total / 2, f"most generated searches were skipped: {TALLY}"


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(generated=tasks(), searches=st.lists(criteria(), min_size=1, max_size=6))
async def test_database_search_agrees_with_criteria_matches(
    database: Database, generated: list[dict[str, Any]], searches: list[Criteria | None]
) -> None:
    await _reset(database)
    async with database.transaction() as connection:
        for task in generated:
            await resources.save(connection, task, previous=None)
    async with database.read() as connection:
        for parsed in searches:
            if parsed is None:
                TALLY["skipped"] += 1
                event("search skipped: it does not parse")
                continue
            TALLY["checked"] += 1
            expected = {task["id"] for task in generated if parsed.matches(task, now=NOW)}
            found = await search_ids(connection, parsed, now=NOW)
            assert len(found) == len(set(found))
            assert set(found) == expected, f"{parsed}: database {sorted(found)}"


def _corpus() -> list[dict[str, Any]]:
    """Tasks covering every reference form, code shape and instant at least once."""
    corpus: list[dict[str, Any]] = []
    elements = [{"reference": r} for r in REFERENCES] + [
        {"identifier": {"system": "http://npi", "value": "1"}},
        {"display": "someone"},
        None,
    ]
    codings: list[Any] = [
        {"coding": [{"system": "http://example.org/codes", "code": "a"}]},
        {"coding": [{"code": "b"}]},
        {"coding": [{"system": "http://other.example/codes"}]},
        {"text": "free text"},
        None,
    ]
    for number, instant in enumerate(INSTANTS * 2):
        task: dict[str, Any] = {"resourceType": "Task", "status": STATUSES[number % 4]}
        if number % 3:
            task["intent"] = "order" if number % 2 else "plan"
        for key, choices, step in (
            ("owner", elements, 1),
            ("requester", elements, 5),
            ("code", codings, 3),
        ):
            value = choices[(number * step) % len(choices)]
            if value is not None:
                task[key] = value
        for step, (key, many) in enumerate(OTHER_REFERENCES.items(), start=2):
            element = elements[(number * step) % len(elements)]
            if element is not None:
                task[key] = [element] if many else element
        for step, (key, many) in enumerate(OTHER_CODINGS.items(), start=7):
            concept = codings[(number * step) % len(codings)]
            if concept is not None:
                task[key] = [concept] if many else concept
        if number % 4:
            task["priority"] = "urgent" if number % 3 else "routine"
            task["identifier"] = [
                {"system": "http://example.org/codes", "value": CODES[number % 3]}
            ]
            task["groupIdentifier"] = {"value": CODES[(number + 1) % 3]}
            task["authoredOn"] = (INSTANTS + DATES)[number % 10]
            task["lastModified"] = INSTANTS[(number + 2) % 7]
            task["executionPeriod"] = {"start": INSTANTS[number % 3]}
        stamped = with_version(task, f"t{number}", 1, instant)
        coding = codings[number % len(codings)]
        stamped["meta"] = {
            **stamped["meta"],
            **(
                {"tag": coding["coding"], "security": coding["coding"]}
                if coding and "coding" in coding
                else {}
            ),
            **(
                {"profile": [PROFILES[number % 3]], "source": "http://s.example/app"}
                if number % 2
                else {}
            ),
        }
        corpus.append(stamped)
    return corpus


def _fixed_queries() -> list[str]:
    references = [*REFERENCES, "1", "http://a.example/fhir/Organization/2"]
    queries = [f"{name}={ref}" for name in ("owner", "requester") for ref in references]
    queries += [f"owner:{kind}=1" for kind in ("Organization", "Practitioner")]
    queries += ["owner:identifier=http://npi|1", "owner:identifier=|1", "owner:missing=true"]
    tokens = ["a", "b", "|b", "http://example.org/codes|a", "http://other.example/codes|"]
    queries += [f"code{modifier}={t}" for t in tokens for modifier in ("", ":not")]
    queries += ["code:missing=true", "code:missing=false", "intent:missing=true"]
    queries += ["status=completed,draft", "status:not=draft", "intent=order", "_id=t1,t3"]
    moments = [
        "2024",
        "2024-05-03",
        "2024-05-03T10:00",
        "2024-05-03T10:00:30.5",
        "2024-05-03T23:59:59.999",
        "2024-05-03T22:30+02:00",
        "2025-06-01",
    ]
    prefixes = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]
    queries += [f"_lastUpdated={p}{m}" for p in prefixes for m in moments]
    for name in ("authored-on", "modified", "period"):
        queries += [f"{name}={p}{m}" for p in prefixes for m in moments[::2]]
        queries.append(f"{name}:missing=true")
    for name in ("based-on", "part-of", "focus", "patient", "subject", "encounter"):
        target = (*TASK_PARAMETERS[name].target_types, "Organization")[0]
        queries += [f"{name}={ref}" for ref in (f"{target}/1", "1", f"{target}/2")]
    queries += ["patient:identifier=http://npi|1", "subject:missing=false"]
    for name in ("business-status", "performer", "_tag", "_security"):
        queries += [f"{name}={t}" for t in ("a", "|b", "http://example.org/codes|a")]
    queries += ["identifier=http://example.org/codes|a", "group-identifier=b", "priority=urgent"]
    queries += ["priority:not=routine", "identifier:missing=true"]
    queries += [f"_profile={p}" for p in PROFILES] + ["_profile:below=http://p.example/fhir"]
    queries += ["_profile:above=http://p.example/fhir/StructureDefinition/a/b/c"]
    queries += [
        "_source=http://s.example",
        "_source:below=http://s.example",
        "_source:missing=true",
    ]
    return queries


def test_the_fixed_queries_cover_every_task_parameter() -> None:
    used = {query.split("=", 1)[0].split(":", 1)[0] for query in _fixed_queries()}
    assert used == set(TASK_PARAMETERS)


async def test_every_search_form_agrees_on_a_fixed_corpus(database: Database) -> None:
    corpus = _corpus()
    async with database.transaction() as connection:
        for task in corpus:
            await resources.save(connection, task, previous=None)
    async with database.read() as connection:
        for query in _fixed_queries():
            parsed = parse_query("Task", query)
            expected = {task["id"] for task in corpus if parsed.matches(task, now=NOW)}
            found = await search_ids(connection, parsed, now=NOW)
            assert set(found) == expected, f"{query}: database {sorted(found)}"
