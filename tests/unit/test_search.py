"""FHIR R4 search semantics evaluated in memory (herald.core.search)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.core.errors import SearchParameterError
from herald.core.fhir import TASK_STATUS_CODES
from herald.core.search import (
    PARAMETERS,
    SUBSCRIPTION_PARAMETERS,
    TASK_PARAMETERS,
    Condition,
    Criteria,
    DateRange,
    SearchParameter,
    normalize_reference,
    parse_date_range,
    parse_filter,
    parse_query,
)

LOINC = "http://loinc.org"
TASK_STATUS = "http://hl7.org/fhir/task-status"
TASK_STATUSES = tuple(sorted(TASK_STATUS_CODES))


def task(**fields: Any) -> dict[str, Any]:
    """A minimal Task with the given elements (`for_` stands for `for`)."""
    resource: dict[str, Any] = {"resourceType": "Task", "id": "t1", "intent": "order"}
    resource.setdefault("status", "requested")
    for key, value in fields.items():
        resource[key.rstrip("_")] = value
    return {key: value for key, value in resource.items() if value is not None}


def matches(query: str, resource: dict[str, Any], **kwargs: Any) -> bool:
    return parse_query("Task", query).matches(resource, **kwargs)


def rejects(query: str, *fragments: str, resource_type: str = "Task") -> None:
    with pytest.raises(SearchParameterError) as caught:
        parse_query(resource_type, query)
    for fragment in fragments:
        assert fragment in caught.value.diagnostics


# --- parameter definitions --------------------------------------------------------------------


def test_task_parameters_cover_the_hrex_topic_and_polling() -> None:
    assert PARAMETERS["Task"] is TASK_PARAMETERS
    assert PARAMETERS["Subscription"] is SUBSCRIPTION_PARAMETERS
    expected = {
        "_id": ("token", "id"),
        "_lastUpdated": ("date", "meta.lastUpdated"),
        "status": ("token", "status"),
        "intent": ("token", "intent"),
        "code": ("token", "code"),
        "owner": ("reference", "owner"),
        "requester": ("reference", "requester"),
        "business-status": ("token", "businessStatus"),
        "priority": ("token", "priority"),
        "subject": ("reference", "for"),
        "patient": ("reference", "for"),
        "authored-on": ("date", "authoredOn"),
        "modified": ("date", "lastModified"),
        "identifier": ("token", "identifier"),
    }
    for name, (kind, path) in expected.items():
        parameter = TASK_PARAMETERS[name]
        assert (parameter.name, parameter.type, parameter.path) == (name, kind, path)
    assert "Organization" in TASK_PARAMETERS["owner"].target_types
    assert TASK_PARAMETERS["patient"].target_types == ("Patient",)
    assert TASK_PARAMETERS["subject"].target_types == ()


def test_search_parameter_rejects_an_unknown_type() -> None:
    with pytest.raises(ValueError, match="quantity"):
        SearchParameter("value", "quantity", "value")


# --- parsing: the three filter syntaxes, prefixes, decoding -------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Task?owner=Organization/123",
        "Task.owner=Organization/123",
        "owner=Organization/123",
        "  owner=Organization/123  ",
        "?owner=Organization/123",
    ],
)
def test_filter_syntaxes_are_equivalent(text: str) -> None:
    criteria = parse_filter("Task", text)
    assert criteria == Criteria(
        "Task", (Condition(TASK_PARAMETERS["owner"], None, ("Organization/123",)),)
    )
    assert criteria.matches(task(owner={"reference": "Organization/123"}))
    assert not criteria.matches(task(owner={"reference": "Organization/456"}))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Task?owner:identifier=sys|v", "owner:identifier=sys|v"),
        ("Task.owner:identifier=sys|v", "owner:identifier=sys|v"),
        ("Task.status:not=draft", "status:not=draft"),
        ("Task?status:not=draft", "Task.status:not=draft"),
        (
            "Task?status=completed&owner=Organization/1",
            "Task.status=completed&Task.owner=Organization/1",
        ),
        ("Task.status=completed&owner=Organization/1", "status=completed&owner=Organization/1"),
    ],
)
def test_filter_syntaxes_with_modifiers_and_several_parameters(first: str, second: str) -> None:
    assert parse_filter("Task", first) == parse_filter("Task", second)


def test_filter_modifiers_are_parsed() -> None:
    criteria = parse_filter("Task", "Task.status:not=draft&owner:identifier=sys|v")
    assert [(c.parameter.name, c.modifier, c.values) for c in criteria.conditions] == [
        ("status", "not", ("draft",)),
        ("owner", "identifier", ("sys|v",)),
    ]
    assert criteria.names() == frozenset({"status", "owner"})


@pytest.mark.parametrize(
    "text", ["Patient?owner=Organization/1", "Patient.owner=Organization/1", "task?status=ready"]
)
def test_filter_for_another_resource_type_is_rejected(text: str) -> None:
    with pytest.raises(SearchParameterError) as caught:
        parse_filter("Task", text)
    assert "not 'Task'" in caught.value.diagnostics


def test_query_for_another_resource_type_is_rejected() -> None:
    rejects("Patient?status=ready", "'Patient'", "'Task'")


def test_query_does_not_take_the_dotted_form() -> None:
    rejects("Task.status=ready", "Chained", "Task.status")


@pytest.mark.parametrize("text", ["", "   ", "Task?", "?", "&"])
def test_empty_filter_is_rejected(text: str) -> None:
    with pytest.raises(SearchParameterError, match="Filter criteria"):
        parse_filter("Task", text)


@pytest.mark.parametrize("query", ["", "Task?", "&&"])
def test_empty_query_matches_every_resource_of_its_type(query: str) -> None:
    criteria = parse_query("Task", query)
    assert criteria.conditions == ()
    assert criteria.matches(task())
    assert not criteria.matches({"resourceType": "Patient", "id": "p"})


def test_criteria_ignore_resources_of_other_types() -> None:
    criteria = parse_query("Task", "_id=t1")
    assert criteria.matches({"id": "t1"})  # no resourceType: judged on its elements
    assert not criteria.matches({"resourceType": "Patient", "id": "t1"})


def test_query_values_are_percent_decoded_but_plus_is_kept() -> None:
    criteria = parse_query(
        "Task", "code=http%3A%2F%2Floinc.org%7C1234-5&_lastUpdated=gt2024-05-03T10:00+02:00"
    )
    code, last_updated = criteria.conditions
    assert code.values == ("http://loinc.org|1234-5",)
    assert last_updated.values == ("gt2024-05-03T10:00+02:00",)
    resource = task(
        code={"coding": [{"system": LOINC, "code": "1234-5"}]},
        meta={"lastUpdated": "2024-05-03T08:01:00Z"},
    )
    assert criteria.matches(resource)


def test_percent_encoded_comma_is_an_or_separator() -> None:
    assert parse_query("Task", "status=ready%2Ccompleted").conditions[0].values == (
        "ready",
        "completed",
    )


def test_trailing_and_doubled_ampersands_are_tolerated() -> None:
    assert parse_query("Task", "status=ready&&intent=order&") == parse_query(
        "Task", "status=ready&intent=order"
    )


def test_value_may_contain_equals_and_question_marks() -> None:
    condition = parse_query("Subscription", "url=https://h.example/hook?a=b").conditions[0]
    assert condition.values == ("https://h.example/hook?a=b",)


def test_condition_and_criteria_print_back_as_a_query() -> None:
    text = "Task?status:not=draft,cancelled&owner=Organization/1&code=a\\,b"
    criteria = parse_query("Task", text)
    assert str(criteria) == text
    assert parse_query("Task", str(criteria)) == criteria


def test_conditions_are_hashable_and_compare_by_value() -> None:
    first = parse_query("Task", "status=ready,completed").conditions[0]
    second = Condition(TASK_PARAMETERS["status"], None, ("ready", "completed"))
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second}) == 1


def test_condition_accepts_a_list_of_values() -> None:
    condition = Condition(TASK_PARAMETERS["status"], None, ["ready"])  # type: ignore[arg-type]
    assert condition.values == ("ready",)


# --- rejections ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "fragments"),
    [
        ("foo=bar", ("Unknown search parameter 'foo'", "owner", "status")),
        ("status", ("'status'", "no '='")),
        ("status=", ("'status'", "empty value")),
        ("status=ready,", ("'status'", "empty value")),
        ("status=,ready", ("'status'", "empty value")),
        ("status= ", ("'status'", "empty value")),
        ("status:=ready", ("'status'", "empty modifier")),
        ("owner.name=Acme", ("Chained", "owner.name")),
        ("owner:Organization.name=Acme", ("owner",)),
        ("_has:Observation:focus:code=1", ("Unknown search parameter '_has'",)),
        ("status:missing=maybe", ("':missing'", "'status'", "true or false")),
        ("status:missing=true,false", ("':missing'", "'status'")),
        ("status:exact=ready", ("Unknown modifier ':exact'", "'status'", ":not", ":text")),
        ("code:in=http://vs", ("ValueSet", "':in'", "'code'")),
        ("code:not-in=http://vs", ("ValueSet", "'code'")),
        ("code:below=http://loinc.org|1", ("':below'", "'code'")),
        ("identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|1", ("of-type",)),
        ("code=a|b|c", ("Malformed token", "'code'", "more than one '|'")),
        ("code=|", ("Malformed token", "'code'")),
        ("owner=organization/1", ("Malformed reference", "'owner'")),
        ("owner=Organization/", ("Malformed reference", "'owner'")),
        ("owner=Organization/1/2", ("Malformed reference", "'owner'")),
        ("owner=a b", ("Malformed reference", "'owner'")),
        ("owner=Location/1", ("'Location' is not a target type", "'owner'")),
        ("owner:Location=1", ("':Location'", "'owner'", "Organization")),
        ("owner:Organization=Patient/1", ("Malformed reference", "':Organization'")),
        ("owner:Organization=urn:uuid:1", ("Malformed reference", "'owner'")),
        ("owner:not=Organization/1", ("Unknown modifier ':not'", "'owner'", ":identifier")),
        ("owner:identifier=a|b|c", ("Malformed token", "'owner'")),
        ("_lastUpdated=xx2024", ("Unknown prefix 'xx'", "'_lastUpdated'", "eq, ne")),
        ("_lastUpdated=GT2024", ("Unknown prefix 'GT'", "'_lastUpdated'")),
        ("_lastUpdated=gt", ("Malformed date", "'_lastUpdated'")),
        ("_lastUpdated=2024-13", ("Malformed date '2024-13'", "'_lastUpdated'")),
        ("_lastUpdated=2024-02-30", ("Malformed date", "'_lastUpdated'")),
        ("_lastUpdated=2024-5-3", ("Malformed date", "'_lastUpdated'")),
        ("_lastUpdated=2024-05-03T10", ("Malformed date", "'_lastUpdated'")),
        ("_lastUpdated=2024-05-03T24:00", ("Malformed date", "'_lastUpdated'")),
        ("_lastUpdated=2024-05-03T10:00:60Z", ("Malformed date", "'_lastUpdated'")),
        ("_lastUpdated=2024-05-03T10:00+15:00", ("Malformed date", "'_lastUpdated'")),
        ("_lastUpdated=2024-05-03T10:00+02:60", ("Malformed date", "'_lastUpdated'")),
        ("_lastUpdated=2024-05-03Z", ("Malformed date", "'_lastUpdated'")),
        ("_lastUpdated=yesterday", ("Malformed date 'yesterday'", "'_lastUpdated'")),
        ("authored-on:missing=yes", ("':missing'", "'authored-on'")),
        ("authored-on:exact=2024", ("Unknown modifier ':exact'", "'authored-on'", ":missing")),
        ("_profile:contains=http", ("Unknown modifier ':contains'", "'_profile'", ":below")),
    ],
)
def test_malformed_queries_are_rejected_with_a_useful_message(
    query: str, fragments: tuple[str, ...]
) -> None:
    rejects(query, *fragments)


def test_unknown_resource_type_is_rejected() -> None:
    rejects("name=x", "'Observation'", "Task", resource_type="Observation")


def test_string_modifier_unknown_is_rejected() -> None:
    rejects(
        "criteria:text=x",
        "Unknown modifier ':text'",
        "'criteria'",
        ":exact",
        resource_type="Subscription",
    )


def test_every_error_is_a_400_not_supported() -> None:
    with pytest.raises(SearchParameterError) as caught:
        parse_query("Task", "foo=bar")
    assert caught.value.status_code == 400
    assert caught.value.issue_code == "not-supported"


def test_condition_validates_when_built_directly() -> None:
    with pytest.raises(SearchParameterError, match="'status' has an empty value"):
        Condition(TASK_PARAMETERS["status"], None, ())
    with pytest.raises(SearchParameterError, match="Malformed date"):
        Condition(TASK_PARAMETERS["_lastUpdated"], None, ("soon",))
    with pytest.raises(SearchParameterError, match="Unknown prefix 'xx'"):
        Condition(TASK_PARAMETERS["_lastUpdated"], None, ("xx2024",))


# --- allowed parameters (the topic's canFilterBy) -----------------------------------------------

CAN_FILTER_BY = ("code", "owner", "requester", "status")


def test_allowed_parameters_pass() -> None:
    criteria = parse_filter("Task", "owner=Organization/1&status=ready", allowed=CAN_FILTER_BY)
    assert criteria.names() == frozenset({"owner", "status"})


def test_parameter_outside_allowed_is_rejected_naming_the_allowed_ones() -> None:
    with pytest.raises(SearchParameterError) as caught:
        parse_filter("Task", "owner=Organization/1&intent=order", allowed=CAN_FILTER_BY)
    message = caught.value.diagnostics
    assert "'intent'" in message
    assert "code, owner, requester, status" in message


def test_allowed_applies_to_unknown_names_too() -> None:
    with pytest.raises(SearchParameterError, match="'foo' is not allowed"):
        parse_query("Task", "foo=1", allowed=CAN_FILTER_BY)


def test_allowed_name_that_is_not_a_known_parameter_is_still_unknown() -> None:
    with pytest.raises(SearchParameterError, match="Unknown search parameter 'foo'"):
        parse_query("Task", "foo=1", allowed=("foo",))


def test_lowercase_lastupdated_is_tolerated() -> None:
    criteria = parse_query("Task", "_lastupdated=gt2024-01-01", allowed=("_lastUpdated",))
    assert criteria.conditions[0].parameter is TASK_PARAMETERS["_lastUpdated"]
    assert criteria.matches(task(meta={"lastUpdated": "2024-06-01T00:00:00Z"}))


# --- AND and OR --------------------------------------------------------------------------------


def test_parameters_are_anded() -> None:
    query = "status=ready&owner=Organization/1"
    assert matches(query, task(status="ready", owner={"reference": "Organization/1"}))
    assert not matches(query, task(status="ready", owner={"reference": "Organization/2"}))
    assert not matches(query, task(status="completed", owner={"reference": "Organization/1"}))


def test_repeated_parameter_is_anded() -> None:
    query = "_lastUpdated=ge2024-01-01&_lastUpdated=lt2024-02-01"
    assert matches(query, task(meta={"lastUpdated": "2024-01-15T00:00:00Z"}))
    assert not matches(query, task(meta={"lastUpdated": "2024-02-15T00:00:00Z"}))
    assert not matches("status=ready&status=completed", task(status="ready"))


def test_comma_values_are_ored() -> None:
    assert matches("status=completed,rejected", task(status="rejected"))
    assert matches("status=completed,rejected", task(status="completed"))
    assert not matches("status=completed,rejected", task(status="ready"))


def test_escaped_comma_is_part_of_the_value() -> None:
    condition = parse_query("Task", r"business-status=waiting\, on payer,done").conditions[0]
    assert condition.values == (r"waiting\, on payer", "done")
    assert condition.matches(task(businessStatus={"coding": [{"code": "waiting, on payer"}]}))
    assert not condition.matches(task(businessStatus={"coding": [{"code": "waiting"}]}))


def test_escaped_pipe_and_backslash_in_a_token() -> None:
    condition = parse_query("Task", r"identifier=urn:sys|a\|b").conditions[0]
    assert condition.matches(task(identifier=[{"system": "urn:sys", "value": "a|b"}]))
    backslash = parse_query("Task", "identifier=a\\\\,b").conditions[0]
    assert backslash.values == ("a\\\\", "b")
    assert backslash.matches(task(identifier=[{"value": "a\\"}]))


# --- token ------------------------------------------------------------------------------------


def test_token_on_code_element() -> None:
    assert matches("status=ready", task(status="ready"))
    assert not matches("status=ready", task(status="Ready"))  # token codes are case-sensitive
    assert matches("intent=order", task())


def test_token_on_code_element_uses_the_implied_system() -> None:
    assert matches(f"status={TASK_STATUS}|ready", task(status="ready"))
    assert matches(f"status={TASK_STATUS}|", task(status="ready"))
    assert not matches("status=http://other|ready", task(status="ready"))
    assert not matches("status=|ready", task(status="ready"))


def test_token_on_code_element_without_implied_system() -> None:
    parameter = SearchParameter("kind", "token", "kind")
    assert Condition(parameter, None, ("|x",)).matches({"kind": "x"})
    assert not Condition(parameter, None, ("sys|x",)).matches({"kind": "x"})


def test_token_on_codeable_concept() -> None:
    resource = task(
        code={
            "coding": [
                {"system": LOINC, "code": "1234-5"},
                {"code": "local"},
            ],
            "text": "Blood test",
        }
    )
    assert matches("code=1234-5", resource)
    assert matches(f"code={LOINC}|1234-5", resource)
    assert matches(f"code={LOINC}|", resource)
    assert matches("code=|local", resource)
    assert not matches("code=|1234-5", resource)
    assert not matches("code=http://snomed.info/sct|1234-5", resource)
    assert not matches("code=http://snomed.info/sct|", resource)
    assert not matches("code=Blood test", resource)
    assert not matches("code=other", task())


def test_token_on_coding() -> None:
    parameter = SearchParameter("tag", "token", "meta.tag")
    resource = {"meta": {"tag": [{"system": "urn:t", "code": "a"}, {"code": "b"}]}}
    assert Condition(parameter, None, ("urn:t|a",)).matches(resource)
    assert Condition(parameter, None, ("|b",)).matches(resource)
    assert not Condition(parameter, None, ("urn:t|b",)).matches(resource)
    assert parse_query("Task", "_tag=urn:t|a").matches(resource)


def test_token_on_identifier_list_matches_any_item() -> None:
    resource = task(
        identifier=[
            {"system": "urn:a", "value": "1"},
            {"system": "urn:b", "value": "2"},
            {"value": "3"},
        ]
    )
    assert matches("identifier=urn:b|2", resource)
    assert matches("identifier=2", resource)
    assert matches("identifier=|3", resource)
    assert matches("identifier=urn:a|", resource)
    assert not matches("identifier=urn:a|2", resource)
    assert not matches("identifier=|1", resource)
    assert not matches("identifier=urn:c|", resource)


def test_token_on_boolean() -> None:
    parameter = SearchParameter("active", "token", "active")
    assert Condition(parameter, None, ("true",)).matches({"active": True})
    assert Condition(parameter, None, ("false",)).matches({"active": False})
    assert not Condition(parameter, None, ("true",)).matches({"active": False})
    assert Condition(parameter, "missing", ("false",)).matches({"active": False})


def test_token_id() -> None:
    assert matches("_id=1234,t1", task())
    assert not matches("_id=1234,5678", task())


def test_token_not() -> None:
    assert matches("status:not=draft", task(status="ready"))
    assert not matches("status:not=draft", task(status="draft"))


def test_token_not_negates_the_whole_comma_list() -> None:
    assert not matches("status:not=draft,ready", task(status="ready"))
    assert not matches("status:not=draft,ready", task(status="draft"))
    assert matches("status:not=draft,ready", task(status="completed"))


def test_token_not_matches_an_absent_element() -> None:
    assert matches("business-status:not=x", task())
    assert matches("code:not=x", task(code={"text": "no codings"}))


def test_token_not_on_a_list_needs_no_item_to_match() -> None:
    resource = task(identifier=[{"value": "1"}, {"value": "2"}])
    assert not matches("identifier:not=2", resource)
    assert matches("identifier:not=3", resource)


def test_token_missing() -> None:
    assert matches("business-status:missing=true", task())
    assert not matches("business-status:missing=false", task())
    assert matches("business-status:missing=false", task(businessStatus={"text": "x"}))
    assert matches("identifier:missing=true", task(identifier=[]))
    assert matches("code:missing=true", task(code={}))


def test_token_text() -> None:
    resource = task(
        code={
            "coding": [{"system": LOINC, "code": "1", "display": "Radiología de tórax"}],
            "text": "Chest X-ray",
        }
    )
    assert matches("code:text=chest", resource)
    assert matches("code:text=CHEST X", resource)
    assert matches("code:text=ray", resource)  # a word of the text
    assert matches("code:text=torax", resource)  # accent-insensitive, on Coding.display
    assert matches("code:text=radiologia de", resource)
    assert not matches("code:text=est", resource)  # not inside a word
    assert not matches("code:text=1", resource)  # codes are not text
    assert not matches("status:text=ready", task(status="ready"))


def test_token_text_on_identifier_type() -> None:
    resource = task(identifier=[{"type": {"text": "Medical record"}, "value": "7"}])
    assert matches("identifier:text=medical", resource)
    assert not matches("identifier:text=7", resource)


# --- reference --------------------------------------------------------------------------------


def owner(reference: str) -> dict[str, Any]:
    return task(owner={"reference": reference})


@pytest.mark.parametrize(
    ("search", "reference", "expected"),
    [
        ("Organization/123", "Organization/123", True),
        ("Organization/123", "Organization/1234", False),
        ("Organization/123", "Practitioner/123", False),
        ("Organization/123", "https://fhir.example/r4/Organization/123", True),
        ("https://fhir.example/r4/Organization/123", "Organization/123", True),
        (
            "https://fhir.example/r4/Organization/123",
            "https://fhir.example/r4/Organization/123",
            True,
        ),
        (
            "https://fhir.example/r4/Organization/123",
            "HTTPS://FHIR.example/r4/Organization/123",
            True,
        ),
        (
            "https://fhir.example/r4/Organization/123",
            "https://fhir.example/r4//Organization/123",
            True,
        ),
        (
            "https://fhir.example/r4/Organization/123",
            "https://other.example/r4/Organization/123",
            False,
        ),
        (
            "https://fhir.example/r4/Organization/123",
            "https://fhir.example/r4/Organization/12",
            False,
        ),
        ("Organization/123", "Organization/123/_history/4", True),
        ("Organization/123/_history/2", "Organization/123/_history/4", True),
        ("https://fhir.example/Organization/123/_history/2", "Organization/123", True),
        ("123", "Organization/123", True),
        ("123", "Practitioner/123", True),
        ("123", "https://fhir.example/Organization/123", True),
        ("123", "Organization/1234", False),
        ("urn:uuid:6a0e", "urn:uuid:6a0e", True),
        ("urn:uuid:6a0e", "urn:uuid:6a0f", False),
    ],
)
def test_reference_forms(search: str, reference: str, expected: bool) -> None:
    assert matches(f"owner={search}", owner(reference)) is expected


def test_reference_comma_or() -> None:
    assert matches("owner=Organization/1,Organization/2", owner("Organization/2"))
    assert not matches("owner=Organization/1,Organization/2", owner("Organization/3"))


def test_reference_type_modifier() -> None:
    assert matches("owner:Organization=123", owner("Organization/123"))
    assert matches("owner:Organization=Organization/123", owner("Organization/123"))
    assert matches("owner:Organization=123", owner("http://h/fhir/Organization/123"))
    assert not matches("owner:Organization=123", owner("Practitioner/123"))


def test_reference_identifier_modifier() -> None:
    resource = task(owner={"identifier": {"system": "urn:npi", "value": "42"}, "display": "Acme"})
    assert matches("owner:identifier=urn:npi|42", resource)
    assert matches("owner:identifier=42", resource)
    assert matches("owner:identifier=urn:other|1,urn:npi|42", resource)
    assert not matches("owner:identifier=urn:npi|43", resource)
    assert not matches("owner:identifier=|42", resource)
    assert not matches("owner=42", resource)  # identifier-only references have no Type/id
    assert not matches("owner:identifier=urn:npi|42", owner("Organization/42"))


def test_reference_identifier_alongside_a_literal_reference() -> None:
    resource = task(
        owner={"reference": "Organization/1", "identifier": {"system": "urn:npi", "value": "42"}}
    )
    assert matches("owner:identifier=urn:npi|42", resource)
    assert matches("owner=Organization/1", resource)


def test_reference_missing() -> None:
    assert matches("requester:missing=true", task())
    assert not matches("requester:missing=true", task(requester={"reference": "Patient/1"}))
    assert matches("requester:missing=false", task(requester={"identifier": {"value": "1"}}))


def test_reference_as_a_plain_string_element() -> None:
    parameter = SearchParameter("focus", "reference", "focus")
    assert Condition(parameter, None, ("Task/1",)).matches({"focus": "Task/1"})


def test_reference_with_target_types_ignores_references_of_other_types() -> None:
    for_group = task(for_={"reference": "Group/1"})
    for_patient = task(for_={"reference": "http://h/fhir/Patient/1"})
    assert matches("subject=1", for_group)
    assert matches("subject=Group/1", for_group)
    assert not matches("patient=1", for_group)
    assert matches("patient:missing=true", for_group)
    assert matches("patient=1", for_patient)
    assert matches("patient=Patient/1", for_patient)
    assert not matches("patient:missing=true", for_patient)


def test_reference_type_from_reference_type_element() -> None:
    by_identifier = task(for_={"type": "Group", "identifier": {"system": "urn:g", "value": "1"}})
    assert not matches("patient:identifier=urn:g|1", by_identifier)
    assert matches("subject:identifier=urn:g|1", by_identifier)
    as_url = task(
        for_={
            "type": "http://hl7.org/fhir/StructureDefinition/Patient",
            "identifier": {"value": "1"},
        }
    )
    assert matches("patient:identifier=1", as_url)


def test_reference_to_a_contained_resource_is_not_an_id() -> None:
    assert not matches("focus=c1", task(focus={"reference": "#c1"}))
    rejects("focus=#c1", "Malformed reference", "'focus'")


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("Organization/123", "Organization/123"),
        ("Organization/123/_history/7", "Organization/123"),
        ("https://fhir.example/r4/Organization/123", "Organization/123"),
        ("http://fhir.example/Organization/123/_history/2", "Organization/123"),
        ("https://fhir.example/r4/Organization/123/", "Organization/123"),
        (" Organization/123 ", "Organization/123"),
        ("https://fhir.example/Patient/1/Organization/2", "Organization/2"),
        ("123", "123"),
        ("urn:uuid:6a0e", "urn:uuid:6a0e"),
        ("#c1", "#c1"),
        ("http://example.org/not/a-rest-url", "http://example.org/not/a-rest-url"),
    ],
)
def test_normalize_reference(reference: str, expected: str) -> None:
    assert normalize_reference(reference) == expected


# --- date -------------------------------------------------------------------------------------


def updated(instant: str) -> dict[str, Any]:
    return task(meta={"lastUpdated": instant})


@pytest.mark.parametrize(
    ("search", "inside", "outside"),
    [
        (
            "2024",
            ["2024-01-01T00:00:00Z", "2024-12-31T23:59:59.999Z", "2024-06"],
            ["2023-12-31T23:59:59.999Z", "2025-01-01T00:00:00Z", "2024-12-31T23:00:00-01:00"],
        ),
        (
            "2024-02",
            ["2024-02-01T00:00:00Z", "2024-02-29T23:59:59Z", "2024-02-29"],
            ["2024-01-31T23:59:59Z", "2024-03-01T00:00:00Z", "2024"],
        ),
        (
            "2024-12",
            ["2024-12-31T23:59:59.999999Z"],
            ["2025-01-01T00:00:00Z", "2024-11-30T23:59:59Z"],
        ),
        (
            "2024-05-03",
            ["2024-05-03T00:00:00Z", "2024-05-03T23:59:59.999Z", "2024-05-03T01:00:00+01:00"],
            [
                "2024-05-02T23:59:59Z",
                "2024-05-04T00:00:00Z",
                "2024-05-03T23:30:00-01:00",
                "2024-05",
            ],
        ),
        (
            "2024-05-03T10:00",
            ["2024-05-03T10:00:00Z", "2024-05-03T10:00:59.999Z", "2024-05-03T12:00:30+02:00"],
            ["2024-05-03T09:59:59.999Z", "2024-05-03T10:01:00Z", "2024-05-03"],
        ),
        (
            "2024-05-03T10:00:05",
            ["2024-05-03T10:00:05Z", "2024-05-03T10:00:05.999Z"],
            ["2024-05-03T10:00:04.999Z", "2024-05-03T10:00:06Z", "2024-05-03T10:00"],
        ),
        (
            "2024-05-03T10:00:05.5",
            ["2024-05-03T10:00:05.5Z", "2024-05-03T10:00:05.599Z"],
            ["2024-05-03T10:00:05.499Z", "2024-05-03T10:00:05.6Z", "2024-05-03T10:00:05Z"],
        ),
        (
            "2024-05-03T10:00:00+02:00",
            ["2024-05-03T08:00:00Z", "2024-05-03T08:00:00.5Z", "2024-05-03T03:00:00-05:00"],
            ["2024-05-03T10:00:00Z"],
        ),
        (
            "2024-05-03T10:00:00Z",
            ["2024-05-03T10:00:00+00:00", "2024-05-03T10:00:00"],
            ["2024-05-03T10:00:00+01:00"],
        ),
    ],
)
def test_date_eq_partial_dates_are_ranges(
    search: str, inside: list[str], outside: list[str]
) -> None:
    for value in inside:
        assert matches(f"_lastUpdated={search}", updated(value)), value
        assert matches(f"_lastUpdated=eq{search}", updated(value)), value
        assert not matches(f"_lastUpdated=ne{search}", updated(value)), value
    for value in outside:
        assert not matches(f"_lastUpdated={search}", updated(value)), value
        assert matches(f"_lastUpdated=ne{search}", updated(value)), value


def test_date_without_zone_is_utc() -> None:
    assert parse_date_range("2024-05-03") == DateRange(
        datetime(2024, 5, 3, tzinfo=UTC), datetime(2024, 5, 4, tzinfo=UTC)
    )
    assert parse_date_range("2024-05-03T10:00:00").low == datetime(2024, 5, 3, 10, tzinfo=UTC)


def test_date_ranges_follow_precision() -> None:
    assert parse_date_range("2024-02").high == datetime(2024, 3, 1, tzinfo=UTC)
    assert parse_date_range("2024-12").high == datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_date_range("2024").high == datetime(2025, 1, 1, tzinfo=UTC)
    fraction = parse_date_range("2024-05-03T10:00:05.25-03:00")
    assert fraction.low == datetime(2024, 5, 3, 13, 0, 5, 250000, tzinfo=UTC)
    assert fraction.high - fraction.low == timedelta(milliseconds=10)
    nanos = parse_date_range("2024-05-03T10:00:05.123456789Z")
    assert nanos.low.microsecond == 123456
    assert nanos.high - nanos.low == timedelta(microseconds=1)


def test_date_extremes_do_not_overflow() -> None:
    assert parse_date_range("9999").high == datetime.max.replace(tzinfo=UTC)
    assert parse_date_range("9999-12-31T23:59:59-05:00").high == datetime.max.replace(tzinfo=UTC)
    assert parse_date_range("0001-01-01T00:00:00+05:00").low == datetime.min.replace(tzinfo=UTC)
    assert matches("_lastUpdated=ap9999", updated("9999-06-01T00:00:00Z"))
    assert matches("_lastUpdated=ap0001", updated("0001-06-01T00:00:00Z"))
    assert matches("_lastUpdated=gt9998", updated("9999-12-31T23:59:59Z"))


def test_space_is_read_as_plus_in_a_zone() -> None:
    assert matches("_lastUpdated=2024-05-03T10:00:00 02:00", updated("2024-05-03T08:00:00Z"))


@pytest.mark.parametrize(
    ("search", "value", "expected"),
    [
        # gt: the resource range reaches above the search range
        ("gt2024-05-03", "2024-05-04T00:00:00Z", True),
        ("gt2024-05-03", "2024-05-03T23:59:59Z", False),
        ("gt2024-05-03", "2024-05", True),  # May extends past the 3rd
        ("gt2024-05-03T10:00:00Z", "2024-05-03T10:00:01Z", True),
        ("gt2024-05-03T10:00:00Z", "2024-05-03T10:00:00.001Z", False),  # inside that second
        ("gt2024-05-03T10:00:00.000Z", "2024-05-03T10:00:00.001Z", True),
        ("gt2024-05-03T10:00:00Z", "2024-05-03T10:00:00Z", False),
        # lt: the resource range reaches below the search range
        ("lt2024-05-03", "2024-05-02T23:59:59Z", True),
        ("lt2024-05-03", "2024-05-03T00:00:00Z", False),
        ("lt2024-05-03", "2024-05", True),
        # ge / le: as gt / lt, or eq
        ("ge2024-05-03", "2024-05-03T00:00:00Z", True),
        ("ge2024-05-03", "2024-05-02T23:59:59Z", False),
        ("ge2024-05-03", "2024-05-10T00:00:00Z", True),
        ("le2024-05-03", "2024-05-03T23:59:59Z", True),
        ("le2024-05-03", "2024-05-04T00:00:00Z", False),
        ("le2024-05-03", "2024-05-01T00:00:00Z", True),
        # sa / eb: wholly after / before, no overlap
        ("sa2024-05-03", "2024-05-04T00:00:00Z", True),
        ("sa2024-05-03", "2024-05", False),
        ("sa2024-05-03", "2024-05-03T12:00:00Z", False),
        ("eb2024-05-03", "2024-05-02T23:59:59.999Z", True),
        ("eb2024-05-03", "2024-05", False),
        ("eb2024-05-03", "2024-05-03T00:00:00Z", False),
        # ne
        ("ne2024-05-03", "2024-05-03T12:00:00Z", False),
        ("ne2024-05-03", "2024-05", True),
        # zones on the search value
        ("gt2024-05-03T10:00:00+02:00", "2024-05-03T08:30:00Z", True),
        ("lt2024-05-03T10:00:00-02:00", "2024-05-03T11:00:00Z", True),
        ("lt2024-05-03T10:00:00-02:00", "2024-05-03T12:00:00Z", False),
    ],
)
def test_date_prefixes(search: str, value: str, expected: bool) -> None:
    assert matches(f"_lastUpdated={search}", updated(value)) is expected


def test_date_hrex_polling_example() -> None:
    query = "owner=Organization/123&_lastupdated=gt2021-05-03T17:23:18.1732-04:00"
    assert matches(
        query,
        task(owner={"reference": "Organization/123"}, meta={"lastUpdated": "2021-05-03T21:23:19Z"}),
    )
    assert not matches(
        query,
        task(
            owner={"reference": "Organization/123"},
            meta={"lastUpdated": "2021-05-03T21:23:18.1732Z"},
        ),
    )
    # A coarser resource value counts as a range: this second reaches past the search instant.
    assert matches(
        query,
        task(owner={"reference": "Organization/123"}, meta={"lastUpdated": "2021-05-03T21:23:18Z"}),
    )


def test_date_ap_allows_ten_percent_of_the_distance_to_now() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    # 2014-01-01 is ~3652 days before now: a margin of ~365 days.
    assert matches("_lastUpdated=ap2014-01-01", updated("2014-12-01T00:00:00Z"), now=now)
    assert matches("_lastUpdated=ap2014-01-01", updated("2013-02-01T00:00:00Z"), now=now)
    assert not matches("_lastUpdated=ap2014-01-01", updated("2015-02-01T00:00:00Z"), now=now)


def test_date_ap_allows_at_least_a_day() -> None:
    now = datetime(2024, 5, 3, 12, tzinfo=UTC)
    assert matches("_lastUpdated=ap2024-05-03T12:00", updated("2024-05-04T11:00:00Z"), now=now)
    assert matches("_lastUpdated=ap2024-05-03T12:00", updated("2024-05-02T13:00:00Z"), now=now)
    assert not matches("_lastUpdated=ap2024-05-03T12:00", updated("2024-05-04T13:00:00Z"), now=now)


def test_date_ap_defaults_to_the_current_time() -> None:
    today = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert matches(f"_lastUpdated=ap{today[:10]}", updated(today))


def test_date_comma_or() -> None:
    query = "authored-on=lt2020,gt2030"
    assert matches(query, task(authoredOn="2019-06-01"))
    assert matches(query, task(authoredOn="2031-06-01"))
    assert not matches(query, task(authoredOn="2025-06-01"))


def test_date_on_period() -> None:
    open_ended = task(executionPeriod={"start": "2024-05-03T10:00:00Z"})
    assert matches("period=gt2030", open_ended)
    assert not matches("period=lt2024", open_ended)
    assert not matches("period=2024-05-03", open_ended)
    closed = task(executionPeriod={"start": "2024-05-03T10:00:00Z", "end": "2024-05-03T11:00:00Z"})
    assert matches("period=2024-05-03", closed)
    assert not matches("period=gt2024-05-03", closed)
    assert matches("period=lt2024-05-03T10:30", closed)
    no_start = task(executionPeriod={"end": "2024-01-01"})
    assert matches("period=lt1900", no_start)
    assert matches("period:missing=true", task())


def test_date_authored_on_and_modified() -> None:
    resource = task(authoredOn="2024-05-03T10:00:00Z", lastModified="2024-05-04T10:00:00Z")
    assert matches("authored-on=2024-05-03&modified=2024-05-04", resource)
    assert not matches("modified=2024-05-03", resource)


def test_date_missing() -> None:
    assert matches("_lastUpdated:missing=true", task())
    assert matches("_lastUpdated:missing=false", updated("2024-01-01T00:00:00Z"))


def test_invalid_resource_dates_never_match_and_never_raise() -> None:
    resource = updated("yesterday")
    assert not matches("_lastUpdated=ge1900", resource)
    assert not matches("_lastUpdated=ne2024", resource)
    assert matches("_lastUpdated:missing=false", resource)
    assert not matches("period=ge1900", task(executionPeriod={"start": "soon"}))


# --- string and uri ---------------------------------------------------------------------------

NAME = SearchParameter("name", "string", "name")
PERSON = {
    "name": [
        {"use": "official", "family": "Müller-Lüdenscheidt", "given": ["José", "Maria"]},
        {"text": "Joe"},
    ]
}


def test_string_starts_with_ignoring_case_and_accents() -> None:
    assert Condition(NAME, None, ("mull",)).matches(PERSON)
    assert Condition(NAME, None, ("JOSE",)).matches(PERSON)
    assert Condition(NAME, None, ("ma",)).matches(PERSON)
    assert not Condition(NAME, None, ("ludenscheidt",)).matches(PERSON)
    assert not Condition(NAME, None, ("official",)).matches(PERSON)  # `use` is not text
    assert Condition(NAME, None, ("xyz", "jo")).matches(PERSON)


def test_string_exact() -> None:
    assert Condition(NAME, "exact", ("José",)).matches(PERSON)
    assert not Condition(NAME, "exact", ("Jose",)).matches(PERSON)
    assert not Condition(NAME, "exact", ("jos",)).matches(PERSON)


def test_string_contains() -> None:
    assert Condition(NAME, "contains", ("LUDEN",)).matches(PERSON)
    assert not Condition(NAME, "contains", ("xyz",)).matches(PERSON)


def test_string_missing() -> None:
    assert Condition(NAME, "missing", ("true",)).matches({})
    assert Condition(NAME, "missing", ("false",)).matches(PERSON)


def test_string_through_query_on_subscription() -> None:
    subscription = {
        "resourceType": "Subscription",
        "criteria": "http://hl7.org/fhir/us/davinci-hrex/SubscriptionTopic/Task",
        "channel": {"type": "rest-hook", "endpoint": "https://client.example/hooks/1"},
    }
    assert parse_query("Subscription", "criteria=HTTP://hl7.org/fhir/us/davinci").matches(
        subscription
    )
    assert parse_query(
        "Subscription", "topic=http://hl7.org/fhir/us/davinci-hrex/SubscriptionTopic/Task"
    ).matches(subscription)
    assert parse_query(
        "Subscription", "type=rest-hook&url:below=https://client.example/hooks"
    ).matches(subscription)
    assert not parse_query("Subscription", "url=https://client.example/hooks").matches(subscription)


def test_uri_exact_below_above() -> None:
    resource = task(
        meta={"profile": ["http://hl7.org/fhir/us/davinci-hrex/StructureDefinition/task"]}
    )
    profile = "http://hl7.org/fhir/us/davinci-hrex/StructureDefinition/task"
    assert matches(f"_profile={profile}", resource)
    assert not matches(f"_profile={profile.upper()}", resource)
    assert not matches("_profile=http://hl7.org/fhir/us/davinci-hrex", resource)
    assert matches("_profile:below=http://hl7.org/fhir/us/davinci-hrex", resource)
    assert matches("_profile:below=http://hl7.org/fhir/us/davinci-hrex/", resource)
    assert matches(f"_profile:below={profile}", resource)
    assert not matches("_profile:below=http://hl7.org/fhir/us/davinci", resource)
    assert matches(f"_profile:above={profile}/v2/extra", resource)
    assert matches(f"_profile:above={profile}", resource)
    assert not matches("_profile:above=http://hl7.org/fhir", resource)
    assert matches("_profile:missing=true", task())
    assert matches("_source:missing=true", resource)


# --- the HRex topic's own criteria --------------------------------------------------------------


def test_hrex_topic_query_criteria() -> None:
    criteria = parse_query("Task", "status:not=draft&intent=order")
    assert criteria.matches(task(status="requested"))
    assert not criteria.matches(task(status="draft"))
    assert not criteria.matches(task(status="requested", intent="plan"))
    assert not criteria.matches(task(status="requested", intent=None))


# --- properties -------------------------------------------------------------------------------

statuses = st.sampled_from(TASK_STATUSES)
codes = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-.0123456789", min_size=1, max_size=12)
ids = st.from_regex(r"[A-Za-z0-9\-.]{1,20}", fullmatch=True)


@given(first=statuses | codes, second=statuses | codes, actual=statuses | codes)
def test_comma_list_is_the_or_of_its_values(first: str, second: str, actual: str) -> None:
    resource = task(status=actual)
    either = matches(f"status={first},{second}", resource)
    assert either == (matches(f"status={first}", resource) or matches(f"status={second}", resource))


@given(values=st.lists(statuses, min_size=1, max_size=4), actual=st.none() | statuses)
def test_not_is_the_negation_of_the_comma_list(values: list[str], actual: str | None) -> None:
    resource = task(status=actual)
    listed = ",".join(values)
    assert matches(f"status:not={listed}", resource) == (not matches(f"status={listed}", resource))


@given(organization=ids, status=statuses)
def test_filter_forms_agree(organization: str, status: str) -> None:
    forms = [
        f"Task?owner=Organization/{organization}&status={status}",
        f"Task.owner=Organization/{organization}&Task.status={status}",
        f"owner=Organization/{organization}&status={status}",
    ]
    parsed = [parse_filter("Task", form) for form in forms]
    assert parsed[0] == parsed[1] == parsed[2]
    resource = task(owner={"reference": f"Organization/{organization}"}, status=status)
    assert all(criteria.matches(resource) for criteria in parsed)


def _date_text(moment: datetime, precision: int) -> str:
    forms = ["%Y", "%Y-%m", "%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
    return moment.strftime(forms[precision])


@given(
    search=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1)),
    value=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1)),
    search_precision=st.integers(0, 4),
    value_precision=st.integers(0, 4),
)
def test_ge_and_le_are_gt_or_eq_and_lt_or_eq(
    search: datetime, value: datetime, search_precision: int, value_precision: int
) -> None:
    resource = updated(_date_text(value, value_precision))
    text = _date_text(search, search_precision)

    def hit(prefix: str) -> bool:
        return matches(f"_lastUpdated={prefix}{text}", resource)

    assert hit("ge") == (hit("gt") or hit("eq"))
    assert hit("le") == (hit("lt") or hit("eq"))
    assert hit("ne") != hit("eq")
    assert not (hit("sa") and hit("eb"))
    if hit("sa"):
        assert hit("gt") and not hit("lt")
    if hit("eb"):
        assert hit("lt") and not hit("gt")
