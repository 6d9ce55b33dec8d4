"""The command line: one-line settings errors, help generated from the settings, `config`."""

from __future__ import annotations

import pytest

from herald.cli import main, parser
from herald.cli.settings_help import fields_read_by
from herald.runtime.settings import DEFAULT_PORTS, Settings


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("HERALD_PORT", "abc", "an integer from 0 to 65535"),
        ("HERALD_PORT", "70000", "an integer from 0 to 65535"),
        ("HERALD_RETRY_DELAYS", "abc", "comma-separated non-negative numbers"),
        ("HERALD_DATABASE_URL", "mysql://u@h/db", "sqlite:///PATH or postgresql://"),
        ("HERALD_LOG_FORMAT", "xml", "one of json, text"),
        ("HERALD_LOG_LEVEL", "loud", "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("HERALD_ALLOW_HTTP_ENDPOINTS", "maybe", "true or false, or unset"),
        ("HERALD_CIRCUIT_COOLDOWN", "0", "a number above 0"),
        ("HERALD_INSTANCE_ID", "pod 1", "1 to 249 letters, digits, '.', '_' or '-'"),
        ("HERALD_KAFKA_HEARTBEAT_INTERVAL", "6", "a number above 0"),
    ],
)
def test_an_invalid_setting_is_one_line_with_name_value_and_what_is_allowed(
    variable: str,
    value: str,
    allowed: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, value)
    code, out, err = _run(["run"], capsys)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"herald: {variable}={value!r} is not valid")
    assert f"allowed: {allowed}" in lines[0]
    assert "Traceback" not in err


def test_heartbeats_must_come_more_often_than_the_session_timeout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HERALD_KAFKA_SESSION_TIMEOUT", "10")
    monkeypatch.setenv("HERALD_KAFKA_HEARTBEAT_INTERVAL", "10")
    code, _, err = _run(["matcher"], capsys)
    assert code == 2
    assert "must be below the session timeout (10.0 s)" in err
    monkeypatch.setenv("HERALD_KAFKA_HEARTBEAT_INTERVAL", "3")
    assert Settings().kafka_heartbeat_interval == 3


def test_every_invalid_setting_gets_its_line_and_secrets_stay_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HERALD_DATABASE_URL", "mysql://herald:hunter2@db/herald")
    monkeypatch.setenv("HERALD_KAFKA_PARTITIONS", "none")
    code, _, err = _run(["config"], capsys)
    assert code == 2
    assert len(err.splitlines()) == 2
    assert "hunter2" not in err
    assert "mysql://herald:***@db/herald" in err


def test_enums_accept_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_LOG_FORMAT", "TEXT")
    monkeypatch.setenv("HERALD_LOG_LEVEL", "debug")
    settings = Settings()
    assert (settings.log_format, settings.log_level) == ("text", "DEBUG")


@pytest.mark.parametrize("command", ["run", "ingest", "matcher", "dispatcher", "migrate"])
def test_each_role_help_lists_the_settings_it_reads(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run([command, "--help"], capsys)
    assert code == 0
    read = fields_read_by(command)
    assert read
    for name, _info in read:
        assert f"HERALD_{name.upper()} (default:" in out
    assert ("HERALD_PORT (" in out) == (command in ("run", "ingest"))
    # run and ingest serve /metrics, /healthz, /readyz on it when authentication is on.
    assert ("HERALD_HEALTH_PORT (" in out) == (command != "migrate")


def test_every_setting_is_read_by_some_command() -> None:
    commands = next(a.choices for a in parser()._actions if a.dest == "command")
    assert isinstance(commands, dict)
    read = {name for command in commands for name, _ in fields_read_by(command)}
    assert read == set(Settings.model_fields)


def test_every_command_and_subcommand_has_a_help_with_its_settings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["subscriptions", "list"], ["subscriptions", "show"], ["config"], ["receive"]):
        code, out, _ = _run([*argv, "--help"], capsys)
        assert code == 0
        assert "HERALD_" in out or "reads no HERALD_* settings" in out


def test_default_ports_of_the_roles_that_run_together_are_distinct() -> None:
    settings = Settings()
    ports = [
        settings.port,
        settings.health_port_of("matcher"),
        settings.health_port_of("dispatcher"),
    ]
    assert len(set(ports)) == 3
    assert DEFAULT_PORTS["run"] == DEFAULT_PORTS["ingest"] == settings.port
    assert Settings(health_port=9200).health_port_of("matcher") == 9200


def test_config_shows_values_and_sources_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HERALD_CANVAS_SECRET", "very-secret")
    monkeypatch.setenv("HERALD_DATABASE_URL", "postgresql://herald:pw@db:5432/herald")
    code, out, _ = _run(["config"], capsys)
    assert code == 0
    assert "very-secret" not in out and ":pw@" not in out
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert set(lines) == {f"HERALD_{n.upper()}" for n in Settings.model_fields}
    assert lines["HERALD_CANVAS_SECRET"].split()[1:] == ["***", "[environment]"]
    assert "postgresql://herald:***@db:5432/herald" in lines["HERALD_DATABASE_URL"]
    assert lines["HERALD_PORT"].split()[1:] == ["8080", "[default]"]
    assert "distributed" not in lines["HERALD_ALLOW_HTTP_ENDPOINTS"]


def test_roles_other_than_run_need_kafka(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HERALD_KAFKA_BOOTSTRAP", raising=False)
    code, _, err = _run(["matcher"], capsys)
    assert code == 2
    assert err.strip() == (
        "herald: 'herald matcher' needs HERALD_KAFKA_BOOTSTRAP "
        "(without Kafka, use 'herald run' alone)"
    )
