"""`herald config`: the effective settings, secrets masked, with where each came from."""

from __future__ import annotations

import argparse

from herald.cli.common import add_command
from herald.cli.settings_help import env_name, load_settings, shown, source
from herald.runtime.settings import DEFAULT_PORTS, Settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `herald config`."""
    add_command(
        commands,
        "config",
        "show the effective settings (secrets masked) and where each came from",
    ).set_defaults(handler=_config)


def _derived(settings: Settings) -> dict[str, str]:
    """What an unset setting amounts to, for those whose default depends on others."""
    policy = settings.endpoint_policy
    mode = "embedded" if settings.embedded else "distributed"
    return {
        "kafka_bootstrap": "(unset: embedded mode, in-process bus)",
        "base_url": f"{settings.fhir_base} (from HOST and PORT)",
        "health_port": f"matcher {DEFAULT_PORTS['matcher']}, "
        f"dispatcher {DEFAULT_PORTS['dispatcher']}",
        "allow_http_endpoints": f"{str(policy.allow_http).lower()} ({mode} mode)",
        "allow_private_endpoints": f"{str(policy.allow_private).lower()} ({mode} mode)",
    }


def config_lines(settings: Settings) -> list[str]:
    """One line per setting: variable, effective value, source."""
    derived = _derived(settings)
    rows = []
    for name in Settings.model_fields:
        value = getattr(settings, name)
        text = derived[name] if value is None and name in derived else shown(name, value)
        rows.append((env_name(name), text, source(name)))
    width = max(len(r[0]) for r in rows)
    return [f"{n:<{width}}  {v}  [{s}]" for n, v, s in rows]


def _config(_: argparse.Namespace) -> int:
    for line in config_lines(load_settings()):
        print(line)
    return 0
