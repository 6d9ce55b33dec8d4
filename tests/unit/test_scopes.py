"""SMART system scopes, tenancy rules and the audit trail's reading of request paths."""

from __future__ import annotations

import pytest

from herald.core.errors import Forbidden
from herald.core.scopes import InvalidScope, format_scopes, parse_scope, parse_scopes
from herald.core.subscriptions import EndpointPolicy, parse_subscription
from herald.core.tenancy import check_pinned, visible
from herald.ingest.auth.audit import interaction
from herald.runtime.packaged import load_topics
from herald.runtime.settings import Settings
from tests.support.fhir import backport_subscription

BASE = "https://herald.example/fhir"


@pytest.mark.parametrize(
    ("scope", "letters"),
    [
        ("system/Task.rs", "rs"),
        ("system/Task.read", "rs"),
        ("system/Task.write", "cud"),
        ("system/Task.*", "cruds"),
        ("system/Task.cruds", "cruds"),
        ("system/Task.d", "d"),
    ],
)
def test_v1_and_v2_forms_grant_the_same_permissions(scope: str, letters: str) -> None:
    assert parse_scope(scope) == {("Task", letter) for letter in letters}


def test_a_wildcard_type_covers_every_served_type() -> None:
    assert parse_scope("system/*.s") == {("Task", "s"), ("Subscription", "s")}


@pytest.mark.parametrize(
    "scope",
    [
        "user/Task.rs",
        "patient/Task.read",
        "system/Patient.rs",
        "system/Task.sr",
        "system/Task.x",
        "system/Task.rr",
        "system/Task.rs?status=done",
        "openid",
        "system/Task.",
    ],
)
def test_scopes_herald_cannot_grant_are_refused(scope: str) -> None:
    with pytest.raises(InvalidScope):
        parse_scope(scope)


def test_unknown_scopes_grant_nothing_when_asked_for_in_a_token_request() -> None:
    asked = parse_scopes("openid launch/patient system/Task.read", strict=False)
    assert format_scopes(asked & parse_scopes("system/*.cruds", strict=True)) == "system/Task.rs"


def test_tenants_see_tasks_by_owner_or_requester() -> None:
    task = {"owner": {"reference": f"{BASE}/Organization/a"}, "requester": {"reference": "x"}}
    assert visible(task, {"Organization/a"}, BASE)
    assert visible({"requester": {"reference": "Organization/b"}}, {"Organization/b"}, BASE)
    assert not visible(task, {"Organization/b"}, BASE)
    assert not visible(
        {"owner": {"reference": "https://other/fhir/Organization/a"}}, {"Organization/a"}, BASE
    )
    assert visible(task, None, BASE)


@pytest.mark.parametrize(
    ("filters", "allowed"),
    [
        (["Task?owner=Organization/a"], True),
        (["Task?requester=Organization/a,Organization/b&status=ready"], True),
        (["Task?status=ready", "Task?owner=Organization/b"], True),
        (["Task?owner=Organization/a,Organization/c"], False),
        (["Task?status=ready"], False),
        ([], False),
    ],
)
def test_a_tenants_subscription_pins_its_organizations(filters: list[str], allowed: bool) -> None:
    resource = backport_subscription("https://example.org/hook", *filters)
    subscription = parse_subscription(resource, load_topics(), EndpointPolicy())
    organizations = {"Organization/a", "Organization/b"}
    if allowed:
        check_pinned(subscription, organizations, BASE)
    else:
        with pytest.raises(Forbidden, match="owner or requester"):
            check_pinned(subscription, organizations, BASE)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/fhir/Task", ("create", "Task", None)),
        ("GET", "/fhir/Task", ("search", "Task", None)),
        ("POST", "/fhir/Task/_search", ("search", "Task", None)),
        ("GET", "/fhir/Task/t1", ("read", "Task", "t1")),
        ("PUT", "/fhir/Task/t1", ("update", "Task", "t1")),
        ("DELETE", "/fhir/Task/t1", ("delete", "Task", "t1")),
        ("GET", "/fhir/Task/t1/_history/2", ("vread", "Task", "t1")),
        ("GET", "/fhir/Task/t1/_history", ("history-instance", "Task", "t1")),
        ("GET", "/fhir/Task/_history", ("history-type", "Task", None)),
        ("PUT", "/fhir/Task", ("update", "Task", None)),
        ("PATCH", "/fhir/Task", ("patch", "Task", None)),
        ("DELETE", "/fhir/Task", ("delete", "Task", None)),
        ("GET", "/fhir/Subscription/s1/$events", ("operation:events", "Subscription", "s1")),
        ("POST", "/fhir/Subscription/$status", ("operation:status", "Subscription", None)),
        ("GET", "/fhir/metadata", ("capabilities", None, None)),
        ("POST", "/fhir/auth/token", ("token", None, None)),
        ("GET", "/fhir/.well-known/smart-configuration", ("smart-configuration", None, None)),
        ("POST", "/canvas/integration-tasks", ("canvas-snapshot", "Task", None)),
    ],
)
def test_the_audit_trail_names_each_interaction(
    method: str, path: str, expected: tuple[str, str | None, str | None]
) -> None:
    assert interaction(method, path) == expected


@pytest.mark.parametrize(
    ("host", "auth", "role", "mode"),
    [
        ("127.0.0.1", None, "run", "none"),
        ("::1", None, "run", "none"),
        ("localhost", None, "run", "none"),
        ("0.0.0.0", None, "run", "smart"),
        ("127.0.0.1", None, "ingest", "smart"),
        ("0.0.0.0", "none", "run", "none"),
        ("127.0.0.1", "smart", "run", "smart"),
    ],
)
def test_authentication_is_off_by_default_only_for_run_on_loopback(
    host: str, auth: str | None, role: str, mode: str
) -> None:
    settings = Settings(host=host, auth=auth)
    assert settings.auth_mode(role) == mode
